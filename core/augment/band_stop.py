"""Band-stop: remove one narrow band, as distance and obstacles do (A4: Q about 4, centre in 1-2 kHz).

Our own filter, not audiomentations' BandStopFilter. Measured on white noise at 16 kHz with
centre 1.5 kHz and bandwidth centre/4: audiomentations' Butterworth design (24 dB/octave)
lowers the energy inside that band by only 11 dB on average (its band edges are the -3 dB
points), so a "Q 4" band is not removed. Here the band [centre - centre/(2Q), centre +
centre/(2Q)] is the stop band of a Chebyshev type II design (scipy iirdesign): flat outside,
at least attenuation_db inside. Measured: -32 dB inside, within 0.2 dB beyond the transition
bands (half a bandwidth each side), about 3 ms per 10 s clip including the design.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from core.augment.base import Transform, check_number, check_pair, register_transform

__all__ = ["BandStop", "stop_band_hz"]

# Ripple allowed outside the transition bands, dB: the passband of a Chebyshev II design is
# monotonic, so this bounds how much of the neighbouring spectrum the filter may touch.
PASSBAND_RIPPLE_DB = 0.5


def stop_band_hz(center_hz: float, q: float) -> tuple[float, float]:
    """The band removed: width center_hz / q, centred on center_hz, in Hz."""
    half = center_hz / (2 * q)
    return center_hz - half, center_hz + half


def _pass_edges_hz(center_hz: float, q: float) -> tuple[float, float]:
    """Where the filter is flat again: half a bandwidth beyond each stop-band edge."""
    low, high = stop_band_hz(center_hz, q)
    width = high - low
    return low - width / 2, high + width / 2


@register_transform("band_stop")
class BandStop(Transform):
    """Options: min_center_hz/max_center_hz (default 1000-2000, centre drawn uniformly on a log
    scale), q (centre / bandwidth, default 4, in [1, 50]), attenuation_db (the least drop
    inside the band, default 30, in [6, 80])."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, min_center_hz: float = 1000.0, max_center_hz: float = 2000.0,
                 q: float = 4.0, attenuation_db: float = 30.0) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.q = check_number(self.name, "q", q, low=1.0, high=50.0)
        self.attenuation_db = check_number(self.name, "attenuation_db", attenuation_db, low=6.0, high=80.0)
        # The upper transition band must end below Nyquist: centre * (1 + 1/q) < sample_rate / 2.
        highest = sample_rate_hz / 2 / (1 + 1 / self.q) * 0.99
        self.center_hz = check_pair(self.name, "min_center_hz", min_center_hz, "max_center_hz", max_center_hz,
                                    bounds=(20.0, round(highest, 1)))

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        low, high = self.center_hz
        center = math.exp(rng.uniform(math.log(low), math.log(high)))
        return {"center_hz": center, "q": self.q, "attenuation_db": self.attenuation_db}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        # Imported here: scipy.signal costs every child job (training, audit, search) 1.5 s to import.
        from scipy import signal

        sos = signal.iirdesign(_pass_edges_hz(params["center_hz"], params["q"]),
                               stop_band_hz(params["center_hz"], params["q"]),
                               gpass=PASSBAND_RIPPLE_DB, gstop=params["attenuation_db"], ftype="cheby2",
                               output="sos", fs=self.sample_rate_hz)
        if x.size == 0:
            return x.astype(np.float32)
        # Start in the steady state for the first sample, so a clip that starts loud gets no click.
        filtered, _ = signal.sosfilt(sos, x, zi=signal.sosfilt_zi(sos) * x[0])
        return filtered.astype(np.float32)
