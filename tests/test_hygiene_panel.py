"""The Data tab's VAD hygiene panel and the Review tab's reason filter, without a browser: a real
store holding eSpeak NG speech and seeded noise with two planted faults, measured by the real
hygiene child (Silero VAD, a few seconds)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import copy_session, tone, write_wav
from core import review
from core.config import HygieneConfig
from core.store import Store
from pipelines.importing import import_dataset
from speech_support import FAULTS, build_speech_session, clip_ids
from workbench import hygiene_panel, review_handlers
from workbench.context import Workbench

@pytest.fixture(scope="module")
def speech_session(tmp_path_factory) -> Path:
    return build_speech_session(tmp_path_factory.mktemp("hygiene-panel"))


@pytest.fixture
def wb(speech_session, tmp_path) -> Workbench:
    bench = Workbench.open(copy_session(speech_session, tmp_path / "session"))
    yield bench
    bench.store.close()


def test_the_form_reads_its_labels_help_and_defaults_from_the_config():
    import gradio as gr
    with gr.Blocks():
        ui = hygiene_panel.layout()
    defaults, help_text = HygieneConfig(), HygieneConfig.field_help()
    for key in ("vad", "mode", "speech_min", "nonspeech_max"):
        field = getattr(ui, key)
        assert field.value == getattr(defaults, key) and field.info == help_text[key] and f"({key})" in field.label
    assert [value for _, value in ui.vad.choices] == ["webrtc", "silero"]
    assert hygiene_panel.mode_field("silero").visible is False and hygiene_panel.mode_field("webrtc").visible is True


def test_run_measures_queues_the_planted_faults_and_the_review_filter_finds_them(wb):
    silent, leak = clip_ids(wb.store, *FAULTS)
    before = wb.views.get(silent)  # rendered (and cached) before any measurement: no strip yet
    assert "em-vad-strip" not in before.html
    reports = []
    shown = hygiene_panel.run_hygiene(wb, "silero", 3, 0.7, 0.05,
                                      report=lambda done, total: reports.append((done, total)))
    assert reports[0] == (0, 12) and reports[-1] == (12, 12)
    assert shown.startswith('<pre class="em-vad-summary">hygiene ') and "12 clips measured with silero" in shown
    assert "2 queued as vad_hygiene" in shown and "data-tab='Review'" in shown
    assert sorted(wb.store.quarantine_queue().clip_id) == sorted([silent, leak])

    # The Review tab offers the kind, and picking it loads exactly the planted clips, each drawn
    # with the detector's strip under its spectrogram (the cache was renewed by the run).
    assert review_handlers.reasons(wb, "quarantine") == ["any", "vad_hygiene"]
    ids, table, window, _, _ = review_handlers.load_queue(wb, "quarantine", "open", "", "vad_hygiene", "", None,
                                                          "full", 0)
    assert sorted(ids) == sorted([silent, leak]) and list(table.clip_id) == ids
    slots = {slot["clip"]: slot["html"] for slot in json.loads(window)["slots"]}
    fraction = wb.store.vad_measurements(clip_id=silent).fraction.iloc[0]
    assert f'title="silero: {fraction:.0%} of frames speech"' in slots[silent]
    assert "flagged: vad_hygiene: SPEECH clip with" in slots[silent]


def test_bad_values_and_a_session_without_speech_labels_are_refused_in_one_line(wb, tmp_path):
    refused = hygiene_panel.run_hygiene(wb, "webrtc", 3, 1.5, 0.05)
    assert refused == ('<span class="em-message-error">Hygiene not run: hygiene.speech_min: 1.5 is out of range '
                       '[0, 1]</span>')
    assert "hygiene.nonspeech_max: expected a number, got None" in hygiene_panel.run_hygiene(wb, "webrtc", 3, 0.7, None)
    assert "hygiene.mode: 7 must be 0, 1, 2 or 3" in hygiene_panel.run_hygiene(wb, "webrtc", 7, 0.7, 0.05)
    assert wb.store.runs().empty

    audio = tmp_path / "tones"
    for label in ("alert_sounds", "road_traffic"):
        write_wav(audio / label / f"{label}.wav", tone(440.0, seconds=0.5))
    with Store.open(tmp_path / "tones-session") as store:
        import_dataset(store, audio, layout="folder", name="tones", progress=False)
    sirens = Workbench.open(tmp_path / "tones-session")
    try:
        refused = hygiene_panel.run_hygiene(sirens, "webrtc", 3, 0.7, 0.05)
        assert refused.startswith('<span class="em-message-error">Hygiene not run: no usable clips labelled SPEECH or '
                                  'NONSPEECH in this session (labels: alert_sounds, road_traffic)')
        assert sirens.store.runs().empty
    finally:
        sirens.store.close()


def test_the_reason_filter_groups_queue_entries_by_the_method_that_raised_them(wb):
    ids = wb.store.clips().sort_values("id").id.astype(int).tolist()
    entries = [("extreme_off", "extreme-off (label p <= 0.1, top p >= 0.7): labelled SPEECH"),
               ("self_confidence", "label issue (self confidence, 5-fold cross-validated): labelled SPEECH"),
               ("normalized_margin", "label issue (normalized margin, out-of-sample): labelled NONSPEECH"),
               ("confusion", "listen again [confusion cell of run r: true SPEECH, predicted NONSPEECH]")]
    wb.store.raise_quarantine(pd.DataFrame({"clip_id": ids[:4], "method": [m for m, _ in entries],
                                            "reason": [r for _, r in entries], "score": 0.5}), annotator="audit")
    review.send_to_quarantine(wb.store, ids[4], reason="odd click at 0.3 s", annotator="ana")
    assert review_handlers.reasons(wb, "quarantine") == ["any", "extreme_off", "label_issue", "manual"]

    def load(reason: str, source: str = "quarantine") -> list[int]:
        return review_handlers.load_queue(wb, source, "open", "", reason, "", None, "full", 0)[0]

    assert sorted(load("label_issue")) == ids[1:3] and sorted(load("manual")) == [ids[3], ids[4]]
    assert sorted(load("any")) == sorted(load("")) == ids[:5]
    assert load("ODD CLICK") == [ids[4]]  # typed text: the reasons that contain it, in any case
    # A kind the chosen queue has not goes back to "any"; typed text stays as typed.
    predictions = review_handlers.reason_choices(wb, "misclassified", "manual")
    assert predictions.value == "any" and [value for _, value in predictions.choices] == ["any"]
    assert review_handlers.reason_choices(wb, "quarantine", "odd click").value == "odd click"
    assert review_handlers.reason_choices(wb, "quarantine", "manual").value == "manual"
