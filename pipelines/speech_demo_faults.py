"""Hygiene faults planted in a built factorial set, the truth kept in clip metadata only (as the
siren demo keeps its planted label errors): what VAD hygiene (B6) and review should find.

- speech_leak: a NONSPEECH clip with a speech fragment (40-70% of its length, at about its own
  level) leaking in; its truth is `mixed`.
- mostly_silence: a SPEECH clip whose speech is kept over only 15-30% of its length, at one
  end, the background going on as before; its truth is `silence`.
- swapped_label: a clean clip given the other class.
Each is planted in about FAULT_SHARES of each split's clips. A faulty clip is rendered again from
its provenance (pipelines/factorial_render.py), so it differs from its clean self only by the fault.
Metadata: `true_label`, `label_error` and `kind` (clean or the fault), the answer-key columns that
training leaves out (pipelines/finetune.py).
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

from core.audio import load
from core.augment.noise_bank import NoiseBank
from pipelines.factorial import MANIFEST_NAME, read_plan
from pipelines.factorial_config import NONSPEECH, SPEECH, FactorialConfig
from pipelines.factorial_plan import MANIFEST_COLUMNS
from pipelines.factorial_render import mix_clip, peak_normalise

__all__ = ["FAULT_SHARES", "MIXED", "SILENCE", "plant_faults"]

FAULT_SHARES = {"speech_leak": 0.04, "mostly_silence": 0.04, "swapped_label": 0.03}
MIXED, SILENCE = "mixed", "silence"  # the truth of a leak and of a silent clip: the speech rules' tags
RAMP_S = 0.01

Speech = Callable[[np.random.Generator, int], np.ndarray]  # (rng, n samples) -> speech at the set's rate


def plant_faults(out_dir: Path, *, bank: NoiseBank, config: FactorialConfig, speech: Speech) -> dict[str, int]:
    """Plant the faults in the set at out_dir (its WAVs and manifest.csv); speech makes leak
    fragments, from voices that are none of the set's speakers. Returns clips per fault."""
    plan = read_plan(out_dir)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 23]))
    kind = pd.Series("clean", index=plan.index)
    for _, rows in plan.groupby("split"):
        for fault, label in (("speech_leak", NONSPEECH), ("mostly_silence", SPEECH)):
            pool = rows.index[(rows.label == label) & (kind[rows.index] == "clean")]
            kind[rng.choice(pool, size=_count(fault, len(pool)), replace=False)] = fault
        pool = rows.index[kind[rows.index] == "clean"]
        kind[rng.choice(pool, size=_count("swapped_label", len(pool)), replace=False)] = "swapped_label"
    for index in kind.index[kind.isin(["speech_leak", "mostly_silence"])]:
        _rewrite(out_dir, plan.loc[index], kind[index], rng=rng, bank=bank, config=config, speech=speech)
    manifest = plan[list(MANIFEST_COLUMNS)].copy()
    swapped = kind == "swapped_label"
    manifest.loc[swapped, "label"] = manifest.loc[swapped, "label"].map({SPEECH: NONSPEECH, NONSPEECH: SPEECH})
    truth = plan.label.where(~kind.isin(["speech_leak", "mostly_silence"]),
                             kind.map({"speech_leak": MIXED, "mostly_silence": SILENCE}))
    manifest = manifest.assign(true_label=truth, label_error=manifest.label != truth, kind=kind)
    manifest.to_csv(out_dir / MANIFEST_NAME, index=False)
    return {fault: int((kind == fault).sum()) for fault in FAULT_SHARES}


def _count(fault: str, available: int) -> int:
    """About FAULT_SHARES[fault] of the clips, at least one where there are any."""
    return min(available, max(1, round(FAULT_SHARES[fault] * available)))


def _rewrite(out_dir: Path, row: pd.Series, fault: str, *, rng: np.random.Generator, bank: NoiseBank,
             config: FactorialConfig, speech: Speech) -> None:
    rate = config.sample_rate_hz
    window, mix, _ = mix_clip(row, wave=load(row.source_path, sample_rate_hz=rate), bank=bank, sample_rate_hz=rate)
    n = len(window)
    if fault == "mostly_silence":
        mix = mix - window * (1 - _kept(n, share=rng.uniform(0.15, 0.3), at_end=bool(rng.random() < 0.5), rate=rate))
    else:
        length = int(n * rng.uniform(0.4, 0.7))
        start = int(rng.integers(0, n - length + 1))
        fragment = speech(rng, length)
        level = np.sqrt(np.mean(window ** 2) / max(np.mean(fragment ** 2), 1e-12)) * 10 ** (rng.uniform(-3, 3) / 20)
        mix[start:start + length] += level * fragment
    sf.write(str(out_dir / row.path), peak_normalise(mix, peak_dbfs=config.peak_dbfs), rate, subtype="PCM_16")


def _kept(n: int, *, share: float, at_end: bool, rate: int) -> np.ndarray:
    """A 0/1 gain keeping share of n samples at the start or the end, with short ramps."""
    kept = max(1, int(share * n))
    ramp = min(int(RAMP_S * rate), kept)
    gain = np.zeros(n, dtype=np.float32)
    gain[:kept] = 1.0
    gain[kept - ramp:kept] = np.linspace(1.0, 0.0, ramp)
    return gain[::-1].copy() if at_end else gain
