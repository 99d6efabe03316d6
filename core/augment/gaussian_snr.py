"""White Gaussian noise at a signal-to-noise ratio drawn in dB.

Our own: audiomentations' AddGaussianSNR draws the noise from the global np.random inside
apply(), so what it applied cannot be recorded and replayed. Here the draw records a seed for
the noise, and the noise is scaled on its realised power, so the SNR is exact, not expected.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from core.augment.base import Transform, check_pair, register_transform

__all__ = ["GaussianSNR", "mix_at_snr"]

SNR_BOUNDS_DB = (-30.0, 80.0)


def mix_at_snr(x: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """x + noise scaled so that 10 log10(power(x) / power(noise)) = snr_db, float32.

    A silent x or silent noise comes back unchanged: no level makes that ratio.
    """
    signal_power = float(np.mean(np.square(x, dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
    if signal_power == 0.0 or noise_power == 0.0:
        return x.astype(np.float32, copy=True)
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return (x + scale * noise).astype(np.float32)


@register_transform("gaussian_snr")
class GaussianSNR(Transform):
    """Options: min_snr_db/max_snr_db in [-30, 80] (default 5..40); drawn uniformly in dB."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, min_snr_db: float = 5.0, max_snr_db: float = 40.0) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.snr_db = check_pair(self.name, "min_snr_db", min_snr_db, "max_snr_db", max_snr_db, bounds=SNR_BOUNDS_DB)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        return {"snr_db": float(rng.uniform(*self.snr_db)), "noise_seed": int(rng.integers(2**63))}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        noise = np.random.default_rng(params["noise_seed"]).standard_normal(x.shape[-1])
        return mix_at_snr(x, noise, params["snr_db"])
