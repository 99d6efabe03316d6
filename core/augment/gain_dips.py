"""Gain dips: short stretches where the sound drops away, as when something passes in front
of the source (A4: random 300-800 ms dips, "occlusion", on 30% of augmented copies).

Our own: audiomentations has no such transform (TimeMask silences a fraction of the clip,
GainTransition fades between two levels for the rest of it). Each dip is `duration` long at
`depth_db`, with ramps linear in dB of fade_ms centred on its two edges, so the part of the
dip below half its depth lasts exactly the drawn duration. Dips never overlap: the clip is cut
into one slot per dip and each dip is drawn inside its slot.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core.augment.base import Transform, check_number, check_pair, register_transform
from core.config import ConfigError

__all__ = ["GainDips"]


@register_transform("gain_dips")
class GainDips(Transform):
    """Options: min_duration_ms/max_duration_ms (default 300-800, in [10, 10000]),
    min_dips/max_dips per clip (default 1-2, in [1, 20]), min_depth_db/max_depth_db (default
    -30..-12, in [-80, 0]), fade_ms (default 10, shorter than min_duration_ms). A clip too short
    for a dip gets fewer dips, or none."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, min_duration_ms: float = 300.0, max_duration_ms: float = 800.0,
                 min_dips: int = 1, max_dips: int = 2, min_depth_db: float = -30.0, max_depth_db: float = -12.0,
                 fade_ms: float = 10.0) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.duration_ms = check_pair(self.name, "min_duration_ms", min_duration_ms, "max_duration_ms", max_duration_ms,
                                      bounds=(10.0, 10000.0))
        low, high = check_pair(self.name, "min_dips", min_dips, "max_dips", max_dips, bounds=(1, 20))
        if not (low.is_integer() and high.is_integer()):
            raise ConfigError(f"augment {self.name}: min_dips={min_dips!r} and max_dips={max_dips!r} must be whole numbers")
        self.dips = (int(low), int(high))
        self.depth_db = check_pair(self.name, "min_depth_db", min_depth_db, "max_depth_db", max_depth_db,
                                   bounds=(-80.0, 0.0))
        self.fade_ms = check_number(self.name, "fade_ms", fade_ms, low=0.0, high=self.duration_ms[0] - 1)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        n = shape[-1]
        per_ms = self.sample_rate_hz / 1000
        shortest, longest = (round(ms * per_ms) for ms in self.duration_ms)
        fade = round(self.fade_ms * per_ms)
        wanted = int(rng.integers(self.dips[0], self.dips[1] + 1))
        count = min(wanted, n // (shortest + fade + 1))  # every slot must hold the shortest dip with its ramps
        dips = []
        for slot in range(count):
            first, end = slot * n // count, (slot + 1) * n // count
            room = end - first - fade
            length = int(rng.integers(shortest, min(longest, room) + 1))
            start = int(rng.integers(first + fade // 2, end - (fade - fade // 2) - length + 1))
            dips.append({"start_s": start / self.sample_rate_hz, "duration_s": length / self.sample_rate_hz,
                         "depth_db": float(rng.uniform(*self.depth_db))})
        return {"dips": dips, "fade_s": fade / self.sample_rate_hz}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        positions = np.arange(x.shape[-1], dtype=np.float64)
        # Half a sample at least: np.interp needs increasing corners, and a step centred on the
        # edge keeps "below half depth" exactly the drawn duration.
        half_fade = max(params["fade_s"] * self.sample_rate_hz / 2, 0.5)
        envelope_db = np.zeros(x.shape[-1])
        for dip in params["dips"]:
            start = dip["start_s"] * self.sample_rate_hz
            end = start + dip["duration_s"] * self.sample_rate_hz
            corners = [start - half_fade, start + half_fade, end - half_fade, end + half_fade]
            depth = dip["depth_db"]
            envelope_db = np.minimum(envelope_db, np.interp(positions, corners, [0.0, depth, depth, 0.0]))
        return (x * 10 ** (envelope_db / 20)).astype(np.float32)
