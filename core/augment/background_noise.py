"""Background sound from a noise bank, mixed at a random SNR (B2: MUSAN, -5..20 dB).

Our own rather than audiomentations' AddBackgroundNoise: in 0.43 that one decodes the file
on every call and, for a file not at the target rate, resamples the whole stretch with a
warning each time (measured 2.7 ms per 10 s clip from a 44.1 kHz file, 0.5 ms at 16 kHz), picks
the file with the global `random`, and sets the SNR on the stretch before looping it. Here a
category is drawn first (each present category equally likely, so the bank's biggest folder
does not dominate), then a file and an offset; the NoiseBank reads just that stretch, looped
to length, and the SNR is set on what is actually added.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.augment.base import Transform, check_pair, register_transform
from core.augment.gaussian_snr import SNR_BOUNDS_DB, mix_at_snr
from core.augment.noise_bank import CATEGORIES, NoiseBank
from core.config import ConfigError

__all__ = ["BackgroundNoise"]


@register_transform("background_noise")
class BackgroundNoise(Transform):
    """Options: min_snr_db/max_snr_db in [-30, 80] (default -5..20, B2), categories (default:
    every category the bank has; any of music, speech, noise). Needs the run's noise bank."""

    domain = "wave"

    def __init__(self, *, sample_rate_hz: int, noise_bank: NoiseBank | None, min_snr_db: float = -5.0,
                 max_snr_db: float = 20.0, categories: Sequence[str] | None = None) -> None:
        super().__init__(sample_rate_hz=sample_rate_hz)
        self.snr_db = check_pair(self.name, "min_snr_db", min_snr_db, "max_snr_db", max_snr_db, bounds=SNR_BOUNDS_DB)
        if noise_bank is None:
            raise ConfigError(f"augment {self.name}: needs a noise bank; set noise_bank to a folder in MUSAN "
                              f"layout ({', '.join(c + '/' for c in CATEGORIES)})")
        self.bank = noise_bank
        if categories is None:
            self.categories = sorted(noise_bank.files)
        else:
            if isinstance(categories, str) or not categories:
                raise ConfigError(f"augment {self.name}: categories={categories!r} must be a non-empty list "
                                  f"drawn from {', '.join(CATEGORIES)}")
            for category in categories:
                if category not in noise_bank.files:
                    raise ConfigError(f"augment {self.name}: categories has {category!r}, but the noise bank "
                                      f"{noise_bank.folder} has only {', '.join(sorted(noise_bank.files))}")
            self.categories = list(categories)

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        category = self.categories[int(rng.integers(len(self.categories)))]
        files = self.bank.files[category]
        file = files[int(rng.integers(len(files)))]
        return {"file": file, "offset_s": float(rng.uniform(0.0, self.bank.duration_s(file))),
                "snr_db": float(rng.uniform(*self.snr_db))}

    def apply(self, x: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        noise = self.bank.segment(params["file"], offset_s=params["offset_s"], n_samples=x.shape[-1])
        return mix_at_snr(x, noise, params["snr_db"])
