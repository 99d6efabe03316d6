"""The factorial plan: every clip of every duration x SNR x class cell, drawn before any is written.

Each cell takes 60/20/20 of its clips from the train/val/test split's sources. Within a split, the
windows of one duration are shuffled once and dealt to the SNR cells in turn, so a window is
used at one SNR while the split holds enough for all of them, and repeats across SNR levels
(never within a cell) when it does not. A cell whose split holds fewer windows than it needs is
refused, before anything is written, in a message naming the cell and what is short.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from core.augment.noise_bank import NoiseBank
from pipelines.factorial_config import CLASSES, SPEECH, FactorialConfig
from pipelines.factorial_sources import FactorialError, Source
from pipelines.factorial_windows import Windows

__all__ = ["MANIFEST_COLUMNS", "PROVENANCE_COLUMNS", "count_table", "plan_clips"]

# What the session imports: the importer's own columns, then clip metadata (breakdowns cover it).
MANIFEST_COLUMNS = ("path", "label", "split", "group", "duration_s", "sample_rate_hz", "duration_ms", "snr_db",
                    "source_file", "speaker", "source_label", "noise_category")
# How each clip was made, beside the manifest: enough to render it again.
PROVENANCE_COLUMNS = ("path", "source_path", "window_start_s", "duration_ms", "noise_file", "noise_offset_s",
                      "snr_db")


def plan_clips(sources: Sequence[Source], windows: Sequence[Windows], splits: Sequence[str],
               groups: Sequence[str], *, bank: NoiseBank, config: FactorialConfig) -> pd.DataFrame:
    """One row per clip (MANIFEST_COLUMNS + PROVENANCE_COLUMNS), in cell order. Raises
    FactorialError naming the first cell that cannot be filled."""
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 11]))
    rows, short = [], []
    for label in CLASSES:
        for duration in config.durations_ms:
            for split, needed in config.split_counts().items():
                pool = [(i, start) for i, (source, found) in enumerate(zip(sources, windows))
                        if source.label == label and splits[i] == split for start in found.starts_s[duration]]
                if len(pool) < needed:
                    short.append((label, duration, split, len(pool), needed))
                    continue
                order = rng.permutation(len(pool))
                for k, snr in enumerate(config.snrs_db):
                    for j in range(needed):
                        i, start = pool[order[(k * needed + j) % len(pool)]]
                        rows.append(_row(sources[i], group=groups[i], split=split, start_s=start, duration_ms=duration,
                                         snr_db=snr, index=j, rng=rng, bank=bank, config=config))
    if short:
        raise FactorialError(_shortfall(short, config))
    return pd.DataFrame(rows, columns=list(dict.fromkeys(MANIFEST_COLUMNS + PROVENANCE_COLUMNS)))


def _row(source: Source, *, group: str, split: str, start_s: float, duration_ms: int, snr_db: float, index: int,
         rng: np.random.Generator, bank: NoiseBank, config: FactorialConfig) -> dict:
    """One clip: its cell, its source window, and a background stretch drawn for its class."""
    categories = config.background(source.label)
    category = categories[int(rng.integers(len(categories)))]
    noise_file = bank.files[category][int(rng.integers(len(bank.files[category])))]
    name = f"{source.label}_{duration_ms}ms_{snr_db:+g}dB_{split}_{index:03d}.wav"
    return {"path": f"audio/{source.label}/{name}", "label": source.label, "split": split, "group": group,
            "duration_s": duration_ms / 1000, "sample_rate_hz": config.sample_rate_hz, "duration_ms": duration_ms,
            "snr_db": snr_db, "source_file": source.source_file, "speaker": source.speaker,
            "source_label": source.source_label, "noise_category": category, "source_path": str(source.path),
            "window_start_s": start_s, "noise_file": noise_file,
            "noise_offset_s": round(float(rng.uniform(0.0, bank.duration_s(noise_file))), 4)}


def _shortfall(short: list[tuple[str, int, str, int, int]], config: FactorialConfig) -> str:
    label, duration, split, available, needed = short[0]
    what = "speech" if label == SPEECH else "signal"
    cells = len({(label, duration) for label, duration, *_ in short}) * len(config.snrs_db)
    return (f"cell {duration} ms x {config.snrs_db[0]:g} dB x {label}: {available} windows of {duration} ms with "
            f"{what} available in the {split} split's sources, {needed} needed ({cells} cell(s) short in all): add "
            f"{label} source audio or lower clips_per_cell")


def count_table(plan: pd.DataFrame) -> list[str]:
    """The per-cell count table: one line per duration x SNR, train/val/test clips per class."""
    counts = plan.groupby(["duration_ms", "snr_db", "label", "split"]).size()
    lines = [f"{'duration':>8}  {'SNR':>6}  " + "  ".join(f"{label + ' train/val/test':>24}" for label in CLASSES)]
    for (duration, snr), _ in plan.groupby(["duration_ms", "snr_db"], sort=True):
        cells = ["/".join(str(counts.get((duration, snr, label, split), 0)) for split in ("train", "val", "test"))
                 for label in CLASSES]
        lines.append(f"{duration:>5} ms  {snr:>3g} dB  " + "  ".join(f"{cell:>24}" for cell in cells))
    return lines
