"""Spoken words from eSpeak NG, as waveforms: the offline speech source for datasets built here.

eSpeak NG is a formant synthesiser: no model weights, no network, a few milliseconds a word.
The `espeakng-loader` wheel bundles libespeak-ng and its voice data; this module drives the
library through ctypes (its C API, speak_lib.h) in synchronous mode, collecting the 16-bit
samples its callback hands over. The library holds one voice at a time for the whole process,
so every synthesis runs under one lock.

    wave = synthesize("seven", voice=Voice("en-us+f2", rate_wpm=190, pitch=70))
"""
from __future__ import annotations

import ctypes
import dataclasses
import threading

import numpy as np

SAMPLE_RATE_HZ = 22050  # what eSpeak NG produces; checked when the library starts
MIN_RATE_WPM, MAX_RATE_WPM = 80, 450  # eSpeak NG's speaking-rate range

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4  # espeak_PARAMETER
_EE_OK = 0

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class SpeechSynthUnavailable(RuntimeError):
    """eSpeak NG cannot be loaded on this machine."""


@dataclasses.dataclass(frozen=True)
class Voice:
    """One synthetic speaker.

    name: an eSpeak NG voice, optionally with a variant after '+' ("en", "en-us+f2",
    "en-gb-x-rp+m3"); rate_wpm: speaking rate in words per minute (80-450); pitch and
    pitch_range: 0-100, 50 being the voice's own.
    """
    name: str = "en"
    rate_wpm: int = 175
    pitch: int = 50
    pitch_range: int = 50

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"name: {self.name!r} must be an eSpeak NG voice name such as 'en-us+f2'")
        if not MIN_RATE_WPM <= self.rate_wpm <= MAX_RATE_WPM:
            raise ValueError(f"rate_wpm: {self.rate_wpm!r} must be in [{MIN_RATE_WPM}, {MAX_RATE_WPM}] words per minute")
        for field in ("pitch", "pitch_range"):
            if not 0 <= getattr(self, field) <= 100:
                raise ValueError(f"{field}: {getattr(self, field)!r} must be in [0, 100]")


def synthesize(text: str, *, voice: Voice) -> np.ndarray:
    """`text` spoken by `voice`: float32 mono samples in [-1, 1] at SAMPLE_RATE_HZ, with the
    synthesiser's own short silences at both ends. Raises SpeechSynthUnavailable when the
    library cannot be loaded and ValueError for empty text or a voice eSpeak NG lacks."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"text: {text!r} must be a non-empty string")
    if not isinstance(voice, Voice):
        raise ValueError(f"voice: expected a Voice, got {type(voice).__name__}")
    return _engine().speak(text, voice)


class _Engine:
    """The loaded library, one per process."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._lib = lib
        self._lock = threading.Lock()
        self._chunks: list[np.ndarray] = []
        self._callback = _CALLBACK(self._collect)  # kept referenced: the library calls it later
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, n_samples: int, _events) -> int:
        if wav and n_samples > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n_samples,)).copy())
        return 0  # 0 = go on

    def speak(self, text: str, voice: Voice) -> np.ndarray:
        with self._lock:
            if self._lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                raise ValueError(f"voice: eSpeak NG has no voice {voice.name!r} (try 'en', 'en-us+f2', 'en-gb-x-rp+m3')")
            for parameter, value in ((_RATE, voice.rate_wpm), (_PITCH, voice.pitch), (_RANGE, voice.pitch_range)):
                self._lib.espeak_SetParameter(parameter, int(value), 0)
            self._chunks = []
            # Some voice variants breathe with random noise from eSpeak NG's own generator, seeded
            # by the clock: seeding it makes a demo or test set built twice the same set.
            self._lib.espeak_ng_SetRandSeed(0)
            data = text.encode() + b"\0"
            status = self._lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if status != _EE_OK:
                raise RuntimeError(f"eSpeak NG could not speak {text!r} (error {status})")
            samples = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
        return (samples.astype(np.float32) / 32768.0).clip(-1.0, 1.0)


_loaded: _Engine | None = None
_load_lock = threading.Lock()


def _engine() -> _Engine:
    global _loaded
    with _load_lock:
        if _loaded is None:
            _loaded = _Engine(_load_library())
        return _loaded


def _load_library() -> ctypes.CDLL:
    try:
        import espeakng_loader
    except ImportError:
        raise SpeechSynthUnavailable("speech synthesis needs eSpeak NG: pip install espeakng-loader "
                                     "(a wheel bundling libespeak-ng and its voice data)") from None
    path = espeakng_loader.get_library_path()
    try:
        lib = ctypes.CDLL(path)
        data = espeakng_loader.get_data_path()
    except (OSError, RuntimeError) as exc:
        raise SpeechSynthUnavailable(f"eSpeak NG could not be loaded from {path}: {exc}; "
                                     "reinstall it with pip install --force-reinstall espeakng-loader") from None
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                 ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data.encode(), 0)
    if rate != SAMPLE_RATE_HZ:
        raise SpeechSynthUnavailable(f"eSpeak NG did not start from {data} (it returned {rate}, "
                                     f"expected its sample rate {SAMPLE_RATE_HZ} Hz)")
    return lib
