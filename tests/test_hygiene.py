"""VAD hygiene (B6) on a real session: eSpeak NG speech and seeded noise in WAV files, imported
into a DuckDB store, measured by the real child job; planted faults must reach the queue."""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import copy_session
from core import review
from core.config import ConfigError
from core.store import Store, StoreError
from pipelines.hygiene import REASON, hygiene
from pipelines.review_queue import build_queue
from speech_support import build_speech_session, clip_ids

@pytest.fixture(scope="module")
def speech_session(tmp_path_factory) -> Path:
    """Ten clean clips per class and two planted faults: a SPEECH clip that is mostly silence
    and a NONSPEECH clip with a word leaking in."""
    return build_speech_session(tmp_path_factory.mktemp("speech"), clean=10)


@pytest.fixture
def session(speech_session, tmp_path):
    return copy_session(speech_session, tmp_path / "session")


def test_silero_hygiene_queues_the_planted_faults_and_stores_every_measurement(session):
    with Store.open(session) as store:
        outcome = hygiene(store, vad="silero", progress=False)
        silent, leak = clip_ids(store, "mostly_silence.wav", "speech_leak.wav")
        assert outcome.status == "succeeded" and outcome.measured == 22
        assert sorted(outcome.queued) == sorted([silent, leak]), outcome.lines()
        measured = store.vad_measurements(detector="silero")
        assert len(measured) == 22 and measured.fraction.between(0, 1).all()
        frames = measured.set_index("clip_id").loc[silent]
        assert frames.frame_s == pytest.approx(0.032) and len(frames.frame_scores) == pytest.approx(3 / 0.032, abs=1)
        queue = build_queue(store, reason=REASON)
        assert sorted(queue.clip_id) == sorted([silent, leak])
        row = queue.set_index("clip_id").loc[leak]
        assert row.reason.startswith("vad_hygiene: NONSPEECH clip with") and row.reason.endswith("(silero), > 5%")
        assert row.score == pytest.approx(measured.set_index("clip_id").fraction[leak])
        assert store.run(outcome.run_id)["kind"] == "hygiene" and store.run(outcome.run_id)["status"] == "succeeded"


def test_a_rerun_queues_nothing_twice_and_respects_a_reviewers_decision(session):
    with Store.open(session) as store:
        hygiene(store, vad="silero", progress=False)
        silent, leak = clip_ids(store, "mostly_silence.wav", "speech_leak.wav")
        still_open = hygiene(store, vad="silero", progress=False)
        assert still_open.failed == 2 and still_open.queued == []  # both are open in the queue already
        review.relabel(store, silent, label="SPEECH", annotator="ana")  # a person heard the word: the label stands
        review.undo(store, review.relabel(store, leak, label="SPEECH", annotator="ana"), annotator="ana")  # undone
        assert list(build_queue(store, reason=REASON).clip_id) == [leak]
        after_review = hygiene(store, vad="silero", progress=False)
        assert after_review.failed == 2 and after_review.queued == [] and after_review.skipped_reviewed == 1
        assert "1 failing clips were already reviewed" in " ".join(after_review.lines())


def test_webrtc_is_not_trusted_on_noise_and_says_so(session):
    with Store.open(session) as store:
        outcome = hygiene(store, vad="webrtc", mode=0, progress=False)
        untrusted = {g["group"] for g in outcome.untrusted}
        assert "NONSPEECH" in untrusted  # mode 0 calls brown noise speech: not a label problem
        nonspeech = set(store.clips().query("original_label == 'NONSPEECH'").id)
        assert not nonspeech & set(outcome.queued)
        assert any(line.startswith("  not judged: NONSPEECH: only") for line in outcome.lines())


def test_bad_requests_are_refused_in_one_line_and_create_no_run(session):
    with Store.open(session) as store:
        with pytest.raises(ConfigError, match=r"hygiene.mode: 7 must be 0, 1, 2 or 3"):
            hygiene(store, mode=7, progress=False)
        with pytest.raises(ConfigError, match=r"hygiene.speech_min: 1.5 is out of range"):
            hygiene(store, speech_min=1.5, progress=False)
        with pytest.raises(StoreError, match=r"no usable clips labelled speech in this session \(labels: NONSPEECH, "
                                             r"SPEECH\); set --speech-label"):
            hygiene(store, speech_label="speech", progress=False)
        assert store.runs().empty and not (session / "runs").exists()


def test_the_cli_runs_hygiene_and_refuses_bad_values_in_one_line(session, capsys):
    import json

    import app
    assert app.main(["hygiene", "--session", str(session), "--vad", "silero", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "succeeded" and len(printed["queued"]) == 2 and printed["settings"]["vad"] == "silero"
    assert app.main(["hygiene", "--session", str(session), "--frame-ms", "25"]) == 2
    assert capsys.readouterr().err.strip() == "earmark: error: hygiene.frame_ms: 25 must be 10, 20 or 30"
