"""From a clip on disk to augmented audio or features: the one path that training, offline
copies and the preview share, so what is previewed is what training sees.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from core.audio import fit_length, load
from core.augment.pipeline import Applied, Pipeline
from core.config import FeatureConfig
from core.features import LogMel, Waveform, clip_waveform

__all__ = ["augmented_log_mel", "log_mel_of", "source_wave"]


def source_wave(path: str | Path, feature_cfg: FeatureConfig, *, rng: np.random.Generator | None = None) -> np.ndarray:
    """A clip as copies and previews start from: mono float32 at the feature rate, cut to
    max_length_s like the features when longer (feature_cfg.crop; "random" needs rng), never
    padded, so a copy is as long as what it was made from. Raises AudioError."""
    wave = load(path, sample_rate_hz=feature_cfg.sample_rate_hz)
    if wave.shape[0] <= feature_cfg.n_samples:
        return wave
    return fit_length(wave, feature_cfg.n_samples, crop=feature_cfg.crop, rng=rng)


def log_mel_of(wave: np.ndarray, log_mel: LogMel | Waveform) -> np.ndarray:
    """One wave's features (core.features.feature_transform) as float32 (n_mels, n_frames); waves shorter than one frame are zero-padded."""
    wave = np.asarray(wave, dtype=np.float32)
    if wave.shape[0] < log_mel.min_samples:
        wave = np.pad(wave, (0, log_mel.min_samples - wave.shape[0]))
    with torch.inference_mode():
        return log_mel(torch.from_numpy(wave)[None])[0].numpy()


def augmented_log_mel(path: str | Path, applied: Applied, *, pipeline: Pipeline, feature_cfg: FeatureConfig,
                      log_mel: LogMel | Waveform, rng: np.random.Generator) -> np.ndarray:
    """Features of a clip after the recorded waveform steps: float32 (n_mels, n_frames).

    The clip is read as the feature cache reads it (feature length; rng serves crop="random"),
    augmented, then cropped (centre) or padded (feature_cfg.pad) back to the feature length,
    since time-stretch changes it. Raises AudioError for a file that cannot be read.
    """
    wave = clip_waveform(path, feature_cfg, rng=rng)
    wave = pipeline.apply_wave(wave, applied)
    wave = fit_length(wave, feature_cfg.n_samples, crop="center", pad=feature_cfg.pad)
    return log_mel_of(wave, log_mel)
