"""Rendering planned factorial clips: cut the window, mix the background at the exact SNR, peak-normalise.

The SNR is set on the window's and the background stretch's realised power
(core.augment.gaussian_snr.mix_at_snr), then the mix is scaled as a whole to the peak level, so
the written file holds the planned SNR exactly (up to 16-bit rounding).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from core.audio import load
from core.augment.gaussian_snr import mix_at_snr
from core.augment.noise_bank import NoiseBank
from pipelines.factorial_sources import FactorialError

__all__ = ["mix_clip", "peak_normalise", "write_clips"]

SILENT_POWER = 1e-10  # -100 dBFS: a background stretch this quiet cannot set an SNR
MAX_NOISE_TRIES = 20


def mix_clip(row, *, wave: np.ndarray, bank: NoiseBank, sample_rate_hz: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(window, window + background at row.snr_db, the background offset used) for one planned
    clip; wave is its whole source at sample_rate_hz. A silent background stretch is skipped by
    moving on one clip length at a time through the file."""
    n = int(round(row.duration_ms * sample_rate_hz / 1000))
    start = int(round(row.window_start_s * sample_rate_hz))
    window = wave[start:start + n].astype(np.float32)
    offset_s = row.noise_offset_s
    for _ in range(MAX_NOISE_TRIES):
        noise = bank.segment(row.noise_file, offset_s=offset_s, n_samples=n)
        if np.mean(np.square(noise, dtype=np.float64)) > SILENT_POWER:
            return window, mix_at_snr(window, noise, row.snr_db), offset_s
        offset_s = (offset_s + row.duration_ms / 1000) % bank.duration_s(row.noise_file)
    raise FactorialError(f"noise bank file {row.noise_file} is silent wherever it was tried: trim its silence "
                         "or take it out of the bank")


def peak_normalise(wave: np.ndarray, *, peak_dbfs: float) -> np.ndarray:
    """wave scaled so its largest magnitude is peak_dbfs (a scale of both parts of a mix: the SNR stays)."""
    return (wave * (10 ** (peak_dbfs / 20) / max(float(np.max(np.abs(wave))), 1e-12))).astype(np.float32)


def write_clips(plan: pd.DataFrame, out_dir: Path, *, bank: NoiseBank, sample_rate_hz: int, peak_dbfs: float,
                progress: bool) -> pd.DataFrame:
    """Write every planned clip under out_dir (16-bit PCM), loading each source once; returns the
    plan with the background offsets actually used."""
    plan = plan.copy()
    bar = tqdm(total=len(plan), desc="writing factorial clips", unit="clip", disable=not progress)
    with bar:
        for source_path, rows in plan.groupby("source_path", sort=False):
            wave = load(source_path, sample_rate_hz=sample_rate_hz)
            for index, row in zip(rows.index, rows.itertuples(index=False)):
                _, mix, offset_s = mix_clip(row, wave=wave, bank=bank, sample_rate_hz=sample_rate_hz)
                plan.at[index, "noise_offset_s"] = offset_s
                target = out_dir / row.path
                target.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(target), peak_normalise(mix, peak_dbfs=peak_dbfs), sample_rate_hz, subtype="PCM_16")
                bar.update()
    return plan
