"""Where a factorial clip may be cut from a source file: windows over active frames.

A SPEECH source's frames are active where WebRTC VAD hears speech; a NONSPEECH source's where
there is signal at all (frame RMS above a floor). A window of a cell's duration is cut when more
than `min_active_share` of the frames it covers are active ("most of the window"). A file's
windows of one duration never overlap, so no two clips of a cell share audio.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from pipelines.factorial_config import SPEECH, FactorialConfig

__all__ = ["Windows", "active_frames", "find_windows"]


@dataclasses.dataclass(frozen=True)
class Windows:
    """One source's usable audio: active seconds, and the start (s) of each window per duration."""
    active_s: float
    starts_s: dict[int, list[float]]


def find_windows(wave: np.ndarray, *, label: str, config: FactorialConfig) -> Windows:
    """The windows of every configured duration in wave (mono, at config.sample_rate_hz)."""
    active = active_frames(wave, label=label, config=config)
    frame_s = config.vad_frame_ms / 1000
    starts = {duration: _starts(active, n_samples=len(wave), duration_ms=duration, config=config)
              for duration in config.durations_ms}
    return Windows(active_s=float(active.sum()) * frame_s, starts_s=starts)


def active_frames(wave: np.ndarray, *, label: str, config: FactorialConfig) -> np.ndarray:
    """bool per vad_frame_ms frame: speech (WebRTC VAD) for SPEECH, signal for NONSPEECH."""
    if label == SPEECH:
        from core.vad import webrtc_frames  # imports webrtcvad: only where speech is placed
        return webrtc_frames(wave, config.sample_rate_hz, mode=config.vad_mode, frame_ms=config.vad_frame_ms)
    frame = config.sample_rate_hz * config.vad_frame_ms // 1000
    padded = np.pad(wave, (0, -len(wave) % frame)).reshape(-1, frame)
    rms = np.sqrt(np.mean(np.square(padded, dtype=np.float64), axis=1))
    return rms > 10 ** (config.signal_floor_dbfs / 20)


def _starts(active: np.ndarray, *, n_samples: int, duration_ms: int, config: FactorialConfig) -> list[float]:
    """Starts of non-overlapping windows, on the frame grid, left to right: the most a file holds."""
    frame_ms = config.vad_frame_ms
    covered = math.ceil(duration_ms / frame_ms)  # frames a window touches
    needed = duration_ms * config.sample_rate_hz // 1000
    fits = (n_samples - needed) * 1000 // (config.sample_rate_hz * frame_ms) + 1 if n_samples >= needed else 0
    fits = min(fits, len(active) - covered + 1)
    if fits <= 0:
        return []
    counts = np.convolve(active.astype(np.int32), np.ones(covered, dtype=np.int32), mode="valid")[:fits]
    good = counts > config.min_active_share * covered
    starts, frame = [], 0
    while frame < fits:
        if good[frame]:
            starts.append(frame * frame_ms / 1000)
            frame += covered
        else:
            frame += 1
    return starts
