"""Detector comparison (B5, B9) on a real session: eSpeak NG speech and seeded non-speech mixed
with white noise at three SNRs and two durations, a speech-cnn model trained once by the real
trainer, then WebRTC, Silero and the model scored by the real child job; its report, metrics,
refusals, CLI and the promotion gate that reads it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import copy_session, tone, write_wav
from core import review
from core.config import ConfigError
from core.store import Store, StoreError
from pipelines import finetune as ft
from pipelines.detector_comparison import compare_detectors, latest_comparison, trained_name, vad_baselines
from pipelines.importing import import_dataset
from pipelines.promotion import gate_report
from speech_support import VOICES, speech, white_noise

RATE = 16000
SNRS_DB = (-5.0, 5.0, 20.0)
DURATIONS_MS = (300, 600)
PER_CELL = {"train": 3, "val": 2, "test": 2}  # clips per split x SNR x duration x class
WORDS = ("seven", "hello there", "open the door", "three four", "good morning", "nine")
# The cheapest real training: speech-cnn with a narrow CNN for one epoch.
TINY = ["train.epochs=1", "train.batch_size=8", "model.cnn_channels=[8, 16]", "features.n_mels=32",
        "train.early_stopping_patience=0"]
QUICK = {"bootstrap_draws": 20, "detectors": ["webrtc-3", "silero"]}


def at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """signal plus noise scaled to snr_db below it (power over the whole clip), peak-limited."""
    gain = np.sqrt(np.mean(signal ** 2) / (np.mean(noise ** 2) * 10 ** (snr_db / 10)))
    mixed = signal + gain * noise
    return (0.9 * mixed / max(1.0, np.abs(mixed).max() / 0.9)).astype(np.float32)


def fitted(wave: np.ndarray, samples: int) -> np.ndarray:
    """The middle `samples` of wave, or wave zero-padded on both sides to that length."""
    if len(wave) >= samples:
        start = (len(wave) - samples) // 2
        return wave[start:start + samples]
    before = (samples - len(wave)) // 2
    return np.pad(wave, (before, samples - len(wave) - before))


def nonspeech_signal(rng: np.random.Generator, index: int, samples: int) -> np.ndarray:
    seconds = samples / RATE
    if index % 2:
        return tone(rng.uniform(200, 2000), seconds=seconds, sample_rate_hz=RATE, amplitude=0.3).astype(np.float32)
    walk = np.cumsum(rng.standard_normal(samples))
    return (0.3 * (walk - walk.mean()) / np.abs(walk - walk.mean()).max()).astype(np.float32)


@pytest.fixture(scope="module")
def imported_session(tmp_path_factory) -> Path:
    """84 clips from a CSV manifest (split, speaker group, snr_db, duration_ms), with the
    white-noise bank the speech-cnn preset's noise_bank names in the session folder. Never
    written to: tests copy it."""
    root = tmp_path_factory.mktemp("speech_snr")
    rng = np.random.default_rng(0)
    rows = []
    for split, count in PER_CELL.items():
        for snr in SNRS_DB:
            for duration in DURATIONS_MS:
                samples = duration * RATE // 1000
                for i in range(count):
                    voice = VOICES[(i + len(rows)) % len(VOICES)]
                    spoken = fitted(speech(WORDS[len(rows) % len(WORDS)], voice=voice, sample_rate_hz=RATE), samples)
                    other = nonspeech_signal(rng, len(rows), samples)
                    for label, signal in (("SPEECH", spoken), ("NONSPEECH", other)):
                        path = root / f"{split}-{label}-{snr:g}-{duration}-{i}.wav"
                        noise = white_noise(rng, seconds=duration / 1000, sample_rate_hz=RATE)
                        write_wav(path, at_snr(signal, noise[:samples], snr), RATE)
                        rows.append({"path": path.name, "label": label, "split": split, "group": f"{split}-{i}",
                                     "snr_db": snr, "duration_ms": duration})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    session = tmp_path_factory.mktemp("compare") / "session"
    write_wav(session / "noise_bank" / "noise" / "white.wav", white_noise(rng, seconds=2.0, sample_rate_hz=RATE), RATE)
    with Store.open(session) as store:
        import_dataset(store, root / "manifest.csv", progress=False)
    return session


@pytest.fixture(scope="module")
def trained_session(imported_session, tmp_path_factory) -> tuple:
    """A copy of imported_session with one speech-cnn run trained on it. Never written to."""
    session = copy_session(imported_session, tmp_path_factory.mktemp("compare-trained") / "session")
    with Store.open(session) as store:
        run = ft.finetune(store, preset="speech-cnn", overrides=TINY, init_from="none", progress=False)
    assert run.status == "succeeded", run.result
    return session, run.run_id


@pytest.fixture
def session(trained_session, tmp_path):
    return copy_session(trained_session[0], tmp_path / "session")


@pytest.fixture(scope="module")
def compared(trained_session, tmp_path_factory) -> tuple:
    """One comparison of the trained run with webrtc-3 and silero, on a copy of the session."""
    session = copy_session(trained_session[0], tmp_path_factory.mktemp("compared") / "session")
    with Store.open(session) as store:
        outcome = compare_detectors(store, runs=[trained_session[1]], progress=False, **QUICK)
    return session, trained_session[1], outcome


def test_the_job_scores_every_clip_and_reports_each_detector(compared):
    session, run_id, outcome = compared
    assert outcome.status == "succeeded", outcome.error
    report = json.loads(outcome.report_files["json"].read_text())
    names = [trained_name(run_id), "webrtc-3", "silero"]
    assert list(report["detectors"]) == names and report["clips"] == {"dev": 24, "test": 24}
    assert report["snr_levels"] == list(SNRS_DB) and report["durations_ms"] == [300.0, 600.0]
    scores = pd.read_parquet(outcome.run_dir / "scores.parquet")
    assert len(scores) == 3 * 48 and scores.score.between(0, 1).all()
    for name in names:
        entry = report["detectors"][name]
        assert entry["unscored"] == {"val": 0, "test": 0}
        assert {row["snr_db"] for row in entry["test"]["per_snr"]} == set(SNRS_DB)
        assert entry["psychometric"]["overall"]["interval_95"]["draws"] == 20
        assert set(entry["psychometric"]["per_duration"]) == {"300", "600"}
        assert entry["latency_ms"]["clips"] == 48 and entry["latency_ms"]["total"]["p95"] > 0
    assert set(outcome.report_files) >= {"json", "markdown", "reliability", "psychometric", "snr"}
    markdown = outcome.report_files["markdown"].read_text()
    assert "## Balanced accuracy per SNR (test)" in markdown and "| silero |" in markdown
    # The summary's DT50 column never prints an extrapolation beyond the tested SNRs as a number.
    for line in outcome.lines()[2:2 + len(report["detectors"])]:
        dt50 = line.rsplit(maxsplit=1)[-1]
        assert dt50 in ("-", "-5", "20") or -5 <= float(dt50) <= 20, line


def test_thresholds_are_stored_with_the_run_and_headlines_as_metrics(compared):
    session, run_id, outcome = compared
    report = json.loads(outcome.report_files["json"].read_text())
    with Store.open(session) as store:
        run = store.run(outcome.run_id)
        metrics = store.run_metrics(outcome.run_id)
    assert run["kind"] == "compare" and run["status"] == "succeeded" and run["parent_run_id"] == run_id
    assert run["summary"]["thresholds"] == {name: entry["threshold"]["dev"] for name, entry in report["detectors"].items()}
    silero = metrics[metrics.class_label == "silero"].set_index(["split", "name"]).value
    assert silero["val", "threshold"] == pytest.approx(report["detectors"]["silero"]["threshold"]["dev"])
    assert silero["test", "balanced_accuracy"] == pytest.approx(report["detectors"]["silero"]["test"]["balanced_accuracy"])
    assert {"accuracy", "ece", "mce", "accuracy_SPEECH", "optimal_threshold", "dt50_db"} <= set(silero["test"].index)
    assert set(metrics.class_label) == {trained_name(run_id), "webrtc-3", "silero"}


def test_the_gate_reads_the_latest_comparison_at_its_dev_thresholds(compared):
    session, run_id, outcome = compared
    with Store.open(session) as store:
        assert latest_comparison(store, run_id=run_id) == outcome.run_id
        baselines = vad_baselines(store, run_id=run_id, max_snr_db=0)
    scores = pd.read_parquet(outcome.run_dir / "scores.parquet")
    manifest = pd.read_parquet(outcome.run_dir / "manifest.parquet")
    low = manifest[(manifest.split == "test") & (manifest["meta.snr_db"] <= 0)]
    assert baselines["clips"] == len(low) == 8 and set(baselines["detectors"]) == {"webrtc-3", "silero"}
    silero = scores[(scores.detector == "silero") & scores.clip_id.isin(low.clip_id)].merge(low, on="clip_id")
    said = silero.score >= outcome.summary["thresholds"]["silero"]
    recalls = [(said == (silero.label == "SPEECH"))[silero.label == label].mean() for label in ("SPEECH", "NONSPEECH")]
    assert baselines["detectors"]["silero"] == pytest.approx(np.mean(recalls))
    # Judged by other labels (a benchmark's answer key): every label swapped turns each balanced
    # accuracy b into 1 - b; a clip given neither class is left out.
    swapped = dict(zip(manifest.clip_id, manifest.label.map({"SPEECH": "NONSPEECH", "NONSPEECH": "SPEECH"})))
    with Store.open(session) as store:
        judged = vad_baselines(store, run_id=run_id, max_snr_db=0, labels={**swapped, int(low.clip_id.iloc[0]): "mixed"})
        everything = vad_baselines(store, run_id=run_id, max_snr_db=0, labels=swapped)
    assert judged["clips"] == 7
    assert everything["detectors"]["silero"] == pytest.approx(1 - baselines["detectors"]["silero"])
    assert everything["candidate"] == pytest.approx(1 - baselines["candidate"])


def test_gates_fail_without_a_comparison_and_judge_with_one(session, compared):
    _, run_id, _ = compared
    from pipelines.audit import audit
    with Store.open(session) as store:
        audit(store, run_id=run_id, splits=["test"], progress=False)
        before = gate_report(store, run_id=run_id)
        compare_detectors(store, runs=[run_id], progress=False, **QUICK)
        after = gate_report(store, run_id=run_id)
    criterion = {c["name"]: c for c in before["gates"]["criteria"]}["beats_vads"]
    assert criterion["status"] == "fail" and criterion["detail"].startswith("no VAD baseline measured at SNR <= 0 dB")
    assert before["vad_baselines"] is None
    judged = {c["name"]: c for c in after["gates"]["criteria"]}["beats_vads"]
    best = max(after["vad_baselines"]["detectors"].values())
    assert judged["value"] == pytest.approx(after["vad_baselines"]["candidate"] - best)
    assert judged["status"] == ("pass" if judged["value"] > 0 else "fail")


def test_refusals_are_one_line_and_create_no_run(session, trained_session):
    run_id = trained_session[1]
    with Store.open(session) as store:
        runs_before = len(store.runs())
        with pytest.raises(StoreError, match=r"^no run with id 'nope'"):
            compare_detectors(store, runs=["nope"], progress=False)
        with pytest.raises(ConfigError, match=r"^comparison.detectors: 'webrtc-9' is not a baseline detector; allowed: "
                                              r"silero, webrtc-0, webrtc-1, webrtc-2, webrtc-3$"):
            compare_detectors(store, runs=[run_id], detectors=["webrtc-9"], progress=False)
        with pytest.raises(ConfigError, match=r"^comparison.objective: 'f1' is not one of 'accuracy', 'balanced_accuracy', "
                                              r"'youden'$"):
            compare_detectors(store, runs=[run_id], objective="f1", progress=False)
        with pytest.raises(StoreError, match=rf"^run {run_id}'s model has no speech class \(its classes: NONSPEECH, "
                                             r"SPEECH\); name the speech class with --speech-label$"):
            compare_detectors(store, runs=[run_id], speech_label="speech", nonspeech_label="other", progress=False)
        test_speech = store.clips().query("split == 'test' and original_label == 'SPEECH'").id
        for clip_id in test_speech:
            review.exclude(store, int(clip_id), annotator="ana")
        with pytest.raises(StoreError, match=r"^no usable test clips labelled SPEECH in this session: thresholds are chosen "
                                             r"on val and judged on test, both need SPEECH and NONSPEECH clips$"):
            compare_detectors(store, runs=[run_id], progress=False)
        assert len(store.runs()) == runs_before


def test_a_run_that_is_not_a_succeeded_training_run_is_refused(compared):
    session, _, outcome = compared
    with Store.open(session) as store, pytest.raises(
            StoreError, match=rf"^run {outcome.run_id} is a succeeded compare run; only a succeeded training run "
                              r"with a checkpoint can be compared$"):
        compare_detectors(store, runs=[outcome.run_id], progress=False)


def test_the_cli_compares_and_refuses_in_one_line(session, trained_session, capsys):
    import app
    run_id = trained_session[1]
    argv = ["compare-detectors", "--session", str(session), "--runs", run_id, "--detectors", "webrtc-0",
            "--bootstrap-draws", "0", "--objective", "youden", "--json"]
    assert app.main(argv) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["status"] == "succeeded" and printed["summary"]["objective"] == "youden"
    assert set(printed["summary"]["thresholds"]) == {trained_name(run_id), "webrtc-0"}
    assert set(printed["files"]) >= {"json", "markdown", "reliability"}
    assert app.main(["compare-detectors", "--session", str(session), "--runs", run_id, "--bootstrap-draws", "-1"]) == 2
    assert capsys.readouterr().err.strip() == "earmark: error: comparison.bootstrap_draws: -1 is out of range [0, 10000]"


def test_the_speech_cnn_preset_carries_b2_and_the_detector_gates():
    from core.config import load_preset
    config = load_preset("speech-cnn")
    assert [(spec.name, spec.p) for spec in config.augment] == [("background_noise", 0.5), ("time_stretch", 0.5),
                                                                 ("pitch_shift", 0.5), ("spec_augment", 0.5)]
    assert config.augment[0].params == {"min_snr_db": -5, "max_snr_db": 20}
    assert config.augment[1].params == {"min_rate": 0.9, "max_rate": 1.1}
    assert config.augment[2].params == {"min_semitones": -2, "max_semitones": 2}
    assert config.augment[3].params == {"freq_masks": 1, "freq_width": 10, "time_masks": 1, "time_width_fraction": 0.05}
    gates = config.gates
    assert (gates.key_classes, gates.min_class_accuracy, gates.min_balanced_accuracy, gates.max_ece,
            gates.beat_vads_at_snr_db) == ([], 0.80, 0.85, 0.10, 0.0)
    assert config.features.max_length_s == "auto" and config.noise_bank == "noise_bank"  # the session's folder
