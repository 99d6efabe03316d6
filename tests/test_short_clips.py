"""Short, low-rate clips end to end: 200 ms recordings at 8 kHz train, predict, and say what auto chose."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_wav
from core.checkpoint import load_checkpoint
from core.config import ExperimentConfig, load_preset
from core.features import FeatureCache
from core.store import Store
from core.train import CHECKPOINT_DIR, predict_probs
from pipelines import crossval
from pipelines import finetune as ft
from pipelines.importing import import_dataset

RATE_HZ = 8000
WORDS = {"low": 400.0, "mid": 1100.0, "high": 2600.0}  # three "words": tone bursts below the 4 kHz Nyquist
# Tiny and quick: the short-clips preset with a narrow CNN, a few epochs.
TINY = ["model.cnn_channels=[8, 16, 16, 16]", "train.batch_size=8", "train.epochs=3", "train.early_stopping_patience=0"]


def burst(freq_hz: float, rng: np.random.Generator, *, seconds: float = 0.2) -> np.ndarray:
    """A 200 ms tone burst with a Hann envelope and a little noise, like a short spoken word."""
    n = int(seconds * RATE_HZ)
    t = np.arange(n) / RATE_HZ
    wave = 0.4 * np.hanning(n) * np.sin(2 * np.pi * freq_hz * (1 + 0.03 * rng.standard_normal()) * t)
    return wave + 0.01 * rng.standard_normal(n)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("words") / "ds"
    rng = np.random.default_rng(3)
    for word, freq in WORDS.items():
        for i in range(20):
            write_wav(root / word / f"spk{i // 2:02d}-{i}.wav", burst(freq, rng), RATE_HZ)
    return root


@pytest.fixture
def session(tmp_path, dataset):
    with Store.open(tmp_path / "session") as store:
        import_dataset(store, dataset, group_pattern=r"^(spk\d+)-", progress=False)
        yield store


def events_of(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_200_ms_clips_at_8_khz_train_predict_and_log_what_auto_chose(session, tmp_path, capsys):
    outcome = ft.finetune(session, preset="short-clips", overrides=TINY, init_from="none", progress=False)
    assert outcome.status == "succeeded", outcome.result

    # The run fixed 'auto' from its clips, said why (events and CLI), and saved the numbers.
    saved = ExperimentConfig.load(outcome.run_dir / "config.yaml").features
    assert (saved.max_length_s, saved.f_max_hz, saved.n_frames) == (0.2, 4000.0, 21)
    events = events_of(outcome.run_dir)
    infos = [e["message"] for e in events if e["type"] == "info"]
    warnings = [e["message"] for e in events if e["type"] == "warning"]
    assert any(m.startswith("features.max_length_s auto -> 0.2 s: the 95th percentile") for m in infos)
    assert any(m.startswith("features.f_max_hz auto -> 4000 Hz: the Nyquist of 8000 Hz") for m in infos)
    assert len(warnings) == 1 and "sampled below features.sample_rate_hz = 16000 Hz (lowest 8000 Hz)" in warnings[0]
    shown = capsys.readouterr().out
    assert "info: features.max_length_s auto -> 0.2 s" in shown and "warning: " in shown

    # The checkpoint carries the concrete features, so inference on a new clip needs nothing else.
    checkpoint = load_checkpoint(outcome.run_dir / CHECKPOINT_DIR)
    assert (checkpoint.feature_cfg.max_length_s, checkpoint.feature_cfg.f_max_hz) == (0.2, 4000.0)
    new_clips = [write_wav(tmp_path / f"new-{word}.wav", burst(freq, np.random.default_rng(9)), RATE_HZ)
                 for word, freq in WORDS.items()]
    cache = FeatureCache(tmp_path / "inference-cache", checkpoint.feature_cfg)
    assert not cache.build(new_clips, progress=False).failed
    probs = predict_probs(checkpoint.model, cache, cache.rows(new_clips), checkpoint.norm_stats)
    assert probs.shape == (3, 3) and np.allclose(probs.sum(1), 1.0, atol=1e-5)

    predictions = session.predictions(outcome.run_id)
    assert len(predictions) == 60 and set(predictions.split) == {"train", "val", "test"}
    assert outcome.result["accuracy"]["train"] >= 0.9  # three tones a few mel bands apart are learnt in 3 epochs


@pytest.mark.slow
def test_an_explicit_length_that_is_mostly_padding_is_warned_about_in_the_run(session):
    outcome = ft.finetune(session, preset="short-clips", init_from="none", progress=False,
                          overrides=[*TINY, "train.epochs=1", "features.max_length_s=1.0", "features.f_max_hz=null"])
    assert outcome.status == "succeeded", outcome.result
    warnings = [e["message"] for e in events_of(outcome.run_dir) if e["type"] == "warning"]
    assert warnings[0] == ("features.max_length_s = 1 s but the training clips average 0.20 s: 80% of the average input "
                           "is padding (zeros), which costs time and can cost accuracy; features.max_length_s: auto "
                           "would choose 0.2 s")
    assert warnings[1].endswith("features.f_max_hz: auto would cap the mel range at 4000 Hz")
    saved = ExperimentConfig.load(outcome.run_dir / "config.yaml").features
    assert (saved.max_length_s, saved.f_max_hz) == (1.0, None)  # explicit values win


def test_cross_validation_folds_share_one_length_fixed_from_the_whole_pool(session, tmp_path, monkeypatch):
    """Every fold trains on the same features (one cache), fixed before any fold starts."""
    pool, _ = ft.freeze_manifest(session)
    pool.loc[pool.index[:5], "duration_s"] = 1.3  # 5 of 60 clips longer: the p95 of the whole pool is 1.3 s
    monkeypatch.setattr(crossval, "_train_fold", lambda fold_dir, on_event: {"status": "failed", "error": "not trained here"})
    with pytest.raises(RuntimeError, match="fold 1 of 3 failed: not trained here"):
        crossval.cross_validate(pool, folder=tmp_path / "cv", config=load_preset("short-clips", TINY),
                                labels=sorted(WORDS), cache_dir=str(tmp_path / "cache"), run_id="cv", n_folds=3, seed=0)
    folds = sorted((tmp_path / "cv" / "folds").iterdir())
    features = [ExperimentConfig.load(fold / "config.yaml").features for fold in folds]
    assert len(folds) == 3 and {(f.max_length_s, f.f_max_hz) for f in features} == {(1.3, 4000.0)}
    manifest = pd.read_parquet(folds[0] / "manifest.parquet")
    assert manifest["sample_rate_hz"].eq(RATE_HZ).all() and manifest["duration_s"].notna().all()
