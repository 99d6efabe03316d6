"""Uncertainty sampling (A10, Prodigy-style): which unlabelled clips a model is least sure about.

Three scores of a probability row, each in [0, 1], higher = more uncertain (label it first):
- least_confident: 1 - max p (the model's own chance of being wrong);
- margin: 1 - (p1 - p2), the top two classes' gap closed (two classes the model cannot tell apart);
- entropy: the row's entropy divided by log(classes) (doubt spread over every class).
The queue is the top K by the chosen score. K's default is the number of mistakes the model is
expected to make on the clips ranked (the sum of 1 - max p of calibrated probabilities), capped
by the labelling budget a person gives: the clips worth a listen, not a number tuned to a demo.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Literal

import numpy as np
import pandas as pd
from scipy.stats import entropy

from core.config import Config, ConfigError, option

__all__ = ["METHODS", "InboxConfig", "expected_errors", "queue_size", "rank_uncertain", "uncertainty_scores"]


def _least_confident(probs: np.ndarray) -> np.ndarray:
    return 1.0 - probs.max(axis=1)


def _margin(probs: np.ndarray) -> np.ndarray:
    top_two = np.sort(probs, axis=1)[:, -2:]
    return 1.0 - (top_two[:, 1] - top_two[:, 0])


def _entropy(probs: np.ndarray) -> np.ndarray:
    return entropy(probs, axis=1) / math.log(probs.shape[1])


METHODS = {"least_confident": _least_confident, "margin": _margin, "entropy": _entropy}


def uncertainty_scores(probs: np.ndarray, *, method: str = "least_confident") -> np.ndarray:
    """probs (clips, classes), rows summing to 1 -> (clips,) scores in [0, 1], higher = more
    uncertain. Raises ValueError naming the method or the shape that cannot be scored."""
    if method not in METHODS:
        raise ValueError(f"method: {method!r} is not an uncertainty method; choose one of {', '.join(METHODS)}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ValueError(f"probs: expected (clips, classes) with at least 2 classes, got shape {probs.shape}")
    if len(probs) == 0:
        return np.zeros(0)
    return np.clip(METHODS[method](probs), 0.0, 1.0)


def expected_errors(probs: np.ndarray) -> float:
    """How many of these clips the model is expected to get wrong: sum of 1 - max p. Meaningful
    for calibrated probabilities (a temperature fitted on held-out clips)."""
    probs = np.asarray(probs, dtype=np.float64)
    return float((1.0 - probs.max(axis=1)).sum()) if len(probs) else 0.0


def queue_size(probs: np.ndarray, *, k: int | None = None, budget: int | None = None) -> tuple[int, str]:
    """K and why: k when given; otherwise the expected errors among the clips (at least 1 when
    any clip is ranked), capped by the budget. Never more than the clips ranked."""
    available = len(probs)
    if k is not None:
        return min(k, available), f"K = {k} as asked" + (f" ({available} clips to rank)" if k > available else "")
    errors = expected_errors(probs)
    size = min(max(int(round(errors)), 1 if available else 0), available)
    why = f"K = {size}: the model is expected to get {errors:.1f} of these {available} clips wrong"
    if budget is not None and budget < size:
        return budget, f"K = {budget}: the labelling budget ({why[4:]})"
    return size, why


def rank_uncertain(probs: np.ndarray, *, classes: list[str], method: str = "least_confident",
                   class_of_interest: str | None = None) -> pd.DataFrame:
    """Every row ranked, most uncertain first: position (row of probs), predicted, confidence,
    score, rank (1 = label first). class_of_interest keeps only rows predicted as that class
    ("low-confidence siren predictions"). Ties keep row order, so a ranking is reproducible."""
    if class_of_interest is not None and class_of_interest not in classes:
        raise ValueError(f"class_of_interest: {class_of_interest!r} is not a class of the model; "
                         f"choose one of {', '.join(classes)}")
    scores = uncertainty_scores(probs, method=method)
    probs = np.asarray(probs)
    predicted = np.array(classes, dtype=object)[probs.argmax(axis=1)] if len(probs) else np.array([], dtype=object)
    frame = pd.DataFrame({"position": np.arange(len(probs)), "predicted": predicted,
                          "confidence": probs.max(axis=1) if len(probs) else np.zeros(0), "score": scores})
    if class_of_interest is not None:
        frame = frame[frame.predicted == class_of_interest]
    frame = frame.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    frame["rank"] = np.arange(1, len(frame) + 1)
    return frame


@dataclasses.dataclass
class InboxConfig(Config):
    """How the inbox is ranked, validated here once for the CLI, the UI and the pipeline."""
    method: Literal["least_confident", "margin", "entropy"] = option(
        "least_confident", "Uncertainty score: least_confident (1 - top probability), margin (the top two classes' "
                           "gap, closed) or entropy (doubt over every class).")
    k: int | None = option(None, "Clips in the uncertain queue. Default: as many as the model is expected to get "
                                 "wrong among the inbox clips ranked (calibrated on its validation clips).")
    budget: int | None = option(None, "At most this many clips in the queue: what a person will label this round.")
    class_of_interest: str | None = option(None, "Rank only the clips predicted as this class (e.g. low-confidence "
                                                 "siren predictions).")

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"inbox.method: {self.method!r} must be one of {', '.join(METHODS)}")
        for name in ("k", "budget"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"inbox.{name}: {value!r} must be a whole number of clips, at least 1")
        if self.class_of_interest is not None and not str(self.class_of_interest).strip():
            self.class_of_interest = None
