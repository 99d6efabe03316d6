"""Shared test helpers: small synthetic audio written to real files, a session held by another process."""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing downloads at test time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def tone(freq_hz: float, *, seconds: float = 1.0, sample_rate_hz: int = 16000, amplitude: float = 0.3,
         channels: int = 1) -> np.ndarray:
    """A pure tone of known frequency, (samples,) or (samples, channels)."""
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    wave = amplitude * np.sin(2 * np.pi * freq_hz * t)
    return wave if channels == 1 else np.stack([wave] * channels, axis=1)


def write_wav(path: Path, wave: np.ndarray, sample_rate_hz: int = 16000, subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave, sample_rate_hz, subtype=subtype)
    return path


def write_corrupt_set(folder: Path) -> dict[str, str]:
    """Files that must not be imported as usable audio -> the reason kind expected."""
    folder.mkdir(parents=True, exist_ok=True)
    good = write_wav(folder / "_tmp_good.wav", tone(440))
    header = good.read_bytes()
    good.unlink()
    (folder / "truncated_header.wav").write_bytes(header[:30])
    (folder / "text_renamed.wav").write_text("this is a text file, not audio\n" * 20)
    write_wav(folder / "zero_samples.wav", np.zeros(0))
    nan_wave = tone(440)
    nan_wave[100:200] = np.nan
    write_wav(folder / "nan_samples.wav", nan_wave, subtype="FLOAT")
    write_wav(folder / "silent.wav", np.zeros(16000))
    return {"truncated_header.wav": "unreadable", "text_renamed.wav": "unreadable", "zero_samples.wav": "empty",
            "nan_samples.wav": "corrupt", "silent.wav": "silent"}


def write_odd_but_valid_set(folder: Path) -> dict[str, tuple[int, int]]:
    """Valid audio in unusual formats -> (sample rate, channels) expected."""
    write_wav(folder / "stereo_8k.wav", tone(300, sample_rate_hz=8000, channels=2), 8000)
    write_wav(folder / "hires_96k_24bit.wav", tone(1000, sample_rate_hz=96000), 96000, subtype="PCM_24")
    return {"stereo_8k.wav": (8000, 2), "hires_96k_24bit.wav": (96000, 1)}


_HOLDER = """
import sys, time
from core.store import Store
store = Store.open(sys.argv[1])
store.record_decision(int(store.clips().id.iloc[0]), annotator="holder", action="relabel", new_label="changed_by_holder")
print("ready", flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def held_by_another_process(session: Path) -> Iterator[int]:
    """A second real process opens the session as its writer (as a server or a CLI job would),
    commits one decision (its first clip relabelled "changed_by_holder" by "holder") and holds
    the session until the block ends; yields that process's pid."""
    repo = Path(__file__).resolve().parent.parent
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(session)], cwd=repo, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready", "the holding process did not open the session"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=30)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
