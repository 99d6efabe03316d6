"""The expanded test set from the Data tab, in a real browser against a real server: build it
(signed, scored with the production model), then ask for the same name again and read the
one-line refusal beside the button."""
from __future__ import annotations

import pytest

from conftest import copy_session
from core.store import Store
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


def test_the_data_tab_builds_and_scores_an_expanded_test_set(trained_demo_session, tmp_path):
    session = copy_session(trained_demo_session, tmp_path / "session")
    with Store.open(session) as store:
        model = store.runs(kind="train").id.iloc[0]
        store.record_promotion(model, action="override", actor="setup", reason="a production model to score with")
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Data")
        page.locator("#em-expand-groups textarea, #em-expand-groups input").first.fill("1")
        page.locator("#em-expand-per-group textarea, #em-expand-per-group input").first.fill("2")
        page.locator("#em-expand-build").click()
        result = page.locator("#em-expand-result")
        result.get_by_text("clip set 'test_expanded'").wait_for(timeout=120000)
        text = result.inner_text()
        assert "12 clips from 6 source groups, none in train or val" in text
        assert f"accuracy of run {model}" in text and "Wilson [" in text
        result.scroll_into_view_if_needed()
        screenshot(page, "expanded_test_built", full_page=False)

        page.locator("#em-expand-build").click()  # the same name again, without "replace"
        result.get_by_text("Set not built: clip set 'test_expanded' exists").wait_for(timeout=30000)
        screenshot(page, "expanded_test_refused", full_page=False)
        assert error_badges(page) == 0 and real_errors(errors) == []

    with Store.open(session) as store:
        (only,) = store.clip_sets(history=True).itertuples()
        assert only.name == "test_expanded" and only.actor == "ana" and only.clips == 12
