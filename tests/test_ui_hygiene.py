"""VAD hygiene in a real browser against a real server: run it from the Data tab on a small
speech session, then review its queue in the Review tab with the detector's strip under each
spectrogram, and tag a clip."""
from __future__ import annotations

from pathlib import Path

import pytest

from core import review
from core.relabel_rules import load_rules, rules_file, seed_rules
from core.store import Store
from test_hygiene_panel import FAULTS, build_speech_session, clip_ids
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]

SHOWN_SLOT = "#em-review-stage .em-slot:not([hidden])"
SHOWN = f"(document.querySelector('{SHOWN_SLOT} .em-player') || {{dataset: {{}}}}).dataset.clip"


@pytest.fixture
def speech_session(tmp_path) -> Path:
    """Five spoken and five noise clips with the two FAULTS planted, the speech tags' rules, and
    one clean clip a person queued already (the reason filter must leave it out)."""
    session = build_speech_session(tmp_path)
    with Store.open(session) as store:
        seed_rules(store, load_rules(rules_file("speech")))
        review.send_to_quarantine(store, clip_ids(store, "s0.wav")[0], reason="listen again", annotator="bo")
    return session


def test_hygiene_from_the_data_tab_fills_the_review_queue_with_strips_under_the_spectrograms(speech_session):
    with Store.open(speech_session) as store:
        silent, leak = clip_ids(store, *FAULTS)
    with running_server(speech_session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        set_annotator(page, "ana")
        open_tab(page, "Data")
        page.locator("#em-hygiene-vad").get_by_text("webrtc", exact=True).click()
        page.locator("#em-hygiene-mode").wait_for(state="visible", timeout=10000)  # shown for WebRTC only
        page.locator("#em-hygiene-vad").get_by_text("silero", exact=True).click()
        page.locator("#em-hygiene-mode").wait_for(state="hidden", timeout=10000)
        page.locator("#em-hygiene-run").click()
        result = page.locator("#em-hygiene-result")
        result.get_by_text("12 clips measured with silero").wait_for(timeout=60000)
        assert "2 fail" in result.inner_text() and "2 queued as vad_hygiene" in result.inner_text()
        result.scroll_into_view_if_needed()
        screenshot(page, "hygiene_data_tab", full_page=False)

        open_tab(page, "Review")
        page.locator("#em-review-reason input").click()
        page.get_by_role("option", name="vad_hygiene", exact=True).click()
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_function("window.emReview.ids.length === 2", timeout=30000)
        assert sorted(page.evaluate("window.emReview.ids")) == sorted([silent, leak])
        page.wait_for_function(f"{SHOWN} == '{leak}'", timeout=30000)  # the highest speech share first
        strip = page.locator(f"{SHOWN_SLOT} .em-vad-row")
        assert strip.locator(".em-vad-strip").is_visible()
        title = strip.get_attribute("title")
        assert title.startswith("silero: ") and title.endswith("% of frames speech")
        assert "flagged: vad_hygiene: NONSPEECH clip with" in page.locator(f"{SHOWN_SLOT} .em-slot-head").inner_text()
        # The strip spans the spectrogram's width: one time axis for both.
        spec = page.locator(f"{SHOWN_SLOT} .em-spec").bounding_box()
        band = strip.locator(".em-vad-strip").bounding_box()
        assert band["x"] == pytest.approx(spec["x"], abs=1) and band["width"] == pytest.approx(spec["width"], abs=1)
        screenshot(page, "hygiene_review_strip", full_page=False)

        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("3")  # mixed: a word leaks into the noise
        page.wait_for_function(f"{SHOWN} == '{silent}'", timeout=20000)
        page.locator("#em-review-message").get_by_text(f"clip {leak}: tagged mixed").wait_for(timeout=20000)
        assert error_badges(page) == 0 and real_errors(errors) == []

    with Store.open(speech_session) as store:
        log = store.decisions(annotator="ana")
        assert log[["clip_id", "action", "tag"]].values.tolist() == [[leak, "tag", "mixed"]]
        assert store.clip_state(leak)["excluded"]
