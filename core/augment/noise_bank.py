"""A folder of background sounds in MUSAN layout (music/, speech/, noise/) for background_noise (B2).

Files are listed once (every readable file under each category folder, any depth) and read
later only in the stretch a clip needs, starting at an offset and wrapping around the file's
end, so a three-minute music file costs a 10 s read, and a short noise is looped to length.
Files soundfile cannot open are left out and listed in `skipped` with the reason.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from core.audio import resample
from core.config import ConfigError

__all__ = ["CATEGORIES", "NoiseBank"]

CATEGORIES = ("music", "speech", "noise")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class NoiseBank:
    """folder: the bank's root; sample_rate_hz: the rate segments come back at.

    files maps each category present to its files (paths relative to folder, sorted).
    """

    def __init__(self, folder: str | Path, *, sample_rate_hz: int) -> None:
        self.folder = Path(folder).expanduser().resolve()
        self.sample_rate_hz = sample_rate_hz
        if not self.folder.is_dir():
            raise ConfigError(f"noise_bank: {str(folder)!r} is not a folder; expected one in MUSAN layout "
                              f"with sub-folders {', '.join(CATEGORIES)}")
        self.files: dict[str, list[str]] = {}
        self.skipped: dict[str, str] = {}
        self._info: dict[str, tuple[int, int]] = {}  # relative path -> (frames, sample rate)
        for category in CATEGORIES:
            found = []
            for path in sorted((self.folder / category).rglob("*")):
                if path.suffix.lower() not in AUDIO_SUFFIXES or not path.is_file():
                    continue
                relative = str(path.relative_to(self.folder))
                try:
                    info = sf.info(str(path))
                except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                    self.skipped[relative] = str(exc)
                    continue
                if info.frames == 0:
                    self.skipped[relative] = "empty: no audio samples"
                    continue
                self._info[relative] = (info.frames, info.samplerate)
                found.append(relative)
            if found:
                self.files[category] = found
        if not self.files:
            raise ConfigError(f"noise_bank: {self.folder} holds no readable audio ({', '.join(AUDIO_SUFFIXES)}) "
                              f"under {', '.join(c + '/' for c in CATEGORIES)} (MUSAN layout)")

    @classmethod
    def unopened(cls, folder: str | Path) -> NoiseBank:
        """A bank named but not read: its folder may be relative to a session not known yet. Every
        category counts as present and it holds no file, so a preset's augmentations can be checked
        when it is loaded (ExperimentConfig); ExperimentConfig.for_session opens the real one."""
        bank = cls.__new__(cls)
        bank.folder, bank.sample_rate_hz = Path(folder), 0
        bank.files = {category: [] for category in CATEGORIES}
        bank.skipped, bank._info = {}, {}
        return bank

    def duration_s(self, relative: str) -> float:
        frames, rate = self._info[relative]
        return frames / rate

    def segment(self, relative: str, *, offset_s: float, n_samples: int) -> np.ndarray:
        """n_samples of the file at sample_rate_hz, mono float32, from offset_s on, looping.

        The stretch is read at the file's own rate and resampled, so a bank at 44.1 kHz costs
        a resample per call but no warning and no whole-file decode.
        """
        frames, rate = self._info[relative]
        needed = math.ceil(n_samples * rate / self.sample_rate_hz) + 1
        start = int(offset_s * rate) % frames
        parts, remaining = [], needed
        with sf.SoundFile(os.fspath(self.folder / relative)) as handle:
            while remaining > 0:
                handle.seek(start)
                block = handle.read(min(remaining, frames - start), dtype="float32", always_2d=True)
                parts.append(block.mean(axis=1))
                remaining -= block.shape[0]
                start = 0
        wave = resample(np.concatenate(parts), orig_hz=rate, target_hz=self.sample_rate_hz)
        return np.resize(wave, n_samples)  # resampling rounds the length: repeat or cut to exactly n
