"""One vector per clip for the near-duplicate search, and the planted copies that calibrate it.

Two embedders read a clip from its path and turn a batch of waves into vectors (B, dims):
- `ModelEmbedder`: a trained model's penultimate layer (the input of its classification head),
  on the features the model was trained with: what the production model "hears".
- `LogMelFingerprint`, when there is no model: per mel band, the mean level (relative to the
  clip's overall level), the spread over time and the mean frame-to-frame change. All three are
  pooled over time, so a small time shift changes them little, and taken on dB values with the
  clip's own level removed, so a gain change does not change them at all; frames that are pure
  padding (at the clip's floor, top_db below its peak) are left out.

`LogMelFingerprint.patterns` keeps what pooling throws away, how the sound moves frame by frame:
two recordings of the same kind of noise pool alike, but only a copy moves alike. The search
checks its candidates with it (core.near_duplicates.aligned_similarity).

`draw_copy` and `plant_copy` make what a duplicate looks like: the same recording at another gain, starting a
little earlier or later. The writer never sees waves; the child job (core/duplicates_child.py)
embeds copies of a sample of the session's clips to learn how similar a duplicate is.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from core.audio import load
from core.checkpoint import LoadedCheckpoint
from core.config import FeatureConfig
from core.features import LogMel, clip_waveform, feature_transform, normalize, torch_threads

__all__ = ["LogMelFingerprint", "ModelEmbedder", "draw_copy", "plant_copy"]

# Only the first minute of a long recording is fingerprinted: two recordings that agree there
# are worth a listen anyway, and the cost per clip stays bounded.
FINGERPRINT_MAX_S = 60.0
# Bands of a clip's fine-structure pattern (the check that follows the search): 64 mels pooled by 4.
PATTERN_BANDS = 16
FINGERPRINT_FEATURES = FeatureConfig(sample_rate_hz=16000, n_mels=64, n_fft=1024, hop_length=320, top_db=80.0)
# A planted copy's shift is at most this share of the clip: 0.1 s moves a 200 ms word by half.
MAX_SHIFT_SHARE = 0.1


class LogMelFingerprint:
    """Waves at sample_rate_hz -> (B, 3 * n_mels) fingerprints; see the module docstring."""

    name = "logmel"

    def __init__(self, feature_cfg: FeatureConfig = FINGERPRINT_FEATURES) -> None:
        self.feature_cfg = feature_cfg
        self.sample_rate_hz = feature_cfg.sample_rate_hz
        self._log_mel = LogMel(feature_cfg)
        # Patterns are compared frame by frame, so a copy shifted by a fraction of a frame must
        # still line up: half the fingerprint's hop leaves at most a quarter of it unmatched.
        self._pattern_mel = LogMel(dataclasses.replace(feature_cfg, hop_length=feature_cfg.hop_length // 2))
        self._floor_db = feature_cfg.top_db

    def read(self, path: str | Path) -> np.ndarray:
        return load(path, sample_rate_hz=self.sample_rate_hz, max_seconds=FINGERPRINT_MAX_S)

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        # One clip at a time is too little work to share: on 2 busy cores one thread is 4x faster.
        with torch.no_grad(), torch_threads(1):
            return np.stack([self._fingerprint(self._mels(wave)) for wave in waves]).astype(np.float32)

    def patterns(self, waves: list[np.ndarray]) -> list[np.ndarray]:
        """Each wave's fine structure for core.near_duplicates.aligned_similarity: log-mel dB
        pooled into PATTERN_BANDS bands, each band's mean over time removed (so neither the
        spectrum's shape nor the gain is left, only how the sound moves), (bands, frames) float32."""
        with torch.no_grad(), torch_threads(1):
            out = []
            for wave in waves:
                mels = self._mels(wave, self._pattern_mel)
                bands = mels[: len(mels) // PATTERN_BANDS * PATTERN_BANDS].reshape(PATTERN_BANDS, -1, mels.shape[1]).mean(1)
                out.append((bands - bands.mean(axis=1, keepdims=True)).astype(np.float32))
            return out

    @property
    def frame_s(self) -> float:
        """The patterns' hop, in seconds."""
        return self._pattern_mel.mel.hop_length / self.sample_rate_hz

    def _mels(self, wave: np.ndarray, log_mel: LogMel | None = None) -> np.ndarray:
        log_mel = log_mel or self._log_mel
        if len(wave) < log_mel.min_samples:
            wave = np.pad(wave, (0, log_mel.min_samples - len(wave)))
        return log_mel(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))[None])[0].numpy()

    def _fingerprint(self, mels: np.ndarray) -> np.ndarray:
        """(n_mels, frames) dB -> (3 * n_mels,): band level minus clip level, band spread, band change."""
        if self._floor_db is not None and mels.shape[1] > 1:
            floor = mels.max() - self._floor_db + 0.01
            sounding = mels.max(axis=0) > floor
            if sounding.sum() >= 2:
                mels = mels[:, sounding]
        change = np.abs(np.diff(mels, axis=1)).mean(axis=1) if mels.shape[1] > 1 else np.zeros(len(mels))
        return np.concatenate([mels.mean(axis=1) - mels.mean(), mels.std(axis=1), change])


class ModelEmbedder:
    """Waves cut to the model's clip length -> (B, dims): the input of its classification head."""

    name = "model"

    def __init__(self, loaded: LoadedCheckpoint, *, device: str = "cpu") -> None:
        self.loaded, self.device = loaded, device
        self.feature_cfg = loaded.feature_cfg
        self.sample_rate_hz = loaded.feature_cfg.sample_rate_hz
        self._features = feature_transform(loaded.feature_cfg)
        head = loaded.model.get_submodule(loaded.model.head_name)
        self._captured: list[torch.Tensor] = []
        head.register_forward_pre_hook(lambda module, inputs: self._captured.append(inputs[0].detach()))

    def read(self, path: str | Path) -> np.ndarray:
        return clip_waveform(path, self.feature_cfg)

    def __call__(self, waves: list[np.ndarray]) -> np.ndarray:
        n_samples = self.feature_cfg.n_samples
        batch = torch.from_numpy(np.stack([_fit(wave, n_samples) for wave in waves]).astype(np.float32))
        with torch.no_grad():
            features = self._features(batch)
            if self.loaded.norm_stats:
                features = normalize(features, self.loaded.norm_stats)
            self._captured.clear()
            self.loaded.model(features.to(self.device))
        return self._captured[-1].flatten(1).float().cpu().numpy()


def _fit(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """A planted copy keeps the model's clip length: cut or zero-padded at the end."""
    return wave[:n_samples] if len(wave) >= n_samples else np.pad(wave, (0, n_samples - len(wave)))


def draw_copy(rng: np.random.Generator, *, max_gain_db: float, max_shift_s: float) -> tuple[float, float]:
    """A copy's (gain in dB, shift as a share of max_shift_s in [-1, 1]), drawn uniformly."""
    return float(rng.uniform(-max_gain_db, max_gain_db)), float(rng.uniform(-1, 1))


def plant_copy(wave: np.ndarray, *, sample_rate_hz: int, gain_db: float, shift: float, max_shift_s: float) -> np.ndarray:
    """The same recording gain_db louder, starting shift * max_shift_s later (silence before it)
    or earlier (its first part cut off). A small shift is small for the clip too: never more
    than MAX_SHIFT_SHARE of its length. The draw is apart (draw_copy), so one draw can be
    applied to the same clip read at two sample rates."""
    most = min(max_shift_s * sample_rate_hz, MAX_SHIFT_SHARE * len(wave))
    samples = int(round(shift * most))
    if samples > 0:
        moved = np.concatenate([np.zeros(samples, dtype=wave.dtype), wave])
    else:
        moved = wave[min(-samples, max(len(wave) - 1, 0)):]
    return (moved * 10 ** (gain_db / 20)).astype(np.float32)
