"""Test helpers for the speech / non-speech track: real eSpeak NG speech and seeded non-speech sounds."""
from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from conftest import write_wav
from core.audio import resample
from core.store import Store
from pipelines.importing import import_dataset
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


# A small hygiene session: spoken clips, brown-noise clips and two planted faults.
HYGIENE_RATE_HZ = 16000
WORDS = ("seven", "hello there", "open the door", "three four", "good morning")
FAULTS = ("mostly_silence.wav", "speech_leak.wav")  # a SPEECH clip that is mostly silence, a word in NONSPEECH


def brown_noise(rng: np.random.Generator, seconds: float, level: float = 0.05) -> np.ndarray:
    walk = np.cumsum(rng.standard_normal(int(seconds * HYGIENE_RATE_HZ)))
    walk -= np.convolve(walk, np.ones(400) / 400, mode="same")  # no drift
    return (level * walk / np.abs(walk).max()).astype(np.float32)


def padded(wave: np.ndarray, seconds: float) -> np.ndarray:
    return np.pad(wave, (0, max(0, int(seconds * HYGIENE_RATE_HZ) - len(wave))))[: int(seconds * HYGIENE_RATE_HZ)]


def build_speech_session(root: Path, *, clean: int = 5) -> Path:
    """`clean` spoken clips (SPEECH) and as many brown-noise clips (NONSPEECH) imported as
    root/session, with the two FAULTS planted; the browser test builds its session here too."""
    rng = np.random.default_rng(0)
    audio = root / "audio"
    for i in range(clean):
        words = speech(WORDS[i % len(WORDS)], voice=VOICES[i % len(VOICES)], sample_rate_hz=HYGIENE_RATE_HZ)
        write_wav(audio / "SPEECH" / f"s{i}.wav", words[: int(1.2 * HYGIENE_RATE_HZ)], HYGIENE_RATE_HZ)
        write_wav(audio / "NONSPEECH" / f"n{i}.wav", brown_noise(rng, 1.0), HYGIENE_RATE_HZ)
    quiet_tail = padded(speech("no", voice=VOICES[0], sample_rate_hz=HYGIENE_RATE_HZ)[: int(0.25 * HYGIENE_RATE_HZ)], 3.0)
    write_wav(audio / "SPEECH" / FAULTS[0], quiet_tail + 1e-3 * rng.standard_normal(3 * HYGIENE_RATE_HZ), HYGIENE_RATE_HZ)
    leak = brown_noise(rng, 1.2) + padded(speech("hello there", voice=VOICES[1], sample_rate_hz=HYGIENE_RATE_HZ), 1.2)
    write_wav(audio / "NONSPEECH" / FAULTS[1], leak, HYGIENE_RATE_HZ)
    with Store.open(root / "session") as store:
        import_dataset(store, audio, layout="folder", name="speech", progress=False)
    return root / "session"


def clip_ids(store: Store, *names: str) -> list[int]:
    clips = store.clips()
    return [int(clips.loc[clips.path.str.endswith(name), "id"].iloc[0]) for name in names]
