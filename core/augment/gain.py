"""Random gain: scale the whole clip by a number of dB (level invariance).

Wraps audiomentations' Gain (a multiplication by 10^(gain_db/20)).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core.augment.base import Transform, check_pair, register_transform, run_audiomentations

__all__ = ["Gain"]

GAIN_BOUNDS_DB = (-60.0, 24.0)


@register_transform("gain")
class Gain(Transform):
    """Options: min_gain_db, max_gain_db in [-60, 24] (default -6..6); drawn uniformly in dB."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, min_gain_db: float = -6.0, max_gain_db: float = 6.0) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.gain_db = check_pair(self.name, "min_gain_db", min_gain_db, "max_gain_db", max_gain_db,
                                  bounds=GAIN_BOUNDS_DB)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"gain_db": float(rng.uniform(*self.gain_db))}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        return run_audiomentations("Gain", {"amplitude_ratio": 10 ** (params["gain_db"] / 20)}, x, self.sample_rate_hz)
