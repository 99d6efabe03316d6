"""VAD hygiene (B6) on a real session: eSpeak NG speech and seeded noise in WAV files, imported
into a DuckDB store, measured by the real child job; planted faults must reach the queue."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import copy_session, write_wav
from core import review
from core.config import ConfigError
from core.store import Store, StoreError
from pipelines.hygiene import REASON, hygiene
from pipelines.importing import import_dataset
from pipelines.review_queue import build_queue
from speech_support import VOICES, speech

RATE = 16000
WORDS = ("seven", "hello there", "open the door", "three four", "good morning")


def brown_noise(rng: np.random.Generator, seconds: float, level: float = 0.2) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal(int(seconds * RATE)))
    walk -= np.convolve(walk, np.ones(400) / 400, mode="same")  # no drift
    return (level * walk / np.abs(walk).max()).astype(np.float32)


def padded(wave: np.ndarray, seconds: float) -> np.ndarray:
    return np.pad(wave, (0, max(0, int(seconds * RATE) - len(wave))))[: int(seconds * RATE)]


@pytest.fixture(scope="module")
def speech_session(tmp_path_factory) -> tuple:
    """Ten clean clips per class and two planted faults: a SPEECH clip that is mostly silence
    and a NONSPEECH clip with a word leaking in."""
    root = tmp_path_factory.mktemp("speech_data")
    rng = np.random.default_rng(0)
    for i in range(10):
        words = speech(WORDS[i % len(WORDS)], voice=VOICES[i % len(VOICES)], sample_rate_hz=RATE)
        write_wav(root / "SPEECH" / f"s{i}.wav", words[: int(1.2 * RATE)], RATE)
        write_wav(root / "NONSPEECH" / f"n{i}.wav", brown_noise(rng, 1.0, level=0.05), RATE)
    quiet_tail = padded(speech("no", voice=VOICES[0], sample_rate_hz=RATE)[: int(0.25 * RATE)], 3.0)
    write_wav(root / "SPEECH" / "mostly_silence.wav", quiet_tail + 1e-3 * rng.standard_normal(3 * RATE), RATE)
    leak = brown_noise(rng, 1.2, level=0.05)
    leak += padded(speech("hello there", voice=VOICES[1], sample_rate_hz=RATE), 1.2)
    write_wav(root / "NONSPEECH" / "speech_leak.wav", leak, RATE)
    session = tmp_path_factory.mktemp("speech") / "session"
    with Store.open(session) as store:
        import_dataset(store, root, layout="folder", name="speech", progress=False)
    return session, root


@pytest.fixture
def session(speech_session, tmp_path):
    return copy_session(speech_session[0], tmp_path / "session")


def clip_ids(store: Store, *names: str) -> list[int]:
    clips = store.clips()
    return [int(clips.loc[clips.path.str.endswith(name), "id"].iloc[0]) for name in names]


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
