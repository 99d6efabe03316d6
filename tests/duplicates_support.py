"""A small session with planted near-duplicates: distinct clips of random tone bursts over faint
noise, and copies of some of them at another gain, shifted a little, in another split (leakage)
or the same one (a plain duplicate). Imported from a manifest, so the splits are the test's."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from conftest import write_wav
from core.clip_embedding import draw_copy, plant_copy
from core.store import Store
from pipelines.importing import import_dataset

RATE_HZ = 16000
SPLIT_OF = {"train": 18, "val": 8, "test": 10}  # distinct clips per split
# copy name -> (original, split of the copy)
PLANTED = {"copy_test_a.wav": ("train_00.wav", "test"), "copy_test_b.wav": ("train_05.wav", "test"),
           "copy_val_a.wav": ("train_09.wav", "val"), "copy_train_a.wav": ("train_12.wav", "train")}


def bursts(rng: np.random.Generator, seconds: float = 1.5) -> np.ndarray:
    """Five tone bursts of random pitch, onset and length over faint noise: every clip its own pattern."""
    t = np.arange(int(seconds * RATE_HZ)) / RATE_HZ
    wave = 0.003 * rng.standard_normal(len(t))
    for _ in range(5):
        start, length = rng.uniform(0, seconds - 0.2), rng.uniform(0.08, 0.4)
        on = (t >= start) & (t < start + length)
        wave[on] += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * rng.uniform(150, 5000) * t[on])
    return wave.astype(np.float32)


def build_duplicates_session(root: Path) -> Path:
    """The clips and their planted copies under root/audio, imported as root/session."""
    rng = np.random.default_rng(7)
    audio, rows, waves = root / "audio", [], {}
    for split, count in SPLIT_OF.items():
        for i in range(count):
            name = f"{split}_{i:02d}.wav"
            waves[name] = bursts(rng)
            rows.append((name, "tones" if i % 2 else "chirps", split))
    for name, (original, split) in PLANTED.items():
        gain_db, shift = draw_copy(rng, max_gain_db=6, max_shift_s=0.1)
        waves[name] = plant_copy(waves[original], sample_rate_hz=RATE_HZ, gain_db=gain_db, shift=shift, max_shift_s=0.1)
        rows.append((name, dict((r[0], r[1]) for r in rows)[original], split))
    for name, wave in waves.items():
        write_wav(audio / name, wave, RATE_HZ)
    manifest = pd.DataFrame(rows, columns=["path", "label", "split"]).assign(group=lambda f: f.path.str[:-4])
    manifest.to_csv(audio / "manifest.csv", index=False)
    with Store.open(root / "session") as store:
        import_dataset(store, audio / "manifest.csv", layout="manifest", name="bursts", progress=False)
    return root / "session"


def ids_by_name(store: Store) -> dict[str, int]:
    clips = store.clips()
    return {Path(path).name: int(clip_id) for path, clip_id in zip(clips.path, clips.id)}
