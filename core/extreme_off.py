"""Extreme-off detection (A1): clips whose current label the model gives a probability at or
below `max_label_prob` while its top prediction is at least `min_top_prob`: a filter with a
readable reason, cheap enough to run on every audit, whose proposals feed the quarantine queue.
The thresholds are numbers or one per class: `per_class_thresholds` derives them from the
model's own held-out probabilities (the default since issue 11; AuditConfig chooses).

Pure functions over numpy/pandas (no torch, no store). Class ids are integers 0..C-1 indexing
`classes`; probabilities are (N, C) softmax rows.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from cleanlab import count as cleanlab_count

from core.prediction_checks import check_classes, check_clip_ids, check_labels_and_probs, check_probability, check_trusted
from core.proposals import proposal_frame

# Defaults measured on the demo session (600 clips, 36 planted label errors): the grid
# max_label_prob x min_top_prob in {0.02 .. 0.3} x {0.5 .. 0.9} on a demo-fast model's audit of
# every split and on two sets of 5-fold out-of-sample probabilities. Every flag is a clip taken
# out of the evaluation (A1), so a false alarm on a hard but correct clip flatters accuracy:
# precision comes first. All three stayed at precision 1.0 up to (0.2, 0.5); the first false
# alarm came at (0.3, 0.5). (0.1, 0.7) sits one step inside that region and flagged 13 of 36 on
# the audit (in-sample train predictions hide most training-split errors: the cross-validated
# ranking finds those) and 20-21 of 36 out of sample; min_top_prob 0.9 found only 5 and 11-13,
# since label smoothing (0.05) keeps a model's top probability near 0.95 at most.
DEFAULT_MAX_LABEL_PROB = 0.1
DEFAULT_MIN_TOP_PROB = 0.7
# Since issue 11 these are the `fixed` option; audits default to per-class thresholds.

Thresholds = float | Sequence[float]  # one probability for every class, or one per class
MARGIN_FACTOR = 3.0  # per_class_thresholds: both thresholds sit this many usual margins from certainty

EXTREME_OFF = "extreme_off"


def find_extreme_off(*, labels: np.ndarray, pred_probs: np.ndarray, max_label_prob: Thresholds = DEFAULT_MAX_LABEL_PROB,
                     min_top_prob: Thresholds = DEFAULT_MIN_TOP_PROB,
                     trusted: Sequence[bool] | None = None) -> np.ndarray:
    """Indices of the clips the model is confidently wrong about, most off first.

    labels: (N,) current class ids; pred_probs: (N, C). A clip labelled i whose top class is
    j != i is extreme-off when p(i) <= max_label_prob[i] and p(j) >= min_top_prob[j] (a
    number applies to every class; all in [0, 1]). trusted: (C,) bools, default all; a clip is
    never flagged when its label or its top class is untrusted. Ordered by p(label) ascending
    (lower = further off), ties by the top probability descending.
    """
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    limits = _check_thresholds(max_label_prob, min_top_prob, trusted, n_classes=pred_probs.shape[1])
    return _find_extreme_off(labels, pred_probs, *limits)


def _find_extreme_off(labels: np.ndarray, pred_probs: np.ndarray, max_label_prob: np.ndarray,
                      min_top_prob: np.ndarray, trusted: np.ndarray) -> np.ndarray:
    label_prob = pred_probs[np.arange(len(labels)), labels]
    top = pred_probs.argmax(axis=1)
    top_prob = pred_probs.max(axis=1)
    flagged = np.flatnonzero((top != labels) & trusted[labels] & trusted[top]
                             & (label_prob <= max_label_prob[labels]) & (top_prob >= min_top_prob[top]))
    order = np.lexsort((-top_prob[flagged], label_prob[flagged]))
    return flagged[order]


def extreme_off_counts(*, labels: np.ndarray, pred_probs: np.ndarray, classes: Sequence[str],
                       max_label_prob: Thresholds = DEFAULT_MAX_LABEL_PROB,
                       min_top_prob: Thresholds = DEFAULT_MIN_TOP_PROB,
                       trusted: Sequence[bool] | None = None) -> dict[str, int]:
    """Extreme-off clips per current label: {class: count} for every trusted class (A8 step
    2's key-class number; fewer is better). An untrusted class is left out: it was not
    judged, and 0 would read as good news."""
    classes = check_classes(classes)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    limits = _check_thresholds(max_label_prob, min_top_prob, trusted, n_classes=len(classes))
    flagged = _find_extreme_off(labels, pred_probs, *limits)
    counts = np.bincount(labels[flagged], minlength=len(classes))
    return {label: int(counts[c]) for c, label in enumerate(classes) if limits[2][c]}


def extreme_off_proposals(*, clip_ids: Sequence[int], labels: np.ndarray, pred_probs: np.ndarray,
                          classes: Sequence[str], max_label_prob: Thresholds = DEFAULT_MAX_LABEL_PROB,
                          min_top_prob: Thresholds = DEFAULT_MIN_TOP_PROB,
                          trusted: Sequence[bool] | None = None) -> pd.DataFrame:
    """Quarantine proposals for the extreme-off clips: PROPOSAL_COLUMNS, most off first.

    score = 1 - p(label) in [0, 1], higher = further off; rank 1 = the most off clip. Each
    reason names the two thresholds the clip crossed.
    """
    classes = check_classes(classes)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = check_clip_ids(clip_ids, n=len(labels))
    max_label, min_top, judged = _check_thresholds(max_label_prob, min_top_prob, trusted, n_classes=len(classes))
    order = _find_extreme_off(labels, pred_probs, max_label, min_top, judged)
    why = [f"extreme-off (label p <= {max_label[labels[i]]:.3g}, top p >= {min_top[pred_probs[i].argmax()]:.3g})"
           for i in order]
    return proposal_frame(order, clip_ids, labels, pred_probs, classes, method=EXTREME_OFF, why=why,
                      score=1.0 - pred_probs[order, labels[order]])


def per_class_thresholds(*, labels: np.ndarray, pred_probs: np.ndarray) -> dict[str, np.ndarray]:
    """Extreme-off thresholds from held-out (validation) probabilities, one per class.

    t[c] is cleanlab's confident threshold of class c, the mean p(c) over the clips labelled
    c, and margin[c] = 1 - t[c] the probability mass the model usually leaves outside c on
    c's own clips. A clip labelled i whose top class is j is extreme-off when
      p(j) >= min_top_prob[j] = max(0.5, 1 - MARGIN_FACTOR * margin[j]): about as sure of j
        as the model is on most of j's own clips (leftover mass is skewed like an
        exponential: 3x its mean covers about 95% of them), and a majority;
      p(i) <= max_label_prob[i] = min(MARGIN_FACTOR * margin[i], 1 / C): no more than such
        leftover mass, and below an even share of the C classes.
    Requiring the full t[j] would miss about half the mislabelled clips that are typical
    members of j (their p(j) sits at that mean). On a calibrated demo-fast model this flags
    15 clips, every one a planted error (the fixed 0.1 / 0.7 on the same model: 14).
    A class without held-out clips gets the strictest values (0 and 1): nothing is known
    about it. Returns {"max_label_prob": (C,), "min_top_prob": (C,)}, floats in [0, 1].
    """
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    n_classes = pred_probs.shape[1]
    present = np.bincount(labels, minlength=n_classes) > 0
    if not present.any():
        return {"max_label_prob": np.zeros(n_classes), "min_top_prob": np.ones(n_classes)}
    # cleanlab puts 2.0 (unreachable) for a class without clips; `present` handles those plainly.
    margin = 1.0 - np.minimum(cleanlab_count.get_confident_thresholds(labels, pred_probs), 1.0)
    return {"max_label_prob": np.where(present, np.minimum(MARGIN_FACTOR * margin, 1.0 / n_classes), 0.0),
            "min_top_prob": np.where(present, np.maximum(0.5, 1.0 - MARGIN_FACTOR * margin), 1.0)}


def _check_thresholds(max_label_prob: Thresholds, min_top_prob: Thresholds, trusted: Sequence[bool] | None, *,
                      n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (_per_class("max_label_prob", max_label_prob, n_classes), _per_class("min_top_prob", min_top_prob, n_classes),
            check_trusted(trusted, n_classes=n_classes))


def _per_class(name: str, value: Thresholds, n_classes: int) -> np.ndarray:
    """A threshold for every class, from one number or one per class."""
    if np.ndim(value) == 0:
        check_probability(name, value)
        return np.full(n_classes, float(value))
    values = np.asarray(value, dtype=float)
    if values.shape != (n_classes,) or not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{name}: expected one probability in [0, 1] or {n_classes} (one per class), got {value!r}")
    return values

