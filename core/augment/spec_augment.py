"""SpecAugment: frequency and time masks on a log-mel (B2: 2+2 masks, F=15, T=35; light variant
for very short clips F=10, T=5% of the length, p 0.5; D3: F=15, T=35, p 0.8).

Our own masks rather than torchaudio's FrequencyMasking/TimeMasking: those draw the mask from
torch's global generator inside the call, so what was masked could not be recorded or
replayed. The draw is the paper's: each mask's width uniform in [0, F] bins (or [0, T]
frames), its start uniform over the positions where it fits. Masked cells take the clip's
mean value (0 after normalisation, the paper's choice), so a mask adds no new level.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from core.augment.base import Transform, check_number, register_transform
from core.config import ConfigError

__all__ = ["SpecAugment"]


@register_transform("spec_augment")
class SpecAugment(Transform):
    """Options: freq_masks, time_masks (counts, default 2 and 2, in [0, 10]); freq_width (F, mel
    bins, default 15); time_width (T, frames, default 35) or time_width_fraction (T as a fraction
    of the clip's frames, e.g. 0.05; replaces time_width)."""

    domain = "spec"

    def __init__(self, *, sample_rate_hz: int, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2,
                 time_width: int | None = None, time_width_fraction: float | None = None) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.freq_masks = _count(self.name, "freq_masks", freq_masks)
        self.time_masks = _count(self.name, "time_masks", time_masks)
        self.freq_width = _count(self.name, "freq_width", freq_width, high=512)
        if time_width is not None and time_width_fraction is not None:
            raise ConfigError(f"augment {self.name}: give time_width (frames) or time_width_fraction, not both")
        self.time_width_fraction = None if time_width_fraction is None else check_number(
            self.name, "time_width_fraction", time_width_fraction, low=0.0, high=1.0)
        self.time_width = _count(self.name, "time_width", 35 if time_width is None else time_width, high=100000)

    def max_time_width(self, n_frames: int) -> int:
        """T in frames for a clip of n_frames."""
        if self.time_width_fraction is not None:
            return int(self.time_width_fraction * n_frames)
        return min(self.time_width, n_frames)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        n_mels, n_frames = shape[-2], shape[-1]
        return {"freq": _masks(rng, self.freq_masks, min(self.freq_width, n_mels), n_mels),
                "time": _masks(rng, self.time_masks, self.max_time_width(n_frames), n_frames)}

    def apply(self, x: torch.Tensor, params: dict[str, Any]) -> torch.Tensor:
        out = x.clone()
        fill = x.mean()
        for start, width in params["freq"]:
            out[..., start:start + width, :] = fill
        for start, width in params["time"]:
            out[..., start:start + width] = fill
        return out


def _masks(rng: np.random.Generator, count: int, max_width: int, size: int) -> list[list[int]]:
    """count [start, width] pairs: width uniform in [0, max_width], start where it fits."""
    masks = []
    for _ in range(count):
        width = int(rng.integers(0, max_width + 1))
        masks.append([int(rng.integers(0, size - width + 1)), width])
    return masks


def _count(transform: str, param: str, value: Any, *, high: int = 10) -> int:
    number = check_number(transform, param, value, low=0, high=high)
    if not number.is_integer():
        raise ConfigError(f"augment {transform}: {param}={value!r} must be a whole number in [0, {high}]")
    return int(number)
