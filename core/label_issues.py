"""Label-issue ranking: cleanlab's label quality scores on OUT-OF-SAMPLE probabilities (from
K-fold cross-validation, pipelines/crossval.py), lower = more likely mislabelled, and the size
of the review queue from cleanlab's estimate of the label noise.

A model that trained on a clip can have memorised its given label, and then its own
probabilities hide exactly the errors this is meant to find (how much depends on the recipe:
on the demo, early stopping and label smoothing keep demo-fast from memorising much;
bench/audit_quality.py measures both). Ranking methods are dispatched through
`LABEL_QUALITY_METHODS`, whose error lists the names.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from cleanlab import count as cleanlab_count
from cleanlab import rank as cleanlab_rank

from core.prediction_checks import check_classes, check_clip_ids, check_labels_and_probs, check_probability, check_trusted
from core.proposals import proposal_frame

QUEUE_STANDARD_ERRORS = 2.0  # label_issue_queue_size: the estimate's margin, in standard errors

LABEL_QUALITY_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # p(given label): the plainest score; ties broken by nothing else.
    "self_confidence": cleanlab_rank.get_self_confidence_for_each_label,
    # (p(given) - max p(other) + 1) / 2: also low when another class is clearly preferred.
    "normalized_margin": cleanlab_rank.get_normalized_margin_for_each_label,
}
DEFAULT_LABEL_QUALITY_METHOD = "self_confidence"


def _check_method(method: str) -> None:
    if method not in LABEL_QUALITY_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(LABEL_QUALITY_METHODS)}")


def label_quality(*, labels: np.ndarray, pred_probs: np.ndarray,
                  method: str = DEFAULT_LABEL_QUALITY_METHOD) -> np.ndarray:
    """cleanlab's label quality score per clip, (N,) in [0, 1]: lower = more likely mislabelled.

    pred_probs must be out-of-sample (cross-validated) for the ranking to mean anything.
    method: a name in LABEL_QUALITY_METHODS.
    """
    _check_method(method)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    return _label_quality(labels, pred_probs, method)


def _label_quality(labels: np.ndarray, pred_probs: np.ndarray, method: str) -> np.ndarray:
    return np.asarray(LABEL_QUALITY_METHODS[method](labels, pred_probs), dtype=float)


def rank_label_issues(*, labels: np.ndarray, pred_probs: np.ndarray,
                      method: str = DEFAULT_LABEL_QUALITY_METHOD) -> np.ndarray:
    """Every clip's index, most likely mislabelled first (label quality ascending; ties keep
    the input order, so equal inputs give equal rankings)."""
    _check_method(method)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    return np.argsort(_label_quality(labels, pred_probs, method), kind="stable")


def label_issue_proposals(*, clip_ids: Sequence[int], labels: np.ndarray, pred_probs: np.ndarray,
                          classes: Sequence[str], method: str = DEFAULT_LABEL_QUALITY_METHOD, limit: int,
                          folds: int | None = None, trusted: Sequence[bool] | None = None) -> pd.DataFrame:
    """Quarantine proposals for the `limit` clips ranked most likely mislabelled.

    score = 1 - label quality in [0, 1], higher = more suspect; rank 1 = the most suspect.
    folds (for the reason text) names the cross-validation the probabilities came from.
    trusted: (C,) bools, default all; clips whose label or top class is untrusted are skipped.
    """
    _check_method(method)
    classes = check_classes(classes)
    labels, pred_probs = check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = check_clip_ids(clip_ids, n=len(labels))
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit: {limit!r} must be a whole number >= 0 (proposals to raise)")
    judged = check_trusted(trusted, n_classes=len(classes))
    quality = _label_quality(labels, pred_probs, method)
    order = np.argsort(quality, kind="stable")
    order = order[judged[labels[order]] & judged[pred_probs[order].argmax(axis=1)]][:limit]
    source = f"{folds}-fold cross-validated" if folds else "out-of-sample"
    return proposal_frame(order, clip_ids, labels, pred_probs, classes, method=method,
                      why=f"label issue ({method.replace('_', ' ')}, {source})", score=1.0 - quality[order])


def estimate_label_noise(*, labels: np.ndarray, pred_probs: np.ndarray) -> dict[str, np.ndarray]:
    """cleanlab's estimate of how many clips of each given label are mislabelled.

    pred_probs must be out-of-sample. From the calibrated confident joint (rows rescaled to
    the clips of each given label, cleanlab.count.compute_confident_joint): issues[i] = clips
    labelled i minus those estimated truly i; noise_rate[i] = issues[i] / clips labelled i
    (0 for a class without clips). Summed over the classes this is
    cleanlab.count.num_label_issues(estimation_method="off_diagonal_calibrated"), the cut-off
    cleanlab advises for a ranking. Returns {"issues": (C,) ints, "noise_rate": (C,) floats}.
    """
    labels, pred_probs = check_labels_and_probs(labels, pred_probs)
    joint = cleanlab_count.compute_confident_joint(labels, pred_probs, calibrate=True)
    support = np.bincount(labels, minlength=pred_probs.shape[1]).astype(float)
    issues = np.rint(np.clip(support - np.diag(joint), 0.0, None)).astype(int)
    return {"issues": issues, "noise_rate": np.where(support > 0, issues / np.maximum(support, 1), 0.0)}


def label_issue_queue_size(*, estimated_issues: int, pool_size: int, max_share: float,
                           max_label_issues: int | None = None) -> int:
    """How many ranked label issues to queue: max_label_issues when given; else the estimated
    number E plus QUEUE_STANDARD_ERRORS of its standard error (sqrt(E), counting issues as
    Poisson), never more than max_share (in [0, 1]) of the pool.

    Why the margin: the estimate is itself a count with sampling error, and cleanlab's runs
    low where mislabelled clips are less sure of their true class than its own clips are (on
    the demo with 4 folds: 27 for 36 planted errors); a reviewer who stopped at E would miss
    the issues the estimate missed. With E = 0 nothing is queued.
    """
    for name, value in (("estimated_issues", estimated_issues), ("pool_size", pool_size)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 0:
            raise ValueError(f"{name}: {value!r} must be a whole number >= 0")
    check_probability("max_share", max_share)
    if max_label_issues is not None:
        if not isinstance(max_label_issues, (int, np.integer)) or isinstance(max_label_issues, bool) or max_label_issues < 0:
            raise ValueError(f"max_label_issues: {max_label_issues!r} must be a whole number >= 0")
        return int(max_label_issues)
    with_margin = int(np.ceil(estimated_issues + QUEUE_STANDARD_ERRORS * np.sqrt(estimated_issues)))
    return min(with_margin, int(max_share * pool_size))

