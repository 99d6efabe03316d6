"""Argument checks shared by the audit's pure functions (extreme-off, label issues, model trust):
each raises ValueError naming the parameter, what it got and what is allowed. Class ids are
integers 0..C-1; probabilities are (N, C) softmax rows."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes: {classes!r} must be at least two distinct class names")
    return classes


def check_labels_and_probs(labels: np.ndarray, pred_probs: np.ndarray, *,
                            n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    pred_probs = np.asarray(pred_probs, dtype=float)
    if pred_probs.ndim != 2 or pred_probs.shape[1] < 2 or (n_classes is not None and pred_probs.shape[1] != n_classes):
        want = f"(N, {n_classes})" if n_classes is not None else "(N, C) with C >= 2"
        raise ValueError(f"pred_probs: expected shape {want}, one row per clip, got {pred_probs.shape}")
    if not np.isfinite(pred_probs).all() or (pred_probs < 0).any() or (pred_probs > 1).any():
        raise ValueError("pred_probs: values must be probabilities in [0, 1]; apply softmax to logits first")
    labels = np.asarray(labels)
    if labels.shape != (len(pred_probs),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected {len(pred_probs)} integer class ids (one per row of pred_probs), "
                         f"got shape {labels.shape} of {labels.dtype}")
    outside = labels[(labels < 0) | (labels >= pred_probs.shape[1])]
    if outside.size:
        raise ValueError(f"labels: class ids {np.unique(outside)[:5].tolist()} are outside [0, {pred_probs.shape[1] - 1}]")
    return labels, pred_probs


def check_clip_ids(clip_ids: Sequence[int], *, n: int) -> np.ndarray:
    clip_ids = np.asarray(clip_ids)
    if clip_ids.shape != (n,) or not np.issubdtype(clip_ids.dtype, np.integer):
        raise ValueError(f"clip_ids: expected {n} integer clip ids (one per row of pred_probs), got shape {clip_ids.shape}")
    return clip_ids


def check_trusted(trusted: Sequence[bool] | None, *, n_classes: int) -> np.ndarray:
    if trusted is None:
        return np.ones(n_classes, dtype=bool)
    mask = np.asarray(trusted)
    if mask.shape != (n_classes,) or mask.dtype != bool:
        raise ValueError(f"trusted: expected {n_classes} booleans (one per class), got {trusted!r}")
    return mask


def check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: {value!r} must be a probability in [0, 1]")

