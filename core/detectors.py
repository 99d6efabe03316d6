"""Speech detectors side by side (B9): one interface, a speech score per clip and what it cost.

A detector gives every clip a speech score in [0, 1] (higher = more likely speech) and the
seconds it spent on the clip in four stages: load (reading the file), resample, features (what
the detector's model takes in) and model. Detectors are registered by name and built with
`build_detector(name, **options)`:

- `webrtc-0` .. `webrtc-3`: WebRTC VAD in that mode; score = its speech-frame fraction;
- `silero`: Silero VAD; score = the share of frames with probability >= threshold (0.5), and
  `max_frame_score`, the highest frame probability, beside it;
- `trained-run`: a model trained here on SPEECH / NONSPEECH, built from its run folder
  (`run_dir=`); score = the model's probability of the speech class.

    detector = build_detector("silero")
    scores = detector.score(["a.wav", (wave, 16000)], progress=lambda done, total: ...)

`score` returns a pandas frame, one row per clip in input order: `clip` (its index), `detector`,
`score`, the cost columns `load_s`, `resample_s`, `features_s`, `model_s` (seconds), `error` (missing,
or why the clip could not be scored: its score is then NaN) and any detector-specific columns. Clips
are scored one at a time, so each row's costs are that clip's own latency.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd
import torch

from core.audio import AudioError, fit_length, load, probe, resample
from core.checkpoint import checkpoint_dir, has_checkpoint, load_checkpoint
from core.features import feature_transform, normalize
from core.registry import Registry
from core.vad import (SILERO_FRAME_SAMPLES, SILERO_RATE_HZ, STAGES, WEBRTC_MODES, StageTimer, VadMeasurement,
                      check_options, check_wave, measure, silero_probabilities)

__all__ = ["COST_COLUMNS", "Clip", "SileroDetector", "SpeechDetector", "TrainedRunDetector", "VadDetector",
           "available_detectors", "build_detector", "register_detector"]

# A clip: an audio file's path, or a mono float wave in [-1, 1] with its rate in Hz.
Clip = Union[str, Path, tuple[np.ndarray, int]]
ProgressHook = Callable[[int, int], None]  # called with (clips done, clips in all) after every clip
COST_COLUMNS = tuple(f"{stage}_s" for stage in STAGES)


class SpeechDetector:
    """Base of every detector. A subclass sets `name` (what reports call it) and implements
    `_score_wave`; `extra_columns` names what else its rows carry beside the score."""

    name: str
    extra_columns: tuple[str, ...] = ()

    def score(self, clips: Sequence[Clip], *, progress: ProgressHook | None = None) -> pd.DataFrame:
        """Score every clip (see the module docstring for the frame). A clip that cannot be read
        or measured is recorded with its reason in `error`; nothing is skipped."""
        for index, clip in enumerate(clips):
            if not isinstance(clip, (str, Path)) and not (isinstance(clip, tuple) and len(clip) == 2):
                raise ValueError(f"clips[{index}]: expected a path or a (wave, sample_rate_hz) pair, "
                                 f"got {type(clip).__name__}")
        rows = []
        for index, clip in enumerate(clips):
            rows.append({"clip": index, **self._score_clip(clip)})
            if progress is not None:
                progress(index + 1, len(clips))
        columns = ["clip", "detector", "score", *COST_COLUMNS, "error", *self.extra_columns]
        return pd.DataFrame(rows, columns=columns)

    def _score_clip(self, clip: Clip) -> dict[str, Any]:
        timer = StageTimer()
        row: dict[str, Any] = {"detector": self.name, "score": math.nan, "error": None}
        try:
            wave, rate = _read(clip, timer)
            row.update(self._score_wave(wave, rate, timer=timer))
        except ValueError as exc:  # AudioError is one: the clip's own problem, kept on its row
            row["error"] = str(exc)
        return {**row, **{f"{stage}_s": seconds for stage, seconds in timer.seconds.items()}}

    def _score_wave(self, wave: np.ndarray, sample_rate_hz: int, *, timer: StageTimer) -> dict[str, float]:
        """{"score": speech score in [0, 1], **extra_columns} for one checked, non-empty clip."""
        raise NotImplementedError


def _read(clip: Clip, timer: StageTimer) -> tuple[np.ndarray, int]:
    """A clip as (mono float32 wave, rate): a file at its own rate (core.audio), or the pair given."""
    if isinstance(clip, tuple):
        wave, rate = clip
        check_wave(wave, rate)
    else:
        with timer.stage("load"):
            header = probe(clip, scan_samples=False)
            if header.status != "ok":
                raise AudioError(header.reason)
            rate = header.sample_rate_hz
            wave = load(clip, sample_rate_hz=rate)
    if wave.size == 0:  # a file cannot be empty either (core.audio refuses it)
        raise AudioError("empty: the clip holds no audio samples")
    return wave, rate


# --- the registry ---------------------------------------------------------------------------

DetectorFactory = Callable[..., SpeechDetector]
_DETECTORS: Registry[DetectorFactory] = Registry("detector")
register_detector = _DETECTORS.register  # decorator: a detector class, or a function returning one
available_detectors = _DETECTORS.names   # registered detector names, sorted (what the UI lists)


def build_detector(name: str, **options: Any) -> SpeechDetector:
    """The detector registered as name, built with options (e.g. run_dir= for trained-run)."""
    return _DETECTORS.get(name, parameter="detector")(**options)


# --- the detectors --------------------------------------------------------------------------

class VadDetector(SpeechDetector):
    """A voice-activity detector of core.vad (vad: its name there, options: its options);
    score = its speech-frame fraction in [0, 1]."""

    def __init__(self, *, name: str, vad: str, **options: Any) -> None:
        check_options(vad, **options)
        self.name, self._vad, self._options = name, vad, options

    def _score_wave(self, wave: np.ndarray, sample_rate_hz: int, *, timer: StageTimer) -> dict[str, float]:
        return self._row(measure(wave, sample_rate_hz, vad=self._vad, timer=timer, **self._options))

    def _row(self, measured: VadMeasurement) -> dict[str, float]:
        return {"score": measured.fraction}


def _webrtc(mode: int) -> DetectorFactory:
    def build(*, frame_ms: int = 30) -> VadDetector:
        return VadDetector(name=f"webrtc-{mode}", vad="webrtc", mode=mode, frame_ms=frame_ms)
    build.__doc__ = f"WebRTC VAD in mode {mode} (0 least, 3 most aggressive); frame_ms: 10, 20 or 30."
    return build


for _mode in WEBRTC_MODES:
    register_detector(f"webrtc-{_mode}")(_webrtc(_mode))


@register_detector("silero")
class SileroDetector(VadDetector):
    """Silero VAD: score = share of frames with speech probability >= threshold (in [0, 1]);
    max_frame_score = the highest frame probability (0.0 for a clip too short to hold a frame)."""

    extra_columns = ("max_frame_score",)

    def __init__(self, *, threshold: float = 0.5) -> None:
        super().__init__(name="silero", vad="silero", threshold=threshold)
        # Load the model (cached per process) and run it once now, so no clip's cost includes that.
        silero_probabilities(np.zeros(SILERO_FRAME_SAMPLES, dtype=np.float32), SILERO_RATE_HZ)

    def _row(self, measured: VadMeasurement) -> dict[str, float]:
        scores = measured.frame_scores
        return {"score": measured.fraction, "max_frame_score": float(scores.max()) if scores.size else 0.0}


@register_detector("trained-run")
class TrainedRunDetector(SpeechDetector):
    """A model trained here (core/train.py) on SPEECH / NONSPEECH, from its run folder's checkpoint;
    score = the model's probability of the speech class, in [0, 1].

    speech_label: which of the model's labels is speech; by default the one named "speech" in any
    case. Clips are resampled, cropped or padded and turned into features as the run's feature
    cache makes them, so the scores are the run's audit predictions; only a "random" crop differs:
    the cache draws one per path, here the centre is kept (a score must not depend on a draw).
    """

    def __init__(self, *, run_dir: str | Path, speech_label: str | None = None, device: str = "cpu") -> None:
        folder = checkpoint_dir(run_dir)
        if not has_checkpoint(folder):
            raise ValueError(f"run_dir: {run_dir} holds no finished checkpoint (no {folder}/config.json)")
        self._loaded = load_checkpoint(folder, device=device)
        self._speech_column = _speech_column(self._loaded.labels, speech_label)
        self._log_mel = feature_transform(self._loaded.feature_cfg)
        self._device = device
        self.name = f"run:{Path(run_dir).name}"

    def _score_wave(self, wave: np.ndarray, sample_rate_hz: int, *, timer: StageTimer) -> dict[str, float]:
        cfg = self._loaded.feature_cfg
        with timer.stage("resample"):
            wave = resample(wave, orig_hz=sample_rate_hz, target_hz=cfg.sample_rate_hz)
        with timer.stage("features"), torch.inference_mode():
            wave = fit_length(wave, cfg.n_samples, crop="center" if cfg.crop == "random" else cfg.crop, pad=cfg.pad)
            # The cache stores features as float16: rounding the same way gives the audit's numbers.
            features = self._log_mel(torch.from_numpy(wave)[None]).half().float()
            stats = self._loaded.norm_stats
            features = normalize(features, stats) if stats else features
        with timer.stage("model"), torch.inference_mode():
            probabilities = torch.softmax(self._loaded.model(features.to(self._device)).float(), dim=-1)
        return {"score": float(probabilities[0, self._speech_column])}


def _speech_column(labels: list[str], speech_label: str | None) -> int:
    """Index of the speech class among the model's labels."""
    if speech_label is None:
        matches = [i for i, label in enumerate(labels) if label.lower() == "speech"]
        if len(matches) != 1:
            raise ValueError(f"speech_label: the model's labels {labels!r} have no single one named 'speech'; "
                             "name the speech class")
        return matches[0]
    if speech_label not in labels:
        raise ValueError(f"speech_label: {speech_label!r} is not one of the model's labels {labels!r}")
    return labels.index(speech_label)
