"""The speech track's last steps in a real browser against a real server (issue 14, Done means 3-4):
speech-cnn fine-tuned from the Train tab on a small speech session, then compared with WebRTC and
Silero VAD from the Runs tab, its report read in place, its gates judged again (the VAD rule now
reading that comparison) and the run promoted, by a signed override when a gate fails."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import copy_session
from core.store import Store
from pipelines.detector_comparison import KIND
from test_detector_comparison import imported_session  # noqa: F401 (a module fixture: the tiny speech session)
from test_ui_train_runs import JOB_TIMEOUT_MS, pick_preset, select_run, type_epochs, wait_status
from ui_support import (browser_page, error_badges, needs_chromium, open_tab, real_errors, running_server, screenshot,
                        set_annotator)

pytestmark = [pytest.mark.browser, pytest.mark.slow, needs_chromium]


@pytest.fixture
def session(imported_session, tmp_path) -> Path:  # noqa: F811
    return copy_session(imported_session, tmp_path / "session")


def test_train_speech_cnn_compare_detectors_gate_and_promote(session):
    with running_server(session) as url, browser_page(url, width=1440, height=1000) as (page, errors):
        set_annotator(page, "ana")
        # Train: speech-cnn with 2 epochs, one click; the job audits the run and judges its gates.
        open_tab(page, "Train")
        pick_preset(page, "speech-cnn")
        type_epochs(page, "2")
        page.locator("#em-train-message").get_by_text("train.epochs=2").wait_for(timeout=30000)
        page.locator("#em-train-launch").click()
        page.locator("#em-train-message").get_by_text("queued").wait_for(timeout=30000)
        trained = re.search(r"run (\S+-train-\S+) queued", page.locator("#em-train-message").inner_text()).group(1)
        wait_status(page, "succeeded", timeout_ms=JOB_TIMEOUT_MS)
        gates = page.locator("#em-train-gates")
        gates.get_by_text("no VAD baseline measured at SNR <= 0 dB").wait_for(timeout=30000)  # not compared yet

        open_tab(page, "Runs")
        page.locator('#em-runs-table [data-testid$="-0"]').get_by_text(trained, exact=True).wait_for(timeout=30000)
        select_run(page, trained)
        compare = page.locator("#em-runs-compare-detectors")
        compare.wait_for(state="visible", timeout=30000)  # offered: the model has a SPEECH class
        compare.click()
        message = page.locator("#em-runs-audit-message")
        message.get_by_text("its report is below").wait_for(timeout=120000)
        assert re.search(r"comparison \S+-compare-\S+: 6 detectors on 24 test clips", message.inner_text())

        # The comparison run is open: its report replaces the split views, figures and all.
        report = page.locator("#em-runs-report")
        report.wait_for(state="visible", timeout=30000)
        assert not page.locator("#em-runs-split-views").is_visible()
        text = page.locator("#em-runs-report-markdown").inner_text()
        assert text.startswith("Speech detectors compared (B9)")
        for heading in ("Summary (test)", "Thresholds (B5)", "Balanced accuracy per SNR (test)", "Latency"):
            assert heading in text
        for detector in (f"run:{trained}", "webrtc-0", "webrtc-3", "silero"):
            assert detector in text
        images = report.locator("img")
        assert images.count() >= 3
        # The figures sit just below the summary (the long report scrolls in its own box) and load.
        assert images.first.bounding_box()["y"] - report.bounding_box()["y"] < 900
        images.first.scroll_into_view_if_needed()
        page.wait_for_function("[...document.querySelectorAll('#em-runs-report img')].every(i => i.naturalWidth > 0)",
                               timeout=30000)
        assert not compare.is_visible()  # a comparison run is not compared again
        # Each detector's worst test clips: one selected plays with its spectrogram.
        worst = page.locator("#em-runs-report-worst")
        worst.scroll_into_view_if_needed()
        worst.locator('[data-testid="cell-0-1"]').click()
        player = page.locator("#em-runs-report-player")
        player.locator("audio").wait_for(state="attached", timeout=30000)
        assert re.match(r"clip \d+ \(-?\d+ dB, \d+ ms\): label (SPEECH|NONSPEECH); \S+ says \S+ \(score \d\.\d{3}\)", player.inner_text())
        screenshot(page, "runs_compare_detectors_worst_clip", full_page=False)
        report.scroll_into_view_if_needed()
        screenshot(page, "runs_compare_detectors_report", full_page=False)

        # Back to the trained run: its gates judged again on its audit, the VAD rule reading the comparison.
        select_run(page, trained)
        page.locator("#em-runs-split-views").wait_for(state="visible", timeout=30000)
        report.wait_for(state="hidden", timeout=30000)
        page.locator("#em-runs-evaluate").click()
        gates = page.locator("#em-runs-gates")
        gates.get_by_text("balanced accuracy at SNR <= 0 dB on 8 clips").wait_for(timeout=30000)
        assert re.search(r"candidate \d\.\d{4} (>|<=) best VAD (silero|webrtc-\d) \d\.\d{4}", gates.inner_text())
        gates.scroll_into_view_if_needed()
        screenshot(page, "runs_speech_gates", full_page=False)
        outcome = "pass" if page.locator("#em-runs-promote").is_enabled() else "fail"
        if outcome == "pass":
            page.locator("#em-runs-promote").click()
        else:  # a failing gate: production changes only by a signed override with a reason
            assert not page.locator("#em-runs-promote").is_enabled()
            page.locator("#em-runs-reason textarea").fill("tiny test model; the comparison was read by ear")
            page.locator("#em-runs-override").click()
        page.locator("#em-runs-production").get_by_text(f"Production: run {trained}").wait_for(timeout=30000)
        assert error_badges(page) == 0 and real_errors(errors) == []

    with Store.open(session) as store:
        comparisons = store.runs(kind=KIND)
        assert len(comparisons) == 1 and comparisons.parent_run_id.iloc[0] == trained
        assert comparisons.status.iloc[0] == "succeeded"
        promotion = store.promotions().iloc[0]
        assert promotion.run_id == trained and promotion.actor == "ana"
        assert promotion.action == ("promote" if outcome == "pass" else "override")
