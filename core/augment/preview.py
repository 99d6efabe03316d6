"""Before/after of an augmentation list on one clip, for the Data tab: play both, look at both.

Same seed, same preview: the draw comes from np.random.default_rng(seed), and `applied` lists
exactly what was done (the same records an augmented copy stores), so the UI can show the
parameters next to the two players and spectrograms.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.audio import AudioError, probe
from core.augment.noise_bank import NoiseBank
from core.augment.pipeline import build_pipeline
from core.augment.render import log_mel_of, source_wave
from core.config import AUTO, AUTO_FIELDS, AugmentSpec, FeatureConfig
from core.feature_fit import fit_features
from core.features import LogMel

__all__ = ["Preview", "preview"]


@dataclasses.dataclass(frozen=True)
class Preview:
    """original/augmented: mono float32 audio at sample_rate_hz (lengths differ after a
    time-stretch); *_log_mel: float32 dB (n_mels, n_frames) of each, the augmented one after the
    spectrogram steps too; applied: waveform records, then spectrogram records."""
    sample_rate_hz: int
    original: np.ndarray
    augmented: np.ndarray
    applied: list[dict[str, Any]]
    original_log_mel: np.ndarray
    augmented_log_mel: np.ndarray


def preview(path: str | Path, specs: Iterable[AugmentSpec | dict[str, Any]], *, seed: int,
            feature_cfg: FeatureConfig | None = None, noise_bank: NoiseBank | str | Path | None = None) -> Preview:
    """Apply specs to the clip at path with a generator seeded by seed.

    feature_cfg (default FeatureConfig()) sets the rate, the longest stretch kept
    (max_length_s) and the log-mel; a field left 'auto' is fitted to this clip alone (pass
    core.feature_fit.fit_to_session's features to preview what a session's run would use).
    Raises ConfigError for bad specs, AudioError for a file that cannot be read.
    """
    cfg = _fitted_to_clip(path, feature_cfg or FeatureConfig())
    pipeline = build_pipeline(specs, sample_rate_hz=cfg.sample_rate_hz, noise_bank=noise_bank)
    rng = np.random.default_rng(seed)
    original = source_wave(path, cfg, rng=rng)
    augmented, wave_applied = pipeline.augment_wave(original, rng)
    log_mel = LogMel(cfg)
    original_spec = log_mel_of(original, log_mel)
    augmented_spec, spec_applied = pipeline.augment_spec(torch.from_numpy(log_mel_of(augmented, log_mel)), rng)
    return Preview(sample_rate_hz=cfg.sample_rate_hz, original=original, augmented=augmented,
                   applied=wave_applied + spec_applied, original_log_mel=original_spec,
                   augmented_log_mel=augmented_spec.numpy())


def _fitted_to_clip(path: str | Path, feature_cfg: FeatureConfig) -> FeatureConfig:
    """feature_cfg with any 'auto' fixed from the one clip: without a training set, it is all there is."""
    if not any(getattr(feature_cfg, name) == AUTO for name in AUTO_FIELDS):
        return feature_cfg
    found = probe(path, scan_samples=False)
    if found.status != "ok":
        raise AudioError(found.reason)
    return fit_features(feature_cfg, durations_s=[found.duration_s], sample_rates_hz=[found.sample_rate_hz]).features
