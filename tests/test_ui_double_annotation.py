"""Blind double annotation in a real browser against a real server with logins: two annotators
answer the same clip differently without seeing each other's answer, it goes to the
adjudication queue, a third person decides, and the agreement panel shows the round."""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_session
from core.store import Store
from ui_support import browser_page, error_badges, needs_chromium, real_errors, running_server, screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]

SHOWN = "(document.querySelector('#em-review-stage .em-slot:not([hidden]) .em-player') || {dataset: {}}).dataset.clip"
VISIBLE_SLOT = "#em-review-stage .em-slot:not([hidden])"
USERS = {"ana": "pw-ana", "ben": "pw-ben", "cy": "pw-cy"}


@pytest.fixture(scope="module")
def double_session(tmp_path_factory, trained_demo_session) -> tuple[Path, Path, int]:
    """The trained demo in production, one clip it is least sure of in quarantine, and a file of
    three logins: (session, auth file, the clip)."""
    root = tmp_path_factory.mktemp("double-ui")
    session = copy_session(trained_demo_session, root / "session")
    with Store.open(session) as store:
        run = store.runs(kind="train").id.iloc[0]
        store.record_promotion(run, action="promote", actor="test")
        clip = store.predictions(run).sort_values("confidence").iloc[0]
        store.raise_quarantine(pd.DataFrame({"clip_id": [clip.clip_id], "method": "manual", "audit_run_id": run,
                                             "reason": "unsure", "score": 1.0}), annotator="audit")
    auth = root / "users.txt"
    auth.write_text("".join(f"{user}:{password}\n" for user, password in USERS.items()))
    return session, auth, int(clip.clip_id)


def press_on(page, key: str) -> None:
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press(key)


def message(page, text: str) -> None:
    page.locator("#em-review-message").get_by_text(text).wait_for(timeout=30000)


def test_two_blind_answers_that_disagree_are_adjudicated_and_the_agreement_shows(double_session):
    session, auth, clip = double_session
    with running_server(session, extra_args=["--auth", str(auth)]) as url:
        with browser_page(url, login=("ana", USERS["ana"])) as (page, errors):
            page.get_by_text("Double annotation and agreement").click()
            page.locator("#em-agreement-per-clip input").click()
            page.get_by_role("option", name="2", exact=True).click()
            page.get_by_role("button", name="Set", exact=True).click()
            page.locator("#em-agreement-message").get_by_text("queue quarantine: 2 annotators per clip").wait_for(
                timeout=30000)
            page.get_by_role("button", name="Load queue").click()
            page.wait_for_function(f"{SHOWN} == '{clip}'", timeout=30000)
            press_on(page, "1")  # true_siren
            message(page, f"clip {clip}: answered emergency_sirens blind (1 of 2)")
            screenshot(page, "double_annotation_first_answer", full_page=False)
            assert real_errors(errors) == [] and error_badges(page) == 0

        with browser_page(url, login=("ben", USERS["ben"])) as (page, errors):
            page.wait_for_function(f"{SHOWN} == '{clip}'", timeout=60000)  # the page loads ben's blind queue
            shown = page.locator(VISIBLE_SLOT).inner_text()
            assert "ana" not in shown and "true_siren" not in shown  # no trace of the first answer
            assert "blind" not in page.locator("#em-review-message").inner_text()
            screenshot(page, "double_annotation_second_annotator_view", full_page=False)
            press_on(page, "2")  # non_siren_alert
            message(page, "the annotators disagree: it goes to the adjudication queue")
            assert real_errors(errors) == [] and error_badges(page) == 0

        with browser_page(url, login=("cy", USERS["cy"])) as (page, errors):
            page.locator("#em-review-source input").click()
            page.get_by_role("option", name="adjudication", exact=True).click()
            page.wait_for_function(f"{SHOWN} == '{clip}'", timeout=60000)
            head = page.locator(f"{VISIBLE_SLOT} .em-slot-head").inner_text()
            assert "ana: emergency_sirens" in head and "ben: alert_sounds" in head and "consensus:" in head
            screenshot(page, "double_annotation_adjudication_queue", full_page=False)
            page.get_by_label("frequency range").click()  # the views render again for the viewer
            page.get_by_role("option", name="0-8 kHz").click()
            page.locator(VISIBLE_SLOT).get_by_text("8 kHz", exact=True).wait_for(timeout=30000)
            page.locator("td").filter(has_text=re.compile(rf"^\s*{clip}\s*$")).first.click()  # open the row's clip
            page.wait_for_timeout(1500)
            assert page.evaluate(SHOWN) == str(clip) and page.get_by_text("Something went wrong").count() == 0
            press_on(page, "1")
            message(page, f"clip {clip}: adjudicated emergency_sirens")
            page.get_by_text("Double annotation and agreement").click()
            page.get_by_role("button", name="Refresh agreement").click()
            table = page.locator("#em-agreement-table")
            table.get_by_text("all classes").wait_for(timeout=30000)
            page.locator("#em-agreement-throughput").get_by_text("cy").first.wait_for(timeout=30000)
            page.locator("#em-agreement").scroll_into_view_if_needed()
            screenshot(page, "double_annotation_agreement_panel")
            assert real_errors(errors) == [] and error_badges(page) == 0

    with Store.open(session) as store:
        answers = store.annotations(clip_id=clip)
        assert answers[["annotator", "new_label"]].values.tolist() == [["ana", "emergency_sirens"],
                                                                        ["ben", "alert_sounds"]]
        final = store.decisions(clip_id=clip).iloc[0]
        assert (final.annotator, final.tag, final.new_label) == ("cy", "true_siren", "emergency_sirens")
        assert f"#{answers.id[0]} ana: emergency_sirens" in final.note and f"#{answers.id[1]} ben: alert_sounds" in final.note
        assert store.clip_state(clip)["label"] == "emergency_sirens"
