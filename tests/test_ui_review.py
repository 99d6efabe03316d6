"""The Review tab in a real browser against a real server, plus the server's safety rules."""
from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from core.store import Store
from pipelines.demo import build_demo_session
from pipelines.finetune import finetune
from ui_support import browser_page, needs_chromium, real_errors, running_server, screenshot, set_annotator

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture(scope="module")
def review_session(tmp_path_factory) -> Path:
    """A small demo session with a trained run and a quarantine queue of the clips it gets wrong."""
    root = tmp_path_factory.mktemp("review")
    session = root / "session"
    build_demo_session(session_dir=session, audio_dir=root / "audio", clips_per_class=12, progress=False)
    with Store.open(session) as store:
        run = finetune(store, preset="demo-fast", overrides=["train.epochs=2", "model.cnn_channels=[8, 16, 16, 16]"],
                       init_from="none", progress=False).run_id
        predictions = store.predictions(run).sort_values("confidence")
        picked = predictions.head(6)
        store.raise_quarantine(pd.DataFrame({"clip_id": picked.clip_id, "method": "extreme_off", "audit_run_id": run,
                                             "reason": "given " + picked.label + ", model says " + picked.predicted,
                                             "score": 1 - picked.confidence}), annotator="audit")
    return session


def current_clip(page) -> int:
    return int(page.locator(".em-player").first.get_attribute("data-clip"))


def test_review_by_keyboard_records_decisions_and_undo(review_session):
    with running_server(review_session) as url, browser_page(url) as (page, errors):
        set_annotator(page, "ana")
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_selector(".em-player", timeout=30000)
        first = current_clip(page)
        screenshot(page, "review_tab")

        page.locator("body").click(position={"x": 5, "y": 5})
        page.keyboard.press("2")  # non_siren_alert
        page.wait_for_function(f"document.querySelector('.em-player').dataset.clip != '{first}'", timeout=20000)
        assert "tagged non_siren_alert" in page.locator("#em-review-message").inner_text()
        second = current_clip(page)

        page.keyboard.press("]")  # faster
        rate = page.evaluate("document.querySelector('.em-audio').playbackRate")
        assert rate == pytest.approx(1.25)
        page.keyboard.press(" ")  # play
        page.wait_for_function("document.querySelector('.em-audio').currentTime > 0.2", timeout=15000)
        page.keyboard.press(" ")  # pause

        page.keyboard.press("u")  # undo ana's last decision: goes back to the first clip
        page.wait_for_function(f"document.querySelector('.em-player').dataset.clip == '{first}'", timeout=20000)
        assert "undid decision" in page.locator("#em-review-message").inner_text()
        page.keyboard.press("j")
        page.wait_for_function(f"document.querySelector('.em-player').dataset.clip == '{second}'", timeout=20000)
        screenshot(page, "review_tab_after_undo")
        assert real_errors(errors) == []

    with Store.open(review_session) as store:
        log = store.decisions(annotator="ana")
        assert list(log.action) == ["undo", "tag"]
        tag = log[log.action == "tag"].iloc[0]
        assert (tag.clip_id, tag.tag, bool(tag.undone)) == (first, "non_siren_alert", True)
        assert store.clip_state(first)["quarantined"]  # the undo put it back in the queue


def test_a_decision_without_a_name_is_refused_with_a_message(review_session):
    with running_server(review_session) as url, browser_page(url) as (page, errors):
        page.get_by_role("button", name="Load queue").click()
        page.wait_for_selector(".em-player", timeout=30000)
        page.get_by_role("button", name="X  exclude").click()
        page.get_by_text("Enter your name").first.wait_for(timeout=10000)
        assert "Traceback" not in page.content()
    with Store.open(review_session) as store:
        assert store.decisions(annotator="").empty


def test_audio_is_served_only_from_dataset_roots_and_auth_is_enforced(review_session, tmp_path):
    with Store.open(review_session) as store:
        clip = store.clips().iloc[0]
        inside = Path(clip.dataset_root) / clip.path
    outside = tmp_path / "secret.wav"
    outside.write_bytes(inside.read_bytes())
    with running_server(review_session) as url:
        ok = urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(inside)))
        assert ok.status == 200 and len(ok.read()) == inside.stat().st_size
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(outside)))
        assert refused.value.code in (403, 404)
    with running_server(review_session, extra_args=["--auth", "ana:s3cret"]) as url:
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(url + "/gradio_api/file=" + urllib.parse.quote(str(inside)))
        assert denied.value.code in (401, 403)
