"""How far to trust a model before it judges labels (issue 11): probabilities are calibrated
first (core.evaluate.fit_temperature on held-out clips), and `trust_report` reads each class's
held-out accuracy; every proposer takes the `trusted` mask it gives, which keeps it out of the
classes the model is too weak on.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from core.evaluate import fit_temperature
from core.prediction_checks import check_classes, check_labels_and_probs, check_probability

# Fewer held-out clips than this leave the temperature at 1: one number fitted on a handful of
# clips mostly fits their noise.
MIN_CALIBRATION_CLIPS = 20


def held_out_calibration(*, labels: np.ndarray, pred_probs: np.ndarray, enabled: bool = True,
                         source: str = "val") -> dict[str, Any]:
    """The temperature to calibrate a model's probabilities with, fitted on its held-out clips
    (core.evaluate.fit_temperature: temperature, ECE and NLL before and after, fitted_on).
    Stays 1.0, with the reason under "skipped", when disabled or with fewer than
    MIN_CALIBRATION_CLIPS clips."""
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    if enabled and len(labels) >= MIN_CALIBRATION_CLIPS:
        return {"fitted_on": source, **fit_temperature(y_true=labels, probs=pred_probs)}
    why = ("calibration is off" if not enabled
           else f"{len(labels)} {source} clips, fewer than the {MIN_CALIBRATION_CLIPS} a fit needs")
    return {"temperature": 1.0, "n_samples": int(len(labels)), "skipped": why}


def _class_accuracy(labels: np.ndarray, pred_probs: np.ndarray) -> np.ndarray:
    """Each class's accuracy (recall: the share of its clips the model calls it), (C,) in
    [0, 1], higher is better; NaN for a class without clips."""
    n_classes = pred_probs.shape[1]
    support = np.bincount(labels, minlength=n_classes)
    right = np.bincount(labels[pred_probs.argmax(axis=1) == labels], minlength=n_classes)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, right / np.maximum(support, 1), np.nan)


def trust_report(*, labels: np.ndarray, pred_probs: np.ndarray, classes: Sequence[str], min_accuracy: float,
                 source: str) -> dict[str, Any]:
    """Which classes the model may judge: those whose held-out accuracy (recall) is at least
    min_accuracy in [0, 1]. A class without held-out clips is not judged either.

    source names the held-out clips for the summary ("val", "out-of-fold"). Returns
    {source, min_accuracy, accuracy: {class: float | None}, untrusted: [class, ...]}.
    """
    classes = check_classes(classes)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    check_probability("min_accuracy", min_accuracy)
    accuracy = _class_accuracy(labels, pred_probs)
    return {"source": source, "min_accuracy": float(min_accuracy),
            "accuracy": {c: None if np.isnan(a) else float(a) for c, a in zip(classes, accuracy)},
            "untrusted": [c for c, a in zip(classes, accuracy) if np.isnan(a) or a < min_accuracy]}


def trusted_mask(trust: dict[str, Any], classes: Sequence[str]) -> np.ndarray:
    """(C,) bools from a trust_report: True where the class may be judged."""
    return np.array([c not in set(trust["untrusted"]) for c in classes], dtype=bool)


def trust_lines(trust: dict[str, Any], *, who: str = "the model") -> list[str]:
    """One plain sentence per class the audit refused to judge."""
    lines = []
    for label in trust["untrusted"]:
        accuracy = trust["accuracy"].get(label)
        if accuracy is None:
            lines.append(f"{who} cannot be checked on class {label} (no {trust['source']} clips): its labels are not judged")
        else:
            lines.append(f"{who} is too weak on class {label} ({trust['source']} accuracy {accuracy:.2f}) to judge its "
                         "labels; train a better model first")
    return lines

