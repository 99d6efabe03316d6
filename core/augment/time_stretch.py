"""Time-stretch: change the tempo, keep the pitch (A4: 0.95x / 1.05x; B2: 0.9-1.1).

Wraps audiomentations' TimeStretch with its default signalsmith stretcher (python-stretch):
measured on a 10 s clip at 16 kHz it gives the length 1/rate to the sample, and it is the
higher-quality of audiomentations' two methods. The output length changes (rate 1.05 ->
1/1.05 of the input); training crops or pads it back to the feature length afterwards.
Cost: about 30 ms per 10 s clip on one core, and the stretcher holds the GIL, so loader
threads do not share it out: the main reason a run may move augmentation offline.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.augment.base import Transform, ValueDraw, register_transform, run_audiomentations

__all__ = ["TimeStretch"]

RATE_BOUNDS = (0.5, 2.0)


@register_transform("time_stretch")
class TimeStretch(Transform):
    """rate > 1 speeds up (shorter), < 1 slows down (longer). Options: rates (a set) or
    min_rate/max_rate (a range), each in [0.5, 2.0]."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, rates: Sequence[float] | None = None,
                 min_rate: float | None = None, max_rate: float | None = None) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.rate = ValueDraw(self.name, values=rates, low=min_rate, high=max_rate,
                              names=("rates", "min_rate", "max_rate"), bounds=RATE_BOUNDS)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"rate": self.rate.draw(rng)}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        return run_audiomentations("TimeStretch", {"rate": params["rate"]}, x, self.sample_rate_hz,
                                   leave_length_unchanged=False)

    def output_length(self, n_samples: int, params: dict[str, Any]) -> int:
        return int(round(n_samples / params["rate"]))

    def time_scale(self, params: dict[str, Any]) -> float:
        return float(params["rate"])
