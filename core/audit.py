"""Finding the clips worth a human's time: extreme-off detection, label-issue ranking, proposals
for the quarantine queue, review-budget curves and the spot-check sampler.

Pure functions over numpy/pandas (no torch, no store). Class ids are integers 0..C-1 indexing
`classes`; probabilities are (N, C) softmax rows. Two ways to find suspect labels:

- Extreme-off (A1): the model gives the clip's current label a probability at or below
  `max_label_prob` while its top prediction is at least `min_top_prob`. A filter with a
  readable reason, cheap enough to run on every audit. The thresholds are numbers or one per
  class: `per_class_thresholds` derives them from the model's own held-out probabilities.
- Label-issue ranking: cleanlab's label quality scores on OUT-OF-SAMPLE probabilities (from
  K-fold cross-validation, pipelines/crossval.py), lower = more likely mislabelled. A model
  that trained on a clip can have memorised its given label, and then its own probabilities
  hide exactly the errors this is meant to find (how much depends on the recipe: on the demo,
  early stopping and label smoothing keep demo-fast from memorising much; bench/audit_quality.py
  measures both).

How far to trust the model (issue 11): probabilities should be calibrated first
(core.evaluate.fit_temperature on the validation split); `trust_report` reads each class's
held-out accuracy, and every proposer takes a `trusted` mask that keeps it out of the classes
the model is too weak on; `estimate_label_noise` sizes the label-issue queue from cleanlab's
calibrated confident joint.

Public functions take keyword-only options, validate them once and delegate to private ones;
ranking methods are dispatched through `LABEL_QUALITY_METHODS`, whose error lists the names.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from cleanlab import count as cleanlab_count
from cleanlab import rank as cleanlab_rank

from core.evaluate import fit_temperature

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
# Fewer held-out clips than this leave the temperature at 1: one number fitted on a handful of
# clips mostly fits their noise.
MIN_CALIBRATION_CLIPS = 20
MARGIN_FACTOR = 3.0  # per_class_thresholds: both thresholds sit this many usual margins from certainty
QUEUE_STANDARD_ERRORS = 2.0  # label_issue_queue_size: the estimate's margin, in standard errors

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
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
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
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
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
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = _check_clip_ids(clip_ids, n=len(labels))
    max_label, min_top, judged = _check_thresholds(max_label_prob, min_top_prob, trusted, n_classes=len(classes))
    order = _find_extreme_off(labels, pred_probs, max_label, min_top, judged)
    why = [f"extreme-off (label p <= {max_label[labels[i]]:.3g}, top p >= {min_top[pred_probs[i].argmax()]:.3g})"
           for i in order]
    return _proposals(order, clip_ids, labels, pred_probs, classes, method=EXTREME_OFF, why=why,
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
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
    n_classes = pred_probs.shape[1]
    present = np.bincount(labels, minlength=n_classes) > 0
    if not present.any():
        return {"max_label_prob": np.zeros(n_classes), "min_top_prob": np.ones(n_classes)}
    # cleanlab puts 2.0 (unreachable) for a class without clips; `present` handles those plainly.
    margin = 1.0 - np.minimum(cleanlab_count.get_confident_thresholds(labels, pred_probs), 1.0)
    return {"max_label_prob": np.where(present, np.minimum(MARGIN_FACTOR * margin, 1.0 / n_classes), 0.0),
            "min_top_prob": np.where(present, np.maximum(0.5, 1.0 - MARGIN_FACTOR * margin), 1.0)}


# --- how far to trust the model --------------------------------------------------------------

def held_out_calibration(*, labels: np.ndarray, pred_probs: np.ndarray, enabled: bool = True,
                         source: str = "val") -> dict[str, Any]:
    """The temperature to calibrate a model's probabilities with, fitted on its held-out clips
    (core.evaluate.fit_temperature: temperature, ECE and NLL before and after, fitted_on).
    Stays 1.0, with the reason under "skipped", when disabled or with fewer than
    MIN_CALIBRATION_CLIPS clips."""
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
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
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    _check_probability("min_accuracy", min_accuracy)
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
                          folds: int | None = None, trusted: Sequence[bool] | None = None) -> pd.DataFrame:
    """Quarantine proposals for the `limit` clips ranked most likely mislabelled.

    score = 1 - label quality in [0, 1], higher = more suspect; rank 1 = the most suspect.
    folds (for the reason text) names the cross-validation the probabilities came from.
    trusted: (C,) bools, default all; clips whose label or top class is untrusted are skipped.
    """
    _check_method(method)
    classes = _check_classes(classes)
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs, n_classes=len(classes))
    clip_ids = _check_clip_ids(clip_ids, n=len(labels))
    if not isinstance(limit, (int, np.integer)) or isinstance(limit, bool) or limit < 0:
        raise ValueError(f"limit: {limit!r} must be a whole number >= 0 (proposals to raise)")
    judged = _check_trusted(trusted, n_classes=len(classes))
    quality = _label_quality(labels, pred_probs, method)
    order = np.argsort(quality, kind="stable")
    order = order[judged[labels[order]] & judged[pred_probs[order].argmax(axis=1)]][:limit]
    source = f"{folds}-fold cross-validated" if folds else "out-of-sample"
    return _proposals(order, clip_ids, labels, pred_probs, classes, method=method,
                      why=f"label issue ({method.replace('_', ' ')}, {source})", score=1.0 - quality[order])


def _proposals(order: np.ndarray, clip_ids: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
               classes: list[str], *, method: str, why: str | list[str], score: np.ndarray) -> pd.DataFrame:
    top = pred_probs[order].argmax(axis=1)
    whys = [why] * len(order) if isinstance(why, str) else why
    reasons = [f"{w}: labelled {classes[labels[i]]} (p {pred_probs[i, labels[i]]:.2f}), "
               f"model says {classes[t]} (p {pred_probs[i, t]:.2f})" for w, i, t in zip(whys, order, top)]
    return pd.DataFrame({"clip_id": clip_ids[order].astype("int64"), "method": method, "reason": reasons,
                         "score": np.asarray(score, dtype=float), "rank": np.arange(1, len(order) + 1)},
                        columns=PROPOSAL_COLUMNS)


def estimate_label_noise(*, labels: np.ndarray, pred_probs: np.ndarray) -> dict[str, np.ndarray]:
    """cleanlab's estimate of how many clips of each given label are mislabelled.

    pred_probs must be out-of-sample. From the calibrated confident joint (rows rescaled to
    the clips of each given label, cleanlab.count.compute_confident_joint): issues[i] = clips
    labelled i minus those estimated truly i; noise_rate[i] = issues[i] / clips labelled i
    (0 for a class without clips). Summed over the classes this is
    cleanlab.count.num_label_issues(estimation_method="off_diagonal_calibrated"), the cut-off
    cleanlab advises for a ranking. Returns {"issues": (C,) ints, "noise_rate": (C,) floats}.
    """
    labels, pred_probs = _check_labels_and_probs(labels, pred_probs)
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
    _check_probability("max_share", max_share)
    if max_label_issues is not None:
        if not isinstance(max_label_issues, (int, np.integer)) or isinstance(max_label_issues, bool) or max_label_issues < 0:
            raise ValueError(f"max_label_issues: {max_label_issues!r} must be a whole number >= 0")
        return int(max_label_issues)
    with_margin = int(np.ceil(estimated_issues + QUEUE_STANDARD_ERRORS * np.sqrt(estimated_issues)))
    return min(with_margin, int(max_share * pool_size))


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


def _check_thresholds(max_label_prob: Thresholds, min_top_prob: Thresholds, trusted: Sequence[bool] | None, *,
                      n_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (_per_class("max_label_prob", max_label_prob, n_classes), _per_class("min_top_prob", min_top_prob, n_classes),
            _check_trusted(trusted, n_classes=n_classes))


def _per_class(name: str, value: Thresholds, n_classes: int) -> np.ndarray:
    """A threshold for every class, from one number or one per class."""
    if np.ndim(value) == 0:
        _check_probability(name, value)
        return np.full(n_classes, float(value))
    values = np.asarray(value, dtype=float)
    if values.shape != (n_classes,) or not np.isfinite(values).all() or (values < 0).any() or (values > 1).any():
        raise ValueError(f"{name}: expected one probability in [0, 1] or {n_classes} (one per class), got {value!r}")
    return values


def _check_trusted(trusted: Sequence[bool] | None, *, n_classes: int) -> np.ndarray:
    if trusted is None:
        return np.ones(n_classes, dtype=bool)
    mask = np.asarray(trusted)
    if mask.shape != (n_classes,) or mask.dtype != bool:
        raise ValueError(f"trusted: expected {n_classes} booleans (one per class), got {trusted!r}")
    return mask


def _check_probability(name: str, value: float) -> None:
    if not isinstance(value, (int, float, np.floating)) or isinstance(value, bool) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name}: {value!r} must be a probability in [0, 1]")
