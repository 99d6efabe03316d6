"""Speech-activity measurement (B6, B9): which frames of a clip hold speech, by WebRTC VAD or Silero VAD.

Both detectors cut a clip into short frames and judge each; a clip's speech fraction is the
share of frames judged speech, in [0, 1] (higher = more speech). Plan B6's hygiene wants
SPEECH clips at >= 0.70 and NONSPEECH clips at <= 0.05.

- WebRTC VAD (`webrtcvad`): a yes/no per 10, 20 or 30 ms frame of 16-bit PCM at 8, 16, 32 or
  48 kHz; mode 0 (least aggressive: most frames called speech) to 3 (most aggressive). Tiny and
  fast, but it separates noise from silence better than speech from noise.
- Silero VAD (`silero_vad`): a speech probability per 512-sample frame at 16 kHz (32 ms). The
  weights ship inside the wheel and are loaded from it: never a hub.

Input is mono float audio in [-1, 1] at any rate; each detector resamples it (core.audio) to
a rate it accepts. Empty or all-zero audio measures as no speech; NaN or infinite samples are
refused. Every function takes an optional `StageTimer`, which adds the seconds it spent in
each stage to its totals: "resample", "features" (making the detector's input) and "model".
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import webrtcvad

from core.audio import resample

__all__ = ["SILERO_BATCH", "SILERO_FRAME_SAMPLES", "SILERO_RATE_HZ", "STAGES", "VAD_NAMES", "WEBRTC_FRAME_MS",
           "WEBRTC_MODES", "WEBRTC_RATES_HZ", "StageTimer", "VadMeasurement", "check_options", "check_wave", "measure", "measure_batch",
           "silero_fraction", "silero_probabilities", "silero_probabilities_batch", "webrtc_fraction", "webrtc_frames"]

WEBRTC_RATES_HZ = (8000, 16000, 32000, 48000)
WEBRTC_MODES = (0, 1, 2, 3)
WEBRTC_FRAME_MS = (10, 20, 30)
SILERO_RATE_HZ = 16000
SILERO_FRAME_SAMPLES = 512  # 32 ms at 16 kHz: the only frame size the 16 kHz model takes
# Clips run through Silero together in the batched form. Batching does help: on one core,
# 512 noise clips of 0.2-1 s at 16 kHz ran at 144x real time one at a time, 690x in batches of
# 32, 920x of 64, 1100x of 128, and slower again at 256 (920x) and 512 (630x)
# (2 shared cores, load ~3). bench/vad.py measures it end to end, files read.
SILERO_BATCH = 128
STAGES = ("load", "resample", "features", "model")


class StageTimer:
    """Seconds spent per stage (STAGES: load, resample, features, model), summed over the
    measurements it was passed to; `seconds` maps each stage to its total."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started


@dataclasses.dataclass(frozen=True)
class VadMeasurement:
    """One clip measured by one detector.

    detector: "webrtc-<mode>" or "silero"; frame_s: the length of one frame in seconds;
    frame_scores: float32 (n_frames,), the frame's speech score in [0, 1] (WebRTC: 0 or 1,
    Silero: a probability; higher = more speech-like); a frame counts as speech when its
    score >= threshold; fraction: the share of speech frames in [0, 1], 0.0 for no frames.
    """
    detector: str
    fraction: float
    frame_s: float
    frame_scores: np.ndarray
    threshold: float


# --- WebRTC VAD ---------------------------------------------------------------------------

def webrtc_frames(wave: np.ndarray, sample_rate_hz: int, *, mode: int = 3, frame_ms: int = 30,
                  timer: StageTimer | None = None) -> np.ndarray:
    """WebRTC VAD's verdict per frame: bool (n_frames,), True = speech.

    wave: mono float audio in [-1, 1] at sample_rate_hz, resampled to the nearest rate
    WebRTC accepts at or above it (48 kHz above 48 kHz). mode: 0-3, higher = more aggressive
    (fewer frames called speech). frame_ms: 10, 20 or 30. The last partial frame, or a clip
    shorter than one frame, is padded with zeros; an empty clip has no frames.
    """
    _check_choice("mode", mode, allowed=WEBRTC_MODES)
    _check_choice("frame_ms", frame_ms, allowed=WEBRTC_FRAME_MS)
    check_wave(wave, sample_rate_hz)
    timer = timer or StageTimer()
    rate = _webrtc_rate(sample_rate_hz)
    with timer.stage("resample"):
        wave = _resample(wave, sample_rate_hz, rate)
    frame_samples = rate * frame_ms // 1000
    with timer.stage("features"):
        pcm = _pcm16(_pad_to_frames(wave, frame_samples)).tobytes()
    with timer.stage("model"):
        vad = webrtcvad.Vad(mode)  # a fresh one per clip: the detector adapts to what it has heard
        step = 2 * frame_samples
        return np.array([vad.is_speech(pcm[start:start + step], rate) for start in range(0, len(pcm), step)],
                        dtype=bool)


def webrtc_fraction(wave: np.ndarray, sample_rate_hz: int, *, mode: int = 3, frame_ms: int = 30,
                    timer: StageTimer | None = None) -> float:
    """Share of frames WebRTC VAD calls speech, in [0, 1] (0.0 for an empty clip); see webrtc_frames."""
    return _fraction(webrtc_frames(wave, sample_rate_hz, mode=mode, frame_ms=frame_ms, timer=timer))


def _webrtc_rate(sample_rate_hz: int) -> int:
    """The rate WebRTC VAD runs a clip at: the lowest accepted rate >= sample_rate_hz, else 48 kHz."""
    return next((rate for rate in WEBRTC_RATES_HZ if rate >= sample_rate_hz), WEBRTC_RATES_HZ[-1])


def _pcm16(wave: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] as little-endian 16-bit integers (clipped at full scale)."""
    return np.round(np.clip(wave, -1.0, 1.0) * 32767.0).astype("<i2")


# --- Silero VAD ---------------------------------------------------------------------------

def silero_probabilities(wave: np.ndarray, sample_rate_hz: int, *, timer: StageTimer | None = None) -> np.ndarray:
    """Silero VAD's speech probability per 32 ms frame: float32 (n_frames,) in [0, 1], higher =
    more speech-like. wave: mono float audio in [-1, 1], resampled to 16 kHz; the last frame is
    padded with zeros; an empty clip has no frames. The model starts afresh on every clip."""
    return silero_probabilities_batch([wave], sample_rate_hz, batch_size=1, timer=timer)[0]


def silero_probabilities_batch(waves: Sequence[np.ndarray], sample_rate_hz: int, *, batch_size: int = SILERO_BATCH,
                               timer: StageTimer | None = None) -> list[np.ndarray]:
    """silero_probabilities of many clips at one rate, the same numbers (within float rounding),
    computed up to batch_size clips side by side: the model keeps one state per row, so clips
    of similar length are grouped and fed frame by frame together (SILERO_BATCH says what it gains)."""
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: {batch_size!r} must be an integer >= 1")
    for wave in waves:
        check_wave(wave, sample_rate_hz)
    timer = timer or StageTimer()
    with timer.stage("resample"):
        waves = [_resample(wave, sample_rate_hz, SILERO_RATE_HZ) for wave in waves]
    with timer.stage("features"):
        frames = [_pad_to_frames(wave, SILERO_FRAME_SAMPLES).reshape(-1, SILERO_FRAME_SAMPLES) for wave in waves]
    by_length = sorted(range(len(frames)), key=lambda i: len(frames[i]))
    probabilities: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(frames)
    for start in range(0, len(by_length), batch_size):
        group = by_length[start:start + batch_size]
        for index, probs in zip(group, _silero_group([frames[i] for i in group], timer)):
            probabilities[index] = probs
    return probabilities


def silero_fraction(wave: np.ndarray, sample_rate_hz: int, *, threshold: float = 0.5,
                    timer: StageTimer | None = None) -> float:
    """Share of 32 ms frames whose Silero speech probability is >= threshold, in [0, 1]
    (0.0 for an empty clip). threshold: in [0, 1], Silero's own default 0.5."""
    _check_threshold(threshold)
    return _fraction(silero_probabilities(wave, sample_rate_hz, timer=timer) >= threshold)


def _silero_group(frames: list[np.ndarray], timer: StageTimer) -> list[np.ndarray]:
    """Probabilities of clips given as frames (n_i, 512) at 16 kHz, run as one batch.

    Shorter clips are padded with silent frames to the longest; a row's state never mixes
    with another's, and what the padding scores is dropped.
    """
    lengths = [len(f) for f in frames]
    if max(lengths) == 0:
        return [np.zeros(0, dtype=np.float32) for _ in frames]
    with timer.stage("features"):
        batch = torch.zeros(len(frames), max(lengths), SILERO_FRAME_SAMPLES)
        for row, clip_frames in enumerate(frames):
            batch[row, :len(clip_frames)] = torch.from_numpy(clip_frames)
    with timer.stage("model"), _SILERO_LOCK, torch.inference_mode():
        model = _silero_model()
        model.reset_states()
        scores = torch.stack([model(batch[:, t], SILERO_RATE_HZ)[:, 0] for t in range(batch.shape[1])], dim=1)
    scores = scores.numpy().astype(np.float32)
    return [scores[row, :length] for row, length in enumerate(lengths)]


# The model holds its recurrent state between calls, so one caller at a time uses it.
_SILERO_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _silero_model() -> torch.jit.ScriptModule:
    """Silero VAD from the weights inside the silero_vad wheel (TorchScript), once per process."""
    from silero_vad import load_silero_vad  # imported here: it pulls in onnx helpers nothing else needs
    with warnings.catch_warnings():  # its importlib.resources.path and torch.jit.load are deprecated: library noise
        warnings.simplefilter("ignore", DeprecationWarning)
        return load_silero_vad()


# --- shared checks and helpers ------------------------------------------------------------

def check_wave(wave: np.ndarray, sample_rate_hz: int) -> None:
    """Refuse (ValueError) anything but a 1-D numpy wave of finite samples at a positive integer rate."""
    if not isinstance(sample_rate_hz, (int, np.integer)) or sample_rate_hz <= 0:
        raise ValueError(f"sample_rate_hz: {sample_rate_hz!r} must be a positive integer (Hz)")
    if not isinstance(wave, np.ndarray) or wave.ndim != 1:
        shape = getattr(wave, "shape", type(wave).__name__)
        raise ValueError(f"wave: expected a mono numpy array of shape (samples,), got {shape}")
    if not np.isfinite(wave).all():
        raise ValueError("wave: holds NaN or infinite samples; only finite audio can be measured")


def _check_choice(name: str, value: object, *, allowed: tuple[int, ...]) -> None:
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name}: {value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold: {threshold!r} must be a number in [0, 1]")


def _resample(wave: np.ndarray, orig_hz: int, target_hz: int) -> np.ndarray:
    """core.audio.resample, which cannot take an empty wave: an empty clip stays empty."""
    return resample(wave, orig_hz=orig_hz, target_hz=target_hz) if wave.size else wave.astype(np.float32)


def _pad_to_frames(wave: np.ndarray, frame_samples: int) -> np.ndarray:
    """float32 wave zero-padded to whole frames (an empty wave stays empty)."""
    padded = np.zeros(math.ceil(wave.shape[0] / frame_samples) * frame_samples, dtype=np.float32)
    padded[:wave.shape[0]] = wave  # np.pad costs ~20 us a call: a third of WebRTC's time on a short clip
    return padded


def _fraction(speech: np.ndarray) -> float:
    return float(speech.mean()) if speech.size else 0.0


# --- by name ------------------------------------------------------------------------------

def measure(wave: np.ndarray, sample_rate_hz: int, *, vad: str, timer: StageTimer | None = None,
            **options) -> VadMeasurement:
    """Measure one clip with the detector named vad (VAD_NAMES). options go to it: webrtc takes
    mode and frame_ms (webrtc_frames), silero takes threshold (silero_fraction)."""
    check_options(vad, **options)
    return _MEASURES[vad](wave, sample_rate_hz, timer=timer, **options)


def check_options(vad: str, **options) -> None:
    """Refuse, with a ValueError naming what is wrong and what is allowed, a vad that is not in
    VAD_NAMES or an option it does not take or a value out of range; silent when all is well."""
    if vad not in _MEASURES:
        raise ValueError(f"vad: {vad!r} is not a VAD; valid names: {', '.join(VAD_NAMES)}")
    checks = _OPTION_CHECKS[vad]
    for name, value in options.items():
        if name not in checks:
            raise ValueError(f"{name}: not an option of vad {vad!r}; its options: {', '.join(checks)}")
        checks[name](value)


def _measure_webrtc(wave: np.ndarray, sample_rate_hz: int, *, mode: int = 3, frame_ms: int = 30,
                    timer: StageTimer | None = None) -> VadMeasurement:
    frames = webrtc_frames(wave, sample_rate_hz, mode=mode, frame_ms=frame_ms, timer=timer)
    return VadMeasurement(detector=f"webrtc-{mode}", fraction=_fraction(frames), frame_s=frame_ms / 1000,
                          frame_scores=frames.astype(np.float32), threshold=0.5)


def measure_batch(waves: Sequence[np.ndarray], sample_rate_hz: int, *, vad: str, timer: StageTimer | None = None,
                  **options) -> list[VadMeasurement]:
    """measure() of many clips at one rate, in input order; Silero runs them side by side
    (silero_probabilities_batch), WebRTC one after another."""
    check_options(vad, **options)
    if vad != "silero":
        return [_MEASURES[vad](wave, sample_rate_hz, timer=timer, **options) for wave in waves]
    threshold = options.get("threshold", 0.5)
    return [_silero_measurement(p, threshold) for p in silero_probabilities_batch(waves, sample_rate_hz, timer=timer)]


def _measure_silero(wave: np.ndarray, sample_rate_hz: int, *, threshold: float = 0.5,
                    timer: StageTimer | None = None) -> VadMeasurement:
    return _silero_measurement(silero_probabilities(wave, sample_rate_hz, timer=timer), threshold)


def _silero_measurement(probabilities: np.ndarray, threshold: float) -> VadMeasurement:
    return VadMeasurement(detector="silero", fraction=_fraction(probabilities >= threshold),
                          frame_s=SILERO_FRAME_SAMPLES / SILERO_RATE_HZ, frame_scores=probabilities,
                          threshold=threshold)


_MEASURES: dict[str, Callable[..., VadMeasurement]] = {"webrtc": _measure_webrtc, "silero": _measure_silero}
VAD_NAMES = tuple(_MEASURES)
_OPTION_CHECKS: dict[str, dict[str, Callable[[object], None]]] = {
    "webrtc": {"mode": functools.partial(_check_choice, "mode", allowed=WEBRTC_MODES),
               "frame_ms": functools.partial(_check_choice, "frame_ms", allowed=WEBRTC_FRAME_MS)},
    "silero": {"threshold": _check_threshold},
}


