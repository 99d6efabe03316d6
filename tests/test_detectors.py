"""core/detectors.py: the registry, scores and costs of WebRTC, Silero and a trained speech CNN on real audio."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from conftest import tone, write_wav
from core.audio import fit_length
from core.checkpoint import checkpoint_dir, load_checkpoint, save_checkpoint
from core.config import FeatureConfig, ModelConfig
from core.detectors import COST_COLUMNS, available_detectors, build_detector, register_detector
from core.features import FeatureCache, LogMel, compute_norm_stats, normalize
from core.models import build_model
from core.train import predict_probs
from speech_support import VOICES, speech, white_noise

LABELS = ["NONSPEECH", "SPEECH"]
# 0.5 s at 8 kHz, 32 mels x 32 frames: the smallest features the CNN learns speech from in a few seconds.
FEATURES = FeatureConfig(sample_rate_hz=8000, n_mels=32, n_fft=256, hop_length=128, max_length_s=0.5)
TINY_CNN = ModelConfig(name="cnn", cnn_channels=[8, 16], head_dropout=0.0)
WORDS = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "zero"]


@pytest.fixture(scope="module")
def speech_run(tmp_path_factory):
    """A run folder whose checkpoint is the project's CNN trained on SPEECH / NONSPEECH.

    The cheapest real training: 30 spoken digits (3 eSpeak voices) against 30 noises, tones and
    rumbles, full-batch Adam for 40 steps in this process (about 3 s on 2 busy cores), saved as
    a run saves its best model. core/train.py would need a session, a manifest and a child job.
    """
    state = torch.get_rng_state()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    spoken = [speech(word, voice=voice, sample_rate_hz=8000) for word in WORDS for voice in VOICES]
    other = [sound for _ in range(10) for sound in (
        white_noise(rng, seconds=0.5, sample_rate_hz=8000, level=rng.uniform(0.01, 0.5)),
        tone(rng.uniform(150, 3000), seconds=0.5, sample_rate_hz=8000, amplitude=rng.uniform(0.05, 0.5)),
        0.01 * np.cumsum(white_noise(rng, seconds=0.5, sample_rate_hz=8000, level=0.02)))]
    waves = np.stack([fit_length(np.asarray(w, dtype=np.float32), FEATURES.n_samples) for w in spoken + other])
    with torch.no_grad():
        features = LogMel(FEATURES)(torch.from_numpy(waves)).half().float()  # as the feature cache stores them
    stats = compute_norm_stats(features.numpy())
    x, y = normalize(features, stats), torch.tensor([1] * len(spoken) + [0] * len(other))
    model = _trained(x, y)
    run_dir = tmp_path_factory.mktemp("runs") / "speech-cnn-1"
    save_checkpoint(checkpoint_dir(run_dir), model=model, model_cfg=TINY_CNN, feature_cfg=FEATURES, labels=LABELS,
                    norm_stats=stats)
    torch.set_rng_state(state)
    return run_dir


def _trained(x: torch.Tensor, y: torch.Tensor) -> torch.nn.Module:
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=LABELS)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(40):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return model.eval()


@pytest.fixture
def clips(rng):
    """Speech (words the model never heard, in its three voices, at 16, 8 and 22.05 kHz) and non-speech,
    as (wave, rate) pairs."""
    spoken = [(speech(text, voice=voice, sample_rate_hz=rate), rate)
              for text, voice, rate in (("hello", VOICES[0], 16000), ("world", VOICES[1], 8000),
                                        ("seventeen", VOICES[2], 22050))]
    others = [(white_noise(rng, seconds=0.5, sample_rate_hz=16000), 16000),
              (tone(1000, seconds=0.5, sample_rate_hz=8000).astype(np.float32), 8000)]
    return spoken + others


def test_registry_lists_the_detectors_and_refuses_unknown_names():
    assert available_detectors() == ["silero", "trained-run", "webrtc-0", "webrtc-1", "webrtc-2", "webrtc-3"]
    with pytest.raises(ValueError, match=r"^detector: 'llm' is not a registered detector; available: silero, "
                                         r"trained-run, webrtc-0, webrtc-1, webrtc-2, webrtc-3$"):
        build_detector("llm")
    with pytest.raises(ValueError, match="^detector name 'silero' is already registered$"):
        register_detector("silero")(lambda: None)
    with pytest.raises(ValueError, match=r"^frame_ms: 25 is not allowed; allowed: 10, 20, 30$"):
        build_detector("webrtc-2", frame_ms=25)
    with pytest.raises(ValueError, match=r"^threshold: -0.1 must be a number in \[0, 1\]$"):
        build_detector("silero", threshold=-0.1)


def test_vads_score_each_clip_with_its_costs(clips):
    calls = []
    webrtc = build_detector("webrtc-3").score(clips, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 5) for i in range(1, 6)]
    assert list(webrtc.columns) == ["clip", "detector", "score", *COST_COLUMNS, "error"]
    assert webrtc["clip"].tolist() == [0, 1, 2, 3, 4] and set(webrtc["detector"]) == {"webrtc-3"}
    assert (webrtc["score"][:3] >= 0.7).all() and webrtc["error"].isna().all()
    silero = build_detector("silero").score(clips)
    assert list(silero.columns) == ["clip", "detector", "score", *COST_COLUMNS, "error", "max_frame_score"]
    assert (silero["score"][:3] >= 0.7).all() and (silero["score"][3:] <= 0.05).all()
    assert (silero["max_frame_score"][:3] > 0.9).all() and (silero["max_frame_score"][3:] < 0.5).all()
    for frame in (webrtc, silero):
        assert (frame["load_s"] == 0.0).all()  # waves handed over: nothing read
        assert (frame[["resample_s", "features_s", "model_s"]] > 0).all().all()


def test_files_are_read_and_bad_clips_recorded_not_skipped(tmp_path):
    good = write_wav(tmp_path / "hello.wav", speech("hello", sample_rate_hz=16000), 16000)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really")
    clips = [good, str(tmp_path / "missing.wav"), broken, (np.zeros(0, dtype=np.float32), 8000),
             (np.array([0.1, np.nan]), 8000)]
    scores = build_detector("webrtc-1").score(clips)
    assert scores["score"][0] >= 0.7 and scores["load_s"][0] > 0 and pd.isna(scores["error"][0])
    assert scores["score"][1:].isna().all()
    assert scores["error"][1] == f"missing: no file at {tmp_path / 'missing.wav'}"
    assert scores["error"][2].startswith("unreadable: ")
    assert scores["error"][3] == "empty: the clip holds no audio samples"
    assert scores["error"][4].startswith("wave: holds NaN or infinite samples")
    with pytest.raises(ValueError, match=r"^clips\[1\]: expected a path or a \(wave, sample_rate_hz\) pair, "
                                         r"got ndarray$"):
        build_detector("webrtc-1").score([good, np.zeros(8)])


def test_a_trained_run_scores_its_probability_of_speech(speech_run, clips):
    detector = build_detector("trained-run", run_dir=speech_run)
    assert detector.name == "run:speech-cnn-1"
    scores = detector.score(clips)
    assert list(scores.columns) == ["clip", "detector", "score", *COST_COLUMNS, "error"]
    assert (scores["score"][:3] > 0.5).all() and (scores["score"][3:] < 0.5).all()
    assert (scores[["resample_s", "features_s", "model_s"]] > 0).all().all()
    by_name = build_detector("trained-run", run_dir=speech_run, speech_label="NONSPEECH").score(clips)
    np.testing.assert_allclose(by_name["score"], 1 - scores["score"], atol=1e-6)


def test_a_trained_run_scores_files_exactly_as_its_audit_predicts_them(speech_run, tmp_path, clips):
    paths = [str(write_wav(tmp_path / f"{i}.wav", wave, rate)) for i, (wave, rate) in enumerate(clips)]
    loaded = load_checkpoint(checkpoint_dir(speech_run))
    cache = FeatureCache(tmp_path / "cache", loaded.feature_cfg)
    cache.build(paths, workers=1, progress=False)
    audit = predict_probs(loaded.model, cache, cache.rows(paths), loaded.norm_stats)[:, LABELS.index("SPEECH")]
    scores = build_detector("trained-run", run_dir=speech_run).score(paths)
    np.testing.assert_allclose(scores["score"], audit, atol=1e-5)
    assert (scores["load_s"] > 0).all()


def test_a_trained_run_is_refused_without_a_checkpoint_or_a_speech_class(speech_run, tmp_path):
    with pytest.raises(ValueError, match=r"^run_dir: .*empty-run holds no finished checkpoint"):
        build_detector("trained-run", run_dir=tmp_path / "empty-run")
    with pytest.raises(ValueError, match=r"^speech_label: 'voice' is not one of the model's labels"):
        build_detector("trained-run", run_dir=speech_run, speech_label="voice")
    model = build_model(TINY_CNN, feature_cfg=FEATURES, labels=["siren", "alert"])
    save_checkpoint(checkpoint_dir(tmp_path / "sirens"), model=model, model_cfg=TINY_CNN, feature_cfg=FEATURES,
                    labels=["siren", "alert"], norm_stats={})
    with pytest.raises(ValueError, match=r"^speech_label: the model's labels \['siren', 'alert'\] have no single one"):
        build_detector("trained-run", run_dir=tmp_path / "sirens")
