"""Near-duplicates in a real browser against a real server: the search launched from the Data
tab fills the Review queue, each candidate shows its partner with a player of its own, and the
resolution buttons record their decisions."""
from __future__ import annotations

import pytest

from core.store import Store
from duplicates_support import build_duplicates_session, ids_by_name
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, needs_chromium]

SHOWN_SLOT = "#em-review-stage .em-slot:not([hidden])"
SHOWN = f"(document.querySelector('{SHOWN_SLOT} .em-player') || {{dataset: {{}}}}).dataset.clip"
PARTNER_AUDIO = f"document.querySelector('{SHOWN_SLOT} .em-dup-pair .em-audio')"


def test_search_from_the_data_tab_then_resolve_candidates_beside_their_partner(tmp_path):
    session = build_duplicates_session(tmp_path)
    with Store.open(session) as store:
        ids = ids_by_name(store)
    with running_server(session) as url, browser_page(url, width=1440, height=1100) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Data")
        page.locator("#em-dup-embedding").get_by_text("logmel", exact=True).click()
        page.locator("#em-dup-run").click()
        result = page.locator("#em-dup-result")
        result.get_by_text("3 queued as near_duplicate").wait_for(timeout=120000)
        assert "test: 2 of 12 clips (16.7%) have a near-duplicate in train" in result.inner_text()
        result.scroll_into_view_if_needed()
        screenshot(page, "duplicates_data_tab", full_page=False)

        open_tab(page, "Review")
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_function("window.emReview.ids.length === 3", timeout=30000)
        pair = page.locator(f"{SHOWN_SLOT} .em-dup-pair")
        pair.wait_for(timeout=20000)
        first = int(page.evaluate(SHOWN))
        partner = int(pair.get_attribute("data-partner"))
        originals = {ids["copy_test_a.wav"]: ids["train_00.wav"], ids["copy_test_b.wav"]: ids["train_05.wav"],
                     ids["copy_val_a.wav"]: ids["train_09.wav"]}
        assert originals[first] == partner
        assert pair.locator(".em-player").get_attribute("data-clip") == str(partner)
        assert "in train" in pair.locator(".em-dup-head").inner_text()
        page.evaluate(f"{PARTNER_AUDIO}.play()")  # the partner's own player
        page.wait_for_function(f"{PARTNER_AUDIO}.currentTime > 0.2", timeout=15000)
        page.evaluate(f"{PARTNER_AUDIO}.pause()")
        screenshot(page, "duplicates_review_pair", full_page=False)

        pair.get_by_role("button", name="move beside partner").click()
        page.locator("#em-review-message").get_by_text(f"clip {first}: moved to train").wait_for(timeout=20000)
        page.wait_for_function(f"{SHOWN} != '{first}'", timeout=20000)
        second = int(page.evaluate(SHOWN))
        page.locator(f"{SHOWN_SLOT} .em-dup-pair").get_by_role("button", name="not a duplicate").click()
        page.locator("#em-review-message").get_by_text(f"clip {second}: not a duplicate").wait_for(timeout=20000)
        assert error_badges(page) == 0 and real_errors(errors) == []

    with Store.open(session) as store:
        assert store.clip_state(first)["split"] == "train"
        verdict = store.decisions(clip_id=second, annotator="ana").iloc[0]
        assert verdict.tag == "not_duplicate" and verdict.note == f"not a duplicate of clip {originals[second]}"
