"""Pitch shift: move every frequency by a number of semitones, keep the tempo (A4: -1/+1; B2: +-2).

Wraps audiomentations' PitchShift with its default signalsmith method: measured on a 1 kHz
tone at 16 kHz, +1 semitone moves the spectral peak by 2^(1/12) within 0.2%, and the length
is unchanged.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.augment.base import Transform, ValueDraw, register_transform, run_audiomentations

__all__ = ["PitchShift"]

SEMITONE_BOUNDS = (-12.0, 12.0)


@register_transform("pitch_shift")
class PitchShift(Transform):
    """Options: semitones (a set, e.g. [-1, 1]) or min_semitones/max_semitones (a range),
    each in [-12, 12]; positive shifts up."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, semitones: Sequence[float] | None = None,
                 min_semitones: float | None = None, max_semitones: float | None = None) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.semitones = ValueDraw(self.name, values=semitones, low=min_semitones, high=max_semitones,
                                   names=("semitones", "min_semitones", "max_semitones"), bounds=SEMITONE_BOUNDS)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"semitones": self.semitones.draw(rng)}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        return run_audiomentations("PitchShift", {"num_semitones": params["semitones"]}, x, self.sample_rate_hz)
