"""Shared test helpers: small synthetic audio written to real files, a session held by another process,
and the small demo session (imported, and trained once) that modules copy instead of building their own."""
from __future__ import annotations

import contextlib
import os
import shutil
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


# --- the small demo, built and trained once per test run ------------------------------------
# The demo's plan at 12 clips per class (72 clips, planted errors in every split) with 2-5 s
# clips instead of 3-10 s: demo-fast's auto clip length becomes 5 s, so every model trained or
# fine-tuned from it costs half as much.
SMALL_DEMO = {"clips_per_class": 12, "duration_range_s": (2.0, 5.0)}
# One epoch of a narrow CNN on 1 s of each clip: a study's trial costs seconds, not minutes.
TINY_CNN = ["features.max_length_s=1.0", "features.n_mels=32", "model.cnn_channels=[8, 16, 16, 16]", "train.batch_size=16",
            "train.epochs=1", "train.early_stopping_patience=0"]
# Gates anyone passes: the baseline is the model a person may promote with the ordinary button.
LENIENT_GATES = ["gates.min_key_class_accuracy=0", "gates.min_class_accuracy=0", "gates.max_relative_regression=1"]


def copy_session(source: Path, target: Path) -> Path:
    """A session folder of its own, copied from a closed one (its runs travel with it: the store
    keeps run folders relative to the session). Returns target."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("workbench.lock", "server-test.log"))
    return target


@pytest.fixture(scope="session")
def small_demo_session(tmp_path_factory) -> Path:
    """The small demo imported into a session, with the sirens rules; no run. Never write to it:
    copy it (copy_session)."""
    from pipelines.demo import build_demo_session
    root = tmp_path_factory.mktemp("small-demo")
    build_demo_session(session_dir=root / "session", audio_dir=root / "audio", progress=False, **SMALL_DEMO)
    return root / "session"


@pytest.fixture(scope="session")
def trained_demo_session(tmp_path_factory, small_demo_session) -> Path:
    """The small demo with one succeeded demo-fast run: the preset's architecture, 2 epochs,
    lenient gates; not audited, not in production. Never write to it: copy it (copy_session)."""
    from core.store import Store
    from pipelines.finetune import finetune
    session = copy_session(small_demo_session, tmp_path_factory.mktemp("trained-demo") / "session")
    with Store.open(session) as store:
        outcome = finetune(store, preset="demo-fast", overrides=["train.epochs=2", *LENIENT_GATES], init_from="none",
                           progress=False)
        assert outcome.status == "succeeded", outcome.result
    return session
