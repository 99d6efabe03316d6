"""Finding the clips worth a human's time: extreme-off detection, label-issue ranking, proposals
for the quarantine queue, review-budget curves and the spot-check sampler.

Pure functions over numpy/pandas (no torch, no store). Class ids are integers 0..C-1 indexing
`classes`; probabilities are (N, C) softmax rows. Two ways to find suspect labels:

- Extreme-off (A1): the model gives the clip's current label a probability at or below
  `max_label_prob` while its top prediction is at least `min_top_prob`. A filter with a
  readable reason, cheap enough to run on every audit.
- Label-issue ranking: cleanlab's label quality scores on OUT-OF-SAMPLE probabilities (from
  K-fold cross-validation, pipelines/crossval.py), lower = more likely mislabelled. A model
  that trained on a clip can have memorised its given label, and then its own probabilities
  hide exactly the errors this is meant to find (how much depends on the recipe: on the demo,
  early stopping and label smoothing keep demo-fast from memorising much; bench/audit_quality.py
  measures both).

Public functions take keyword-only options, validate them once and delegate to private ones;
ranking methods are dispatched through `LABEL_QUALITY_METHODS`, whose error lists the names.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from cleanlab import rank as cleanlab_rank

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

EXTREME_OFF = "extreme_off"

LABEL_QUALITY_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    # p(given label): the plainest score; ties broken by nothing else.
    "self_confidence": cleanlab_rank.get_self_confidence_for_each_label,
    # (p(given) - max p(other) + 1) / 2: also low when another class is clearly preferred.
    "normalized_margin": cleanlab_rank.get_normalized_margin_for_each_label,
}
DEFAULT_LABEL_QUALITY_METHOD = "self_confidence"

PROPOSAL_COLUMNS = ["clip_id", "method", "reason", "score", "rank"]


# --- extreme-off -------------------------------------------------------------------------------

def find_extreme_off(*, labels: np.ndarray, pred_probs: np.ndarray, max_label_prob: float = DEFAULT_MAX_LABEL_PROB,
                     min_top_prob: float = DEFAULT_MIN_TOP_PROB) -> np.ndarray:
    """Indices of the clips the model is confidently wrong about, most off first.

    labels: (N,) current class ids; pred_probs: (N, C). A clip is extreme-off when
    p(its label) <= max_label_prob and max(p) >= min_top_prob (both in [0, 1]). Ordered by
    p(label) ascending (lower = further off), ties by the top probability descending.
    """
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
    _check_probability("max_label_prob", max_label_prob)
    _check_probability("min_top_prob", min_top_prob)
    return _find_extreme_off(labels, pred_probs, max_label_prob, min_top_prob)


def _find_extreme_off(labels: np.ndarray, pred_probs: np.ndarray, max_label_prob: float,
                      min_top_prob: float) -> np.ndarray:
    label_prob = pred_probs[np.arange(len(labels)), labels]
    top_prob = pred_probs.max(axis=1)
    flagged = np.flatnonzero((label_prob <= max_label_prob) & (top_prob >= min_top_prob))
    order = np.lexsort((-top_prob[flagged], label_prob[flagged]))
    return flagged[order]


def extreme_off_counts(*, labels: np.ndarray, pred_probs: np.ndarray, classes: Sequence[str],
                       max_label_prob: float = DEFAULT_MAX_LABEL_PROB,
                       min_top_prob: float = DEFAULT_MIN_TOP_PROB) -> dict[str, int]:
    """Extreme-off clips per current label: {class: count} for every class (A8 step 2's
    key-class number; fewer is better)."""
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    _check_probability("max_label_prob", max_label_prob)
    _check_probability("min_top_prob", min_top_prob)
    flagged = _find_extreme_off(labels, pred_probs, max_label_prob, min_top_prob)
    counts = np.bincount(labels[flagged], minlength=len(classes))
    return {label: int(counts[c]) for c, label in enumerate(classes)}


def extreme_off_proposals(*, clip_ids: Sequence[int], labels: np.ndarray, pred_probs: np.ndarray,
                          classes: Sequence[str], max_label_prob: float = DEFAULT_MAX_LABEL_PROB,
                          min_top_prob: float = DEFAULT_MIN_TOP_PROB) -> pd.DataFrame:
    """Quarantine proposals for the extreme-off clips: PROPOSAL_COLUMNS, most off first.

    score = 1 - p(label) in [0, 1], higher = further off; rank 1 = the most off clip.
    """
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = _check_clip_ids(clip_ids, n=len(labels))
    _check_probability("max_label_prob", max_label_prob)
    _check_probability("min_top_prob", min_top_prob)
    order = _find_extreme_off(labels, pred_probs, max_label_prob, min_top_prob)
    why = f"extreme-off (label p <= {max_label_prob:g}, top p >= {min_top_prob:g})"
    return _proposals(order, clip_ids, labels, pred_probs, classes, method=EXTREME_OFF, why=why,
                      score=1.0 - pred_probs[order, labels[order]])


# --- label-issue ranking -------------------------------------------------------------------------

def label_quality(*, labels: np.ndarray, pred_probs: np.ndarray,
                  method: str = DEFAULT_LABEL_QUALITY_METHOD) -> np.ndarray:
    """cleanlab's label quality score per clip, (N,) in [0, 1]: lower = more likely mislabelled.

    pred_probs must be out-of-sample (cross-validated) for the ranking to mean anything.
    method: a name in LABEL_QUALITY_METHODS.
    """
    _check_method(method)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
    return _label_quality(labels, pred_probs, method)


def _label_quality(labels: np.ndarray, pred_probs: np.ndarray, method: str) -> np.ndarray:
    return np.asarray(LABEL_QUALITY_METHODS[method](labels, pred_probs), dtype=float)


def rank_label_issues(*, labels: np.ndarray, pred_probs: np.ndarray,
                      method: str = DEFAULT_LABEL_QUALITY_METHOD) -> np.ndarray:
    """Every clip's index, most likely mislabelled first (label quality ascending; ties keep
    the input order, so equal inputs give equal rankings)."""
    _check_method(method)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
    return np.argsort(_label_quality(labels, pred_probs, method), kind="stable")


def label_issue_proposals(*, clip_ids: Sequence[int], labels: np.ndarray, pred_probs: np.ndarray,
                          classes: Sequence[str], method: str = DEFAULT_LABEL_QUALITY_METHOD, limit: int,
                          folds: int | None = None) -> pd.DataFrame:
    """Quarantine proposals for the `limit` clips ranked most likely mislabelled.

    score = 1 - label quality in [0, 1], higher = more suspect; rank 1 = the most suspect.
    folds (for the reason text) names the cross-validation the probabilities came from.
    """
    _check_method(method)
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = _check_clip_ids(clip_ids, n=len(labels))
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit: {limit!r} must be a whole number >= 0 (proposals to raise)")
    quality = _label_quality(labels, pred_probs, method)
    order = np.argsort(quality, kind="stable")[:limit]
    source = f"{folds}-fold cross-validated" if folds else "out-of-sample"
    return _proposals(order, clip_ids, labels, pred_probs, classes, method=method,
                      why=f"label issue ({method.replace('_', ' ')}, {source})", score=1.0 - quality[order])


def _proposals(order: np.ndarray, clip_ids: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
               classes: list[str], *, method: str, why: str, score: np.ndarray) -> pd.DataFrame:
    top = pred_probs[order].argmax(axis=1)
    reasons = [f"{why}: labelled {classes[labels[i]]} (p {pred_probs[i, labels[i]]:.2f}), "
               f"model says {classes[t]} (p {pred_probs[i, t]:.2f})" for i, t in zip(order, top)]
    return pd.DataFrame({"clip_id": clip_ids[order].astype("int64"), "method": method, "reason": reasons,
                         "score": np.asarray(score, dtype=float), "rank": np.arange(1, len(order) + 1)},
                        columns=PROPOSAL_COLUMNS)


# --- measuring a detector ----------------------------------------------------------------------------

def review_curve(*, is_error_in_order: Sequence[bool], n_errors: int, budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Precision and recall when a reviewer listens to the first `budget` proposals.

    is_error_in_order: for each proposal in review order, whether it really is a label error
    (known for planted errors). n_errors: how many errors exist in the pool (recall's
    denominator). A list shorter than the budget is reviewed whole. Returns one dict per
    budget: {budget, reviewed, found, precision, recall}; precision = found / reviewed (None
    when nothing was reviewed), recall = found / n_errors; higher is better for both.
    """
    hits = np.asarray(is_error_in_order, dtype=bool)
    if hits.ndim != 1:
        raise ValueError(f"is_error_in_order: expected a 1-D sequence of booleans, got shape {hits.shape}")
    if not isinstance(n_errors, (int, np.integer)) or n_errors < max(int(hits.sum()), 1):
        raise ValueError(f"n_errors: {n_errors!r} must be a whole number >= 1 and >= the errors in the list ({int(hits.sum())})")
    budgets = list(budgets)
    if not budgets or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in budgets):
        raise ValueError(f"budgets: {budgets!r} must be whole numbers >= 1")
    found_by = np.concatenate([[0], np.cumsum(hits)])
    curve = []
    for budget in budgets:
        reviewed = min(int(budget), len(hits))
        found = int(found_by[reviewed])
        curve.append({"budget": int(budget), "reviewed": reviewed, "found": found,
                      "precision": found / reviewed if reviewed else None, "recall": found / int(n_errors)})
    return curve


# --- spot checks (A8 step 3) -------------------------------------------------------------------------

def sample_spot_check(*, relabelled: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n clips drawn without replacement from `relabelled` (one row per relabelled clip), in a
    random order, for a second listen; all of them when there are fewer. Seeded by `rng`."""
    if not isinstance(relabelled, pd.DataFrame) or "clip_id" not in relabelled.columns:
        raise ValueError("relabelled: expected a DataFrame with a clip_id column, one row per relabelled clip")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: {n!r} must be a whole number >= 1")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    picked = rng.choice(len(relabelled), size=min(int(n), len(relabelled)), replace=False)
    return relabelled.iloc[picked].reset_index(drop=True)


# --- validation ------------------------------------------------------------------------------------

def _check_method(method: str) -> None:
    if method not in LABEL_QUALITY_METHODS:
        raise ValueError(f"method: {method!r} is not one of {', '.join(LABEL_QUALITY_METHODS)}")


def _check_classes(classes: Sequence[str]) -> list[str]:
    classes = list(classes)
    if len(classes) < 2 or not all(isinstance(c, str) for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"classes: {classes!r} must be at least two distinct class names")
    return classes


def _check_labels_and_probs(labels: np.ndarray, pred_probs: np.ndarray, *,
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


def _check_clip_ids(clip_ids: Sequence[int], *, n: int) -> np.ndarray:
    clip_ids = np.asarray(clip_ids)
    if clip_ids.shape != (n,) or not np.issubdtype(clip_ids.dtype, np.integer):
        raise ValueError(f"clip_ids: expected {n} integer clip ids (one per row of pred_probs), got shape {clip_ids.shape}")
    return clip_ids


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: {value!r} must be a probability in [0, 1]")
