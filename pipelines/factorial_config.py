"""What the factorial builder (B7) builds: its config, its classes and splits.

Shared by the builder's modules (pipelines/factorial*.py), the CLI and the UI, so the options'
help text and their checks live once, here. Light to import (the CLI reads the help text of
every command at start): what the checks need from core.augment is imported when one runs.
"""
from __future__ import annotations

import dataclasses

from core.config import Config, ConfigError, check_range, option

__all__ = ["CLASSES", "FactorialConfig", "NONSPEECH", "SAMPLE_RATES_HZ", "SPEECH", "SPLIT_SHARES"]

# The labels of the binary task, as the hygiene config (core.config.HygieneConfig) names them.
SPEECH, NONSPEECH = "SPEECH", "NONSPEECH"
CLASSES = (SPEECH, NONSPEECH)
SPLIT_SHARES = {"train": 0.6, "val": 0.2, "test": 0.2}  # B7: 60/20/20 by source file
SAMPLE_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
VAD_MODES, VAD_FRAMES_MS = (0, 1, 2, 3), (10, 20, 30)
DURATION_BOUNDS_MS = (50, 60_000)


@dataclasses.dataclass
class FactorialConfig(Config):
    """The cells, their sizes and how clips are cut and mixed; saved beside every build."""
    durations_ms: list[int] = option(factory=lambda: [200, 300, 500, 1000],
                                     help="Clip durations in ms, one cell each (B7: 200, 300, 500, 1000).")
    snrs_db: list[float] = option(factory=lambda: [-5.0, 0.0, 5.0, 10.0, 20.0],
                                  help="Signal-to-background ratios in dB, one cell each (B7: -5, 0, 5, 10, 20).")
    clips_per_cell: int = option(25, "Clips in each duration x SNR x class cell (B7: 25-75), split 60/20/20 by "
                                     "source.")
    sample_rate_hz: int = option(16000, "Rate of the written clips; no source may be sampled below it.")
    speech_background: list[str] = option(factory=lambda: ["music", "noise"],
                                          help="Noise-bank categories mixed under SPEECH clips.")
    nonspeech_background: list[str] = option(factory=lambda: ["music", "noise"],
                                             help="Noise-bank categories mixed under NONSPEECH clips (not speech: "
                                                  "MUSAN speech under a NONSPEECH clip would make it speech).")
    vad_mode: int = option(3, "WebRTC VAD aggressiveness (0-3) that places SPEECH windows on speech.")
    vad_frame_ms: int = option(30, "Frame of the VAD and of the signal check: 10, 20 or 30 ms.")
    min_active_share: float = option(0.5, "A window is cut when more than this share of its frames is active: "
                                          "speech (VAD) in SPEECH sources, signal in NONSPEECH ones.")
    signal_floor_dbfs: float = option(-60.0, "A NONSPEECH frame has signal when its RMS is above this level.")
    peak_dbfs: float = option(-1.0, "Every written clip is peak-normalised to this level.")
    seed: int = option(0, "Seed of every draw: splits, windows, backgrounds.")

    def __post_init__(self) -> None:
        from core.augment.noise_bank import CATEGORIES  # here, not at the top: see the module doc
        self._check_cells()
        check_range("clips_per_cell", self.clips_per_cell, low=1, high=10_000)
        if self.sample_rate_hz not in SAMPLE_RATES_HZ:
            raise ConfigError(f"sample_rate_hz: {self.sample_rate_hz!r} is not one of "
                              f"{', '.join(map(str, SAMPLE_RATES_HZ))}")
        for name in ("speech_background", "nonspeech_background"):
            categories = getattr(self, name)
            if not categories or set(categories) - set(CATEGORIES) or len(set(categories)) != len(categories):
                raise ConfigError(f"{name}: {categories!r} must list distinct noise-bank categories from "
                                  f"{', '.join(CATEGORIES)}")
        if self.vad_mode not in VAD_MODES:
            raise ConfigError(f"vad_mode: {self.vad_mode!r} must be 0, 1, 2 or 3")
        if self.vad_frame_ms not in VAD_FRAMES_MS:
            raise ConfigError(f"vad_frame_ms: {self.vad_frame_ms!r} must be 10, 20 or 30")
        check_range("min_active_share", self.min_active_share, low=0, high=1, high_inclusive=False)
        check_range("signal_floor_dbfs", self.signal_floor_dbfs, low=-120, high=0)
        check_range("peak_dbfs", self.peak_dbfs, low=-40, high=0)
        check_range("seed", self.seed, low=0, high=2**63 - 1)

    def _check_cells(self) -> None:
        from core.augment.gaussian_snr import SNR_BOUNDS_DB
        for name, values, bounds in (("durations_ms", self.durations_ms, DURATION_BOUNDS_MS),
                                     ("snrs_db", self.snrs_db, SNR_BOUNDS_DB)):
            if not values or len(set(values)) != len(values):
                raise ConfigError(f"{name}: {values!r} must be a non-empty list of distinct values")
            for value in values:
                check_range(name, value, low=bounds[0], high=bounds[1])

    def background(self, label: str) -> list[str]:
        """The noise-bank categories mixed under clips of label."""
        return self.speech_background if label == SPEECH else self.nonspeech_background

    def split_counts(self) -> dict[str, int]:
        """Clips of each split in one cell: 60/20/20 of clips_per_cell, train taking the rounding."""
        val = round(SPLIT_SHARES["val"] * self.clips_per_cell)
        test = round(SPLIT_SHARES["test"] * self.clips_per_cell)
        return {"train": self.clips_per_cell - val - test, "val": val, "test": test}
