"""core/feature_fit.py: 'auto' clip length and mel range fixed from the training clips, and the warnings."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tone, write_wav
from core.augment.preview import preview
from core.config import ConfigError, FeatureConfig, ModelConfig, load_preset
from core.feature_fit import fit_features, fit_to_clips, round_up_length
from core.features import LogMel, feature_cache_key
from core.models import build_model


def test_round_up_length_uses_coarser_steps_for_longer_clips():
    assert [round_up_length(s) for s in (0.01, 0.2, 0.21, 0.93, 1.2, 1.95, 2.0)] == [0.1, 0.2, 0.3, 1.0, 1.2, 2.0, 2.0]
    assert [round_up_length(s) for s in (2.01, 2.5, 9.65, 10.0, 10.2, 31.4)] == [2.5, 2.5, 10.0, 10.0, 11.0, 32.0]
    with pytest.raises(ValueError, match="seconds: expected a positive number, got -1"):
        round_up_length(-1)


def test_auto_length_is_the_95th_percentile_of_the_training_durations_rounded_up():
    durations = np.linspace(0.3, 0.7, 101)  # p95 = 0.68 s
    fit = fit_features(FeatureConfig(), durations_s=durations, sample_rates_hz=[16000] * 101)
    assert fit.features.max_length_s == 0.7 and fit.features.n_samples == 11200
    assert fit.info[0] == ("features.max_length_s auto -> 0.7 s: the 95th percentile of the 101 training clips' durations "
                           "is 0.68 s (mean 0.50 s, longest 0.70 s), rounded up; 0% of the clips are longer and cropped (center)")
    assert fit.warnings == []
    demo_like = fit_features(FeatureConfig(), durations_s=np.random.default_rng(0).uniform(3, 10, 400),
                             sample_rates_hz=[16000] * 400)
    assert demo_like.features.max_length_s == 10.0  # the demo's clips (3-10 s) keep their 10 s input


def test_auto_length_ignores_unknown_durations_and_keeps_one_fft_window():
    fit = fit_features(FeatureConfig(n_fft=2048), durations_s=[0.05, None, np.nan, 0.06], sample_rates_hz=[None] * 4)
    assert fit.features.max_length_s == 0.2  # 2048 samples at 16 kHz = 0.128 s, rounded up
    assert "below one FFT window (0.128 s)" in fit.info[0] and "of the 2 training clips'" in fit.info[0]
    with pytest.raises(ConfigError, match="features.max_length_s is 'auto' but no training clip's duration is known"):
        fit_features(FeatureConfig(), durations_s=[None, np.nan], sample_rates_hz=[16000, 16000])


def test_an_explicit_length_wins_and_warns_when_most_of_the_input_is_padding():
    short = np.full(50, 0.5)
    fit = fit_features(FeatureConfig(max_length_s=10.0), durations_s=short, sample_rates_hz=[16000] * 50)
    assert fit.features.max_length_s == 10.0 and fit.info == []
    assert fit.warnings == ["features.max_length_s = 10 s but the training clips average 0.50 s: 95% of the average "
                            "input is padding (zeros), which costs time and can cost accuracy; features.max_length_s: "
                            "auto would choose 0.5 s"]
    # 0.6 s clips in 1 s inputs: 40% padding, under the 50% line
    assert fit_features(FeatureConfig(max_length_s=1.0), durations_s=np.full(50, 0.6), sample_rates_hz=[16000] * 50).warnings == []
    # clips longer than the input are cropped, not padded
    assert fit_features(FeatureConfig(max_length_s=1.0), durations_s=[0.2, 5.0, 5.0], sample_rates_hz=[None] * 3).warnings == []


def test_low_sample_rate_is_reported_and_auto_caps_the_mel_range_at_its_nyquist():
    rates = [8000] * 97 + [16000] * 3
    fit = fit_features(FeatureConfig(f_max_hz="auto", max_length_s=1.0), durations_s=[1.0] * 100, sample_rates_hz=rates)
    assert fit.features.f_max_hz == 4000.0
    assert fit.warnings == ["97 of 100 training clips (97%) are sampled below features.sample_rate_hz = 16000 Hz (lowest "
                            "8000 Hz): resampling adds nothing above their Nyquist, so mel bands above 4000 Hz are empty "
                            "for them"]
    assert fit.info == ["features.f_max_hz auto -> 4000 Hz: the Nyquist of 8000 Hz, the rate 95% of the training clips "
                        "reach, so the 64 mel bands cover the range the audio holds"]
    mel = LogMel(fit.features).mel.mel_scale
    assert mel.f_max == 4000.0

    explicit = fit_features(FeatureConfig(f_max_hz=None, max_length_s=1.0), durations_s=[1.0] * 100, sample_rates_hz=rates)
    assert explicit.features.f_max_hz is None and explicit.info == []
    assert explicit.warnings[0].endswith("; features.f_max_hz: auto would cap the mel range at 4000 Hz")
    within = fit_features(FeatureConfig(f_max_hz=3500.0, max_length_s=1.0), durations_s=[1.0] * 100, sample_rates_hz=rates)
    assert within.features.f_max_hz == 3500.0 and within.warnings == []  # no mel band lies above 4 kHz


def test_a_few_low_rate_strays_are_reported_but_do_not_cap_everyone():
    rates = [44100] * 97 + [8000] * 3
    fit = fit_features(FeatureConfig(f_max_hz="auto", max_length_s=1.0), durations_s=[1.0] * 100, sample_rates_hz=rates)
    assert fit.features.f_max_hz is None
    assert fit.warnings[0].startswith("3 of 100 training clips (3%) are sampled below features.sample_rate_hz = 16000 Hz")
    assert fit.info == ["features.f_max_hz auto -> 8000 Hz (half the feature rate): 95% of the clips are sampled at >= 16000 Hz"]
    full = fit_features(FeatureConfig(f_max_hz="auto", max_length_s=1.0), durations_s=[1.0], sample_rates_hz=[48000])
    assert full.features.f_max_hz is None and full.warnings == []
    assert full.info == ["features.f_max_hz auto -> 8000 Hz (half the feature rate): every training clip is sampled at >= 16000 Hz"]
    high_passed = fit_features(FeatureConfig(f_max_hz="auto", f_min_hz=5000.0, max_length_s=1.0), durations_s=[1.0],
                               sample_rates_hz=[8000])
    assert high_passed.features.f_max_hz is None
    assert high_passed.info[0].endswith("features.f_min_hz = 5000 Hz leaves no band below 4000 Hz")


def test_fit_to_clips_reads_a_manifest_or_the_store_clips_table():
    clips = pd.DataFrame({"duration_s": [0.4, 0.5, None], "sample_rate_hz": pd.array([8000, None, 8000], dtype="Int32")})
    fit = fit_to_clips(load_preset("short-clips").features, clips)
    assert (fit.features.max_length_s, fit.features.f_max_hz) == (0.5, 4000.0)
    with pytest.raises(ConfigError, match="no training clip's duration is known"):
        fit_to_clips(FeatureConfig(), pd.DataFrame({"path": ["a.wav"]}))


def test_auto_is_accepted_in_presets_and_refused_where_a_number_is_needed():
    features = load_preset("demo-fast").features
    assert (features.max_length_s, features.f_max_hz) == ("auto", "auto")
    assert load_preset("sirens-focused").features.max_length_s == 10.0  # A6 pins it
    assert load_preset("demo-fast", ["features.max_length_s=2.5"]).features.max_length_s == 2.5
    with pytest.raises(ConfigError, match=r"features.max_length_s: 'abc' matches none of the allowed types \(float, one of 'auto'\)"):
        load_preset("demo-fast", ["features.max_length_s=abc"])
    with pytest.raises(ConfigError, match=r"features.max_length_s: 0.01 is out of range \[0.05, 600\]"):
        FeatureConfig(max_length_s=0.01)
    with pytest.raises(ConfigError, match="features.max_length_s is 'auto': it is fixed from the training clips"):
        FeatureConfig().n_frames
    with pytest.raises(ConfigError, match="features.f_max_hz is 'auto'"):
        LogMel(FeatureConfig(max_length_s=1.0, f_max_hz="auto"))
    with pytest.raises(ConfigError, match="features.f_max_hz is 'auto'"):
        feature_cache_key(FeatureConfig(max_length_s=1.0, f_max_hz="auto"))


def test_the_short_clips_preset_leaves_a_200_ms_clip_enough_frames():
    config = load_preset("short-clips", ["features.max_length_s=0.2", "features.f_max_hz=null"])
    assert (config.features.n_fft, config.features.hop_length, config.features.n_frames) == (400, 160, 21)
    model = build_model(config.model, feature_cfg=config.features, labels=["a", "b", "c"])
    assert model(torch.randn(4, config.features.n_mels, config.features.n_frames)).shape == (4, 3)


def test_the_cnn_runs_on_a_single_frame():
    """The smallest input the features can give: a 50 ms clip with a hop longer than the clip."""
    cfg = FeatureConfig(n_mels=8, n_fft=1024, hop_length=1024, max_length_s=0.05)
    features = LogMel(cfg)(torch.from_numpy(tone(440, seconds=0.05).astype(np.float32))[None].repeat(2, 1))
    assert features.shape == (2, 8, 1) == (2, cfg.n_mels, cfg.n_frames)
    model = build_model(ModelConfig(cnn_channels=[8, 16, 16, 16]), feature_cfg=cfg, labels=["a", "b"])
    model.train()
    model(features).sum().backward()  # batch statistics still have two values per channel
    model.eval()
    with torch.no_grad():
        assert model(features[:1]).shape == (1, 2)


def test_preview_fits_auto_to_the_clip_it_shows(tmp_path):
    path = write_wav(tmp_path / "word.wav", tone(600, seconds=0.35, sample_rate_hz=8000), 8000)
    shown = preview(path, [{"name": "gain", "params": {"min_gain_db": -3, "max_gain_db": -3}}], seed=0,
                    feature_cfg=load_preset("short-clips").features)
    assert shown.original.shape == (5600,)  # 0.35 s at 16 kHz, never padded
    assert shown.original_log_mel.shape == (40, 36)
