"""The amplitude-envelope modulation rate of a clip (A10's auxiliary target), and its cache.

A siren's horn sweeps its pitch at a steady loudness; an alert beeps on and off. How fast a
clip's loudness rises and falls is what the envelope head learns to read from the embedding.

The envelope is the frame RMS (windows of 2 hops, one hop apart); its modulation spectrum is the
Hann-windowed FFT of the envelope minus its mean, zero-padded to a 0.01 Hz grid. The rate is the
strongest component in [min_hz, max_hz], and its depth that component's amplitude over the
envelope's mean (an amplitude-modulated tone (1 + m sin 2 pi f t) gives rate f, depth m). The
band starts no lower than 2 / duration: a clip must hold two periods of a rate to show it.

Measured once per clip from the clean audio, as the features see it (the same crop, never padded:
padding would add an on/off of its own) and cached per (clip, setting) like the features. Which
augmentations change it: time_stretch at rate r multiplies it by r, and the trainer scales the
target by the stretch the feed applied (AugmentFeed.time_scales); noise, gain, pitch shift,
band-stop and SpecAugment leave the clip's rate as it was, so the clean rate stays the target
(the head must see through them, as the classifier does); gain_dips adds dips that are not the
clip's own modulation, and the target deliberately ignores them.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from core.audio import SILENCE_PEAK
from core.config import EnvelopeHead, FeatureConfig
from core.features import CACHE_FORMAT_VERSION, FeatureCache, clip_rng

__all__ = ["EnvelopeRateCache", "RATE_COLUMNS", "log_rate_targets", "modulation_rate"]

RATE_COLUMNS = ("rate_hz", "depth")   # what a cache row holds
GRID_HZ = 0.01                        # the modulation spectrum's frequency step after zero-padding
MIN_ENVELOPE_FRAMES = 8


def modulation_rate(wave: np.ndarray, *, sample_rate_hz: int, min_hz: float, max_hz: float,
                    hop_ms: float) -> tuple[float, float]:
    """(rate_hz, depth) of the strongest amplitude modulation of a mono wave in [min_hz, max_hz]
    (see the module docstring). depth >= 0, relative to the envelope's mean. (nan, 0.0) when there
    is nothing to measure: silence (peak below -90 dBFS), or a clip too short for the band."""
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim != 1:
        raise ValueError(f"wave: expected a mono 1-D array, got shape {wave.shape}")
    if not 0 < min_hz < max_hz:
        raise ValueError(f"min_hz, max_hz: need 0 < min_hz < max_hz, got {min_hz!r}, {max_hz!r}")
    hop = max(1, round(sample_rate_hz * hop_ms / 1000))
    envelope_rate_hz = sample_rate_hz / hop
    if max_hz >= envelope_rate_hz / 2:
        raise ValueError(f"max_hz: {max_hz!r} must be below the envelope's Nyquist {envelope_rate_hz / 2:g} Hz")
    envelope = _frame_rms(wave, hop)
    if len(envelope) < MIN_ENVELOPE_FRAMES or not wave.size or np.abs(wave).max() < SILENCE_PEAK:
        return math.nan, 0.0
    low = max(min_hz, 2 * envelope_rate_hz / len(envelope))
    if low >= max_hz:
        return math.nan, 0.0
    window = np.hanning(len(envelope))
    mean = envelope.mean()
    n_fft = 1 << math.ceil(math.log2(max(len(envelope), envelope_rate_hz / GRID_HZ)))
    amplitude = 2 * np.abs(np.fft.rfft((envelope - mean) * window, n=n_fft)) / window.sum()
    freqs = np.fft.rfftfreq(n_fft, d=1 / envelope_rate_hz)
    band = np.flatnonzero((freqs >= low) & (freqs <= max_hz))
    peak = band[np.argmax(amplitude[band])]
    return float(freqs[peak]), float(amplitude[peak] / mean)


def _frame_rms(wave: np.ndarray, hop: int) -> np.ndarray:
    """RMS over windows of 2 hops, one hop apart (the last window may be a hop short)."""
    frames = len(wave) // hop
    if frames == 0:
        return np.zeros(0)
    power = np.square(wave[:frames * hop]).reshape(frames, hop).mean(axis=1)
    paired = np.concatenate([(power[:-1] + power[1:]) / 2, power[-1:]])
    return np.sqrt(paired)


def log_rate_targets(rows: np.ndarray, settings: EnvelopeHead) -> np.ndarray:
    """Regression targets float32 (N,) in log Hz from cache rows (N, 2) of (rate_hz, depth): the
    rate where the modulation is at least min_depth deep, log(min_hz) where it is shallower
    (steady sounds: 'no modulation' reads as the slowest rate), nan where nothing was measurable
    (silence, too short; the loss leaves those out)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.ndim != 2 or rows.shape[1] != len(RATE_COLUMNS):
        raise ValueError(f"rows: expected shape (N, {len(RATE_COLUMNS)}) of {RATE_COLUMNS}, got {rows.shape}")
    rate, depth = rows[:, 0], rows[:, 1]
    modulated = depth >= settings.min_depth
    with np.errstate(invalid="ignore", divide="ignore"):
        targets = np.where(modulated, np.log(np.where(rate > 0, rate, np.nan)), math.log(settings.min_hz))
    return np.where(np.isnan(rate), np.nan, targets).astype(np.float32)


class EnvelopeRateCache(FeatureCache):
    """Each clip's (rate_hz, depth), computed once per (clip, setting) and stored like features:
    cache_dir/envrate-<key>/. The key holds what the measurement depends on (the band, the hop,
    the sample rate, the clip length and crop); min_depth is applied when targets are read
    (log_rate_targets), so changing it reuses the cache."""

    kind = "envrate"

    def __init__(self, cache_dir: str | Path, feature_cfg: FeatureConfig, settings: EnvelopeHead) -> None:
        self.settings = settings
        super().__init__(cache_dir, feature_cfg)

    def _keyed_config(self) -> dict[str, Any]:
        features = self.feature_cfg
        return {"cache_format": CACHE_FORMAT_VERSION, "sample_rate_hz": features.sample_rate_hz,
                "max_length_s": features.concrete("max_length_s"), "crop": features.crop,
                "min_hz": float(self.settings.min_hz), "max_hz": float(self.settings.max_hz),
                "hop_ms": float(self.settings.hop_ms)}

    def _key(self) -> str:
        text = json.dumps(self._keyed_config(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def _row_shape(self) -> tuple[int, ...]:
        return (len(RATE_COLUMNS),)

    def _clip_function(self) -> Callable[[str], np.ndarray]:
        from core.augment.render import source_wave  # the clip as copies start from: cropped, never padded

        settings, features = self.settings, self.feature_cfg

        def rate(key: str) -> np.ndarray:
            wave = source_wave(key, features, rng=clip_rng(key))
            return np.array(modulation_rate(wave, sample_rate_hz=features.sample_rate_hz, min_hz=settings.min_hz,
                                            max_hz=settings.max_hz, hop_ms=settings.hop_ms), dtype=np.float32)
        return rate

