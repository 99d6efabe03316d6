"""Test helpers for the speech / non-speech track: real eSpeak NG speech and seeded non-speech sounds."""
from __future__ import annotations

import functools

import numpy as np

from core.audio import resample
from pipelines.speech_synth import SAMPLE_RATE_HZ, Voice, synthesize

PHRASE = "the quick brown fox jumps over the lazy dog"
VOICES = (Voice("en"), Voice("en-us+f2", rate_wpm=190, pitch=70), Voice("en+m3", rate_wpm=130, pitch=30))


@functools.lru_cache(maxsize=32)
def _spoken(text: str, voice: Voice) -> np.ndarray:
    return synthesize(text, voice=voice)


def speech(text: str = PHRASE, *, voice: Voice = VOICES[0], sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """text spoken by voice (eSpeak NG), float32 in [-1, 1] at sample_rate_hz; about 2.5 s for PHRASE."""
    return resample(_spoken(text, voice), orig_hz=SAMPLE_RATE_HZ, target_hz=sample_rate_hz)


def white_noise(rng: np.random.Generator, *, seconds: float, sample_rate_hz: int, level: float = 0.3) -> np.ndarray:
    return (level * rng.standard_normal(int(seconds * sample_rate_hz))).clip(-1, 1).astype(np.float32)
