"""The inbox in a real browser against a real server: add unlabelled audio in the Data tab, score
it as a job, open the uncertain queue in the Review tab, label a clip with a key, see it leave."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import copy_session, tone, write_wav
from core.store import Store
from ui_support import browser_page, needs_chromium, open_tab, real_errors, running_server, screenshot, set_annotator

pytestmark = [pytest.mark.browser, needs_chromium]

SETTLED = "window.emReview.pending.length === 0 && !window.emReview.inflight"
SHOWN = "(document.querySelector('#em-review-stage .em-slot:not([hidden]) .em-player') || {dataset: {}}).dataset.clip"


@pytest.fixture
def inbox_session(tmp_path, trained_demo_session) -> tuple[Path, Path]:
    """The trained small demo with its run in production, and a folder of unlabelled audio:
    six tones from three recordings and one truncated file."""
    session = copy_session(trained_demo_session, tmp_path / "session")
    with Store.open(session) as store:
        store.record_promotion(store.runs(kind="train").id.iloc[0], action="promote", actor="test")
    folder = tmp_path / "live"
    for r in range(3):
        for n in range(2):
            write_wav(folder / f"rec{r}_{n}.wav", tone(600 + 400 * r + 90 * n, seconds=2.0))
    (folder / "broken.wav").write_bytes(b"RIFF\x00\x00")
    return session, folder


def test_inbox_clips_are_scored_queued_and_labelled_by_key(inbox_session):
    session, folder = inbox_session
    with running_server(session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Data")
        page.locator("#em-inbox-folder textarea, #em-inbox-folder input").first.fill(str(folder))
        page.locator("#em-inbox-add").click()
        message = page.locator("#em-inbox-message")
        message.get_by_text("6 readable added, 1 unreadable recorded").wait_for(timeout=60000)
        assert "broken.wav: unreadable" in message.inner_text()
        page.locator("#em-inbox-score").click()
        message.get_by_text("Scoring queued as job").wait_for(timeout=30000)
        status = page.locator("#em-inbox-status")
        status.get_by_text("succeeded", exact=False).wait_for(timeout=240000)  # a child process: torch, the model
        assert "uncertain queue:" in status.inner_text()
        status.scroll_into_view_if_needed()
        screenshot(page, "inbox_data_tab", full_page=False)

        open_tab(page, "Review")
        page.locator("#em-review-source input").click()
        page.get_by_role("option", name="uncertain", exact=True).click()
        page.wait_for_function("window.emReview.ids.length > 0", timeout=30000)
        queued = page.evaluate("window.emReview.ids")
        page.wait_for_function(f"{SHOWN} == '{queued[0]}'", timeout=30000)
        head = page.locator("#em-review-stage .em-slot:not([hidden]) .em-slot-head").inner_text()
        assert "flagged: uncertain #1:" in head and "given (no label)" in head
        side = page.locator("#em-review-stage .em-slot:not([hidden]) .em-slot-side").inner_text()
        assert "no model predictions" not in side  # the scoring's probabilities, though production never saw the clip
        screenshot(page, "inbox_review_queue", full_page=False)

        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("1")  # the first tag's key: a class
        page.wait_for_function(f"{SHOWN} != '{queued[0]}'", timeout=20000)
        page.wait_for_function(SETTLED, timeout=30000)  # the decision written and answered
        assert f"clip {queued[0]}: tagged" in page.locator("#em-review-message").inner_text()
        page.get_by_role("button", name="Load queue").click()  # open clips only: the labelled one has left
        page.wait_for_function(f"window.emReview.ids.length === {len(queued) - 1}", timeout=30000)
        assert queued[0] not in page.evaluate("window.emReview.ids")
        screenshot(page, "inbox_review_after_label", full_page=False)
        assert real_errors(errors) == []

    with Store.open(session) as store:
        state = store.clip_state(queued[0])
        assert state["label"] is not None and state["split"] == "train"
        assert list(store.decisions(clip_id=queued[0]).action) == ["tag", "move"]
