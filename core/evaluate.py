"""Evaluation metrics over predictions: report, breakdowns, thresholds, psychometric curves.

Pure functions over numpy arrays (no torch, no store). Class ids are integers 0..C-1 that
index `labels`; probabilities are (N, C) rows summing to 1 (softmax outputs, not logits).
Every result is JSON-serialisable: plain floats/ints/lists, and None where a number is
undefined (0/0), so a run can write it straight to `metrics.json`.

scikit-learn computes every number it offers; this module only validates, assembles and
adds what it lacks (expected calibration error, temperature scaling, threshold search
objectives, the logistic psychometric fit with scipy).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
from scipy.optimize import curve_fit, minimize_scalar
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_curve,
    top_k_accuracy_score,
)

# A row of probabilities may drift this far from summing to 1 (float32 softmax, rounding).
PROBABILITY_SUM_TOLERANCE = 1e-3


# --- classification report ----------------------------------------------------------------

def classification_report(*, y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str],
                          top_k: Sequence[int] = (1, 3), n_bins: int = 15) -> dict[str, Any]:
    """Every headline metric of one evaluation, as a JSON-ready dict (higher is better
    except for ECE/MCE).

    y_true: (N,) int class ids in [0, C); probs: (N, C) probabilities; labels: C class names.
    Predictions are argmax(probs). Undefined ratios (0/0, e.g. precision of a class never
    predicted) are None and left out of the macro/weighted averages.

    Returns:
        labels: list[str]; n_samples: int; accuracy: float
        balanced_accuracy: mean recall over the classes present (float)
        f1_macro, f1_weighted: float | None
        mAP: mean of the defined per-class APs (float | None)
        top_k_accuracy: {"1": float, "3": float, ...} for each k < C (k >= C is always 1.0)
        per_class: {label: {precision, recall, f1, accuracy, average_precision: float | None,
                            support: int}}
            accuracy of a class is its recall (the fraction of its clips called right);
            average_precision is one-vs-rest on probs[:, c], None when the class has no clips.
        confusion: {counts: C x C ints, normalized: C x C floats}; rows = true class,
            columns = predicted class; normalized rows sum to 1 (all 0 for an absent class).
        calibration: {ece, mce: float in [0, 1], lower is better; n_bins: int; bins: list of
            {lower, upper, count, confidence, accuracy} over equal-width top-1-confidence
            bins (lower, upper]; confidence/accuracy None for an empty bin}
    """
    labels = _check_labels(labels)
    n_classes = len(labels)
    y_true = _as_class_ids("y_true", y_true, n_classes=n_classes)
    probs = _as_probabilities("probs", probs, n_rows=len(y_true), n_classes=n_classes)
    top_k = _check_top_k(top_k)
    _check_positive_int("n_bins", n_bins)
    return _classification_report(y_true, probs, labels, top_k, n_bins)


def _classification_report(y_true: np.ndarray, probs: np.ndarray, labels: list[str],
                           top_k: list[int], n_bins: int) -> dict[str, Any]:
    class_ids = list(range(len(labels)))
    y_pred = probs.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=class_ids, zero_division=np.nan)
    average_precisions = [_one_vs_rest_ap(y_true == c, probs[:, c]) for c in class_ids]
    defined_aps = [ap for ap in average_precisions if ap is not None]
    per_class = {
        label: {
            "precision": _number(precision[c]),
            "recall": _number(recall[c]),
            "f1": _number(f1[c]),
            "accuracy": _number(recall[c]),
            "support": int(support[c]),
            "average_precision": average_precisions[c],
        }
        for c, label in enumerate(labels)
    }
    return {
        "labels": labels,
        "n_samples": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(np.mean(recall[support > 0])),
        "f1_macro": _averaged_f1(y_true, y_pred, class_ids, "macro"),
        "f1_weighted": _averaged_f1(y_true, y_pred, class_ids, "weighted"),
        "mAP": float(np.mean(defined_aps)) if defined_aps else None,
        "top_k_accuracy": {str(k): _top_k_accuracy(y_true, probs, k) for k in top_k if k < len(labels)},
        "per_class": per_class,
        "confusion": {
            "counts": confusion_matrix(y_true, y_pred, labels=class_ids).tolist(),
            "normalized": confusion_matrix(y_true, y_pred, labels=class_ids, normalize="true").tolist(),
        },
        "calibration": _calibration(probs.max(axis=1), y_pred == y_true, n_bins),
    }


def _averaged_f1(y_true: np.ndarray, y_pred: np.ndarray, class_ids: list[int], average: str) -> float | None:
    return _number(f1_score(y_true, y_pred, labels=class_ids, average=average, zero_division=np.nan))


def _one_vs_rest_ap(is_class: np.ndarray, scores: np.ndarray) -> float | None:
    # AP is undefined without a single positive; sklearn would warn and return 0.
    return float(average_precision_score(is_class, scores)) if is_class.any() else None


def _top_k_accuracy(y_true: np.ndarray, probs: np.ndarray, k: int) -> float:
    n_classes = probs.shape[1]
    # sklearn wants the positive-class column alone for a two-class problem.
    scores = probs[:, 1] if n_classes == 2 else probs
    return float(top_k_accuracy_score(y_true, scores, k=k, labels=list(range(n_classes))))


def _calibration(confidence: np.ndarray, correct: np.ndarray, n_bins: int) -> dict[str, Any]:
    """ECE = sum over bins of (bin share of samples) x |accuracy - mean confidence|; MCE = the
    largest such gap. Bins are (lower, upper]; a confidence of exactly 0 joins the first."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bin_index = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    bins, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        in_bin = bin_index == b
        count = int(in_bin.sum())
        row = {"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": count,
               "confidence": None, "accuracy": None}
        if count:
            row["confidence"] = float(confidence[in_bin].mean())
            row["accuracy"] = float(correct[in_bin].mean())
            gap = abs(row["accuracy"] - row["confidence"])
            ece += count / len(confidence) * gap
            mce = max(mce, gap)
        bins.append(row)
    return {"ece": float(ece), "mce": float(mce), "n_bins": n_bins, "bins": bins}


def score_calibration(*, scores: np.ndarray, y_true_binary: np.ndarray, n_bins: int = 10) -> dict[str, Any]:
    """Calibration of a score read as p(positive) (a speech detector's score as p(speech)):
    equal-width score bins (lower, upper], each with its clips, mean score ("confidence") and
    share of positives ("accuracy"). Same dict as classification_report's calibration; ECE and
    MCE in [0, 1], lower is better.

    scores: (N,) finite numbers in [0, 1]; y_true_binary: (N,) bools.
    """
    scores = _as_scores("scores", scores)
    if ((scores < 0) | (scores > 1)).any():
        raise ValueError("scores: must lie in [0, 1] to be read as probabilities")
    y_true_binary = np.asarray(y_true_binary)
    if y_true_binary.shape != scores.shape or not np.isin(y_true_binary, (0, 1)).all():
        raise ValueError(f"y_true_binary: expected {scores.shape[0]} booleans (0/1) matching scores, "
                         f"got shape {y_true_binary.shape}")
    _check_positive_int("n_bins", n_bins)
    return _calibration(scores, y_true_binary.astype(bool), n_bins)


# --- temperature scaling --------------------------------------------------------------------

# With few held-out clips all called right, the likelihood keeps rising as T falls towards 0,
# which would turn every probability into 0 or 1; T is kept inside these bounds.
TEMPERATURE_BOUNDS = (0.5, 10.0)


def fit_temperature(*, y_true: np.ndarray, probs: np.ndarray, n_bins: int = 15) -> dict[str, Any]:
    """The temperature T that makes softmax(log(probs) / T) fit held-out labels best (Guo et
    al. 2017), with what it changes.

    y_true: (N,) class ids; probs: (N, C) held-out probabilities (log-probabilities are the
    logits up to a per-row constant, which softmax ignores). T > 1 softens an overconfident
    model, T < 1 sharpens an underconfident one (e.g. one trained with label smoothing); T
    stays within TEMPERATURE_BOUNDS and is 1.0 when nothing beats it.
    Returns {temperature, n_samples, nll_before, nll_after, ece_before, ece_after}; NLL is
    the mean negative log-likelihood, ECE as in classification_report (lower is better).
    """
    probs = np.asarray(probs, dtype=float)
    y_true = _as_class_ids("y_true", y_true, n_classes=probs.shape[1] if probs.ndim == 2 else 0)
    probs = _as_probabilities("probs", probs, n_rows=len(y_true), n_classes=probs.shape[1])
    _check_positive_int("n_bins", n_bins)
    return _fit_temperature(y_true, probs, n_bins)


def _fit_temperature(y_true: np.ndarray, probs: np.ndarray, n_bins: int) -> dict[str, Any]:
    # scikit-learn >= 1.8 fits the same one-parameter model (minimize_scalar over log 1/T), but
    # only privately, behind CalibratedClassifierCV, which wants a fitted estimator rather than
    # the stored probabilities an audit holds: this is that fit, on those probabilities.
    logits = np.log(np.clip(probs, 1e-12, 1.0))

    def nll(log_t: float) -> float:
        return _nll(y_true, logits / math.exp(log_t))

    found = minimize_scalar(nll, bounds=tuple(math.log(b) for b in TEMPERATURE_BOUNDS), method="bounded")
    temperature = float(math.exp(found.x)) if found.success and found.fun < nll(0.0) else 1.0
    after = _softmax(logits / temperature)
    return {"temperature": temperature, "n_samples": int(len(y_true)),
            "nll_before": _nll(y_true, logits), "nll_after": _nll(y_true, logits / temperature),
            "ece_before": _calibration(probs.max(1), probs.argmax(1) == y_true, n_bins)["ece"],
            "ece_after": _calibration(after.max(1), after.argmax(1) == y_true, n_bins)["ece"]}


def apply_temperature(*, probs: np.ndarray, temperature: float) -> np.ndarray:
    """softmax(log(probs) / temperature): (N, C) float64 rows summing to 1; the argmax, and so
    accuracy, is unchanged."""
    probs = np.asarray(probs, dtype=float)
    if probs.ndim != 2:
        raise ValueError(f"probs: expected shape (N, C), got {probs.shape}")
    probs = _as_probabilities("probs", probs, n_rows=probs.shape[0], n_classes=probs.shape[1])
    if not isinstance(temperature, (int, float)) or isinstance(temperature, bool) or not temperature > 0:
        raise ValueError(f"temperature: {temperature!r} must be a number > 0")
    return _softmax(np.log(np.clip(probs, 1e-12, 1.0)) / float(temperature))


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _nll(y_true: np.ndarray, logits: np.ndarray) -> float:
    top = logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float(np.mean(log_norm - logits[np.arange(len(y_true)), y_true]))


# --- breakdowns by metadata ----------------------------------------------------------------

def breakdown(*, y_true: np.ndarray, y_pred: np.ndarray, groups: Sequence[Hashable],
              labels: Sequence[str], order: Sequence[Hashable] | None = None) -> dict[Hashable, dict[str, Any]]:
    """Accuracy and F1-macro within each group of a metadata column (SNR, duration bin, source).

    y_true, y_pred: (N,) class ids; groups: N group values, one per clip. Returns
    {group: {n: int, accuracy: float, f1_macro: float | None}} in `order` when given (e.g.
    `bin_names(...)`, listing every group that occurs; groups with no clips are left out),
    otherwise sorted.
    """
    labels = _check_labels(labels)
    y_true = _as_class_ids("y_true", y_true, n_classes=len(labels))
    y_pred = _as_class_ids("y_pred", y_pred, n_classes=len(labels))
    if len(y_pred) != len(y_true):
        raise ValueError(f"y_pred: length {len(y_pred)} differs from y_true's {len(y_true)}")
    groups = [g.item() if isinstance(g, np.generic) else g for g in groups]  # JSON-friendly keys
    if len(groups) != len(y_true):
        raise ValueError(f"groups: length {len(groups)} differs from y_true's {len(y_true)}")
    present = set(groups)
    if order is None:
        ordered = _sorted_groups(present)
    else:
        unlisted = present - set(order)
        if unlisted:
            raise ValueError(f"order: does not list the groups {sorted(map(repr, unlisted))}")
        ordered = [g for g in order if g in present]
    group_array = np.empty(len(groups), dtype=object)
    group_array[:] = groups
    class_ids = list(range(len(labels)))
    result = {}
    for group in ordered:
        mask = group_array == group
        result[group] = {
            "n": int(mask.sum()),
            "accuracy": float(accuracy_score(y_true[mask], y_pred[mask])),
            "f1_macro": _averaged_f1(y_true[mask], y_pred[mask], class_ids, "macro"),
        }
    return result


def bin_names(*, edges: Sequence[float], unit: str = "") -> list[str]:
    """Readable names of the bins between consecutive edges, e.g. ["0-3 s", "3-5 s", "≥ 5 s"].

    An infinite first/last edge gives an open-ended name ("< 3 s", "≥ 5 s"); a negative
    lower edge is written "-5 to 0 dB" so the minus sign is not read as a dash.
    """
    edges = _check_edges(edges)
    suffix = f" {unit}" if unit else ""
    names = []
    for low, high in zip(edges[:-1], edges[1:]):
        if math.isinf(low):
            names.append(f"< {_format_edge(high)}{suffix}")
        elif math.isinf(high):
            names.append(f"≥ {_format_edge(low)}{suffix}")
        elif low < 0:
            names.append(f"{_format_edge(low)} to {_format_edge(high)}{suffix}")
        else:
            names.append(f"{_format_edge(low)}-{_format_edge(high)}{suffix}")
    return names


def bin_values(values: Sequence[float], *, edges: Sequence[float], unit: str = "") -> list[str]:
    """The bin name (see `bin_names`) of each value. Bins are [low, high), the last one
    [low, high]; a value outside [edges[0], edges[-1]] raises ValueError (use ±inf edges)."""
    edges = _check_edges(edges)
    values = np.asarray(values, dtype=float)
    if values.ndim != 1:
        raise ValueError(f"values: expected a 1-D sequence of numbers, got shape {values.shape}")
    outside = values[~((values >= edges[0]) & (values <= edges[-1]))]
    if outside.size:
        raise ValueError(f"values: {outside[:5].tolist()} lie outside edges [{edges[0]}, {edges[-1]}]")
    names = bin_names(edges=edges, unit=unit)
    index = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, len(names) - 1)
    return [names[i] for i in index]


def _sorted_groups(groups: set[Hashable]) -> list[Hashable]:
    try:
        return sorted(groups)
    except TypeError:  # mixed types (e.g. numbers and None) cannot be compared
        return sorted(groups, key=repr)


def _format_edge(edge: float) -> str:
    return f"{edge:g}"


def _check_edges(edges: Sequence[float]) -> list[float]:
    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(math.isnan(e) for e in edges) or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges: {edges} must be at least two strictly increasing numbers")
    return edges


# --- threshold calibration (B5) ------------------------------------------------------------

def _balanced_accuracy(tpr: np.ndarray, fpr: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    return (tpr + (1.0 - fpr)) / 2.0


def _f1(tpr: np.ndarray, fpr: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    true_pos, false_pos = tpr * n_pos, fpr * n_neg
    false_neg = n_pos - true_pos
    return 2 * true_pos / (2 * true_pos + false_pos + false_neg)


def _youden(tpr: np.ndarray, fpr: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    return tpr - fpr


def _accuracy(tpr: np.ndarray, fpr: np.ndarray, n_pos: int, n_neg: int) -> np.ndarray:
    return (tpr * n_pos + (1.0 - fpr) * n_neg) / (n_pos + n_neg)


THRESHOLD_OBJECTIVES: dict[str, Callable[[np.ndarray, np.ndarray, int, int], np.ndarray]] = {
    "balanced_accuracy": _balanced_accuracy,
    "f1": _f1,
    "youden": _youden,
    "accuracy": _accuracy,
}


def calibrate_threshold(*, scores: np.ndarray, y_true_binary: np.ndarray,
                        objective: str = "balanced_accuracy") -> dict[str, Any]:
    """The decision threshold that maximises `objective` on dev data (B5), to be applied
    unchanged to test with `apply_threshold`.

    scores: (N,) higher = more likely positive (for one-vs-rest, probs[:, c]);
    y_true_binary: (N,) bools, both values present. A clip is positive when score >=
    threshold. The threshold sits halfway between the chosen dev score and the next lower
    one, so the dev decisions are reproduced exactly but with a margin on either side.
    Objectives (all higher = better): balanced_accuracy (mean of TPR and TNR), f1 (of the
    positive class), youden (TPR - FPR), accuracy (share of clips called right, which follows
    the dev split's class balance). Ties go to the highest threshold.

    Returns {"objective": str, "threshold": float, "value": float}.
    """
    if objective not in THRESHOLD_OBJECTIVES:
        raise ValueError(f"objective: {objective!r} is not one of {', '.join(THRESHOLD_OBJECTIVES)}")
    scores = _as_scores("scores", scores)
    y_true_binary = np.asarray(y_true_binary)
    if y_true_binary.shape != scores.shape or not np.isin(y_true_binary, (0, 1)).all():
        raise ValueError(f"y_true_binary: expected {scores.shape[0]} booleans (0/1) matching scores, "
                         f"got shape {y_true_binary.shape}")
    y_true_binary = y_true_binary.astype(bool)
    if y_true_binary.all() or not y_true_binary.any():
        raise ValueError("y_true_binary: needs both positive and negative examples to place a threshold")
    return _calibrate_threshold(scores, y_true_binary, objective)


def _calibrate_threshold(scores: np.ndarray, y_true: np.ndarray, objective: str) -> dict[str, Any]:
    # roc_curve lists every distinct score as a threshold (descending); its first entry, +inf,
    # would call nothing positive and is never a usable operating point, so it is dropped.
    fpr, tpr, thresholds = roc_curve(y_true, scores, drop_intermediate=False)
    fpr, tpr, thresholds = fpr[1:], tpr[1:], thresholds[1:]
    values = THRESHOLD_OBJECTIVES[objective](tpr, fpr, int(y_true.sum()), int((~y_true).sum()))
    best = int(np.argmax(values))
    threshold = thresholds[best] if best == len(thresholds) - 1 else (thresholds[best] + thresholds[best + 1]) / 2
    return {"objective": objective, "threshold": float(threshold), "value": float(values[best])}


def apply_threshold(*, scores: np.ndarray, threshold: float) -> np.ndarray:
    """(N,) bools: True (positive) where score >= threshold."""
    scores = _as_scores("scores", scores)
    if not math.isfinite(threshold):
        raise ValueError(f"threshold: {threshold!r} must be a finite number")
    return scores >= threshold


# --- psychometric curves (B9) ---------------------------------------------------------------

def psychometric_accuracy(level: np.ndarray | float, *, mid: float, scale: float, chance: float) -> np.ndarray:
    """The logistic psychometric function: chance + (1 - chance) / (1 + exp(-(level - mid) / scale)).

    Accuracy rises from `chance` (very low level) to 1; `mid` is the level halfway up, `scale`
    (> 0, same unit as level) how gradual the rise is.
    """
    with np.errstate(over="ignore"):  # far below a steep curve exp() overflows to inf: accuracy is chance
        return chance + (1.0 - chance) / (1.0 + np.exp(-(np.asarray(level, dtype=float) - mid) / scale))


def psychometric_curve(*, levels: np.ndarray, correct: np.ndarray, chance: float = 0.0) -> dict[str, Any]:
    """Accuracy as a function of a stimulus level (SNR in dB, duration in ms) with a fitted
    logistic (`psychometric_accuracy`) and the detection thresholds DT50/DT75 (B9).

    levels: (N,) level of each trial; correct: (N,) bools. chance is the accuracy floor the
    curve starts from, fixed, not fitted: 0.0 (the default) for the accuracy of one class,
    e.g. "speech clips called speech", which falls to 0 as the signal drowns; 1/C for overall
    C-class accuracy. DT50 and DT75 are the levels where the fitted accuracy equals 0.50 and
    0.75 (lower = detects at a lower SNR = better); each is None when the fitted curve never
    reaches that accuracy (it lies at or below `chance`, e.g. DT50 for chance 0.5). The fit is
    least squares on per-level accuracies weighted by trials per level (scipy curve_fit with
    bounds: mid within a span of the tested range, scale positive).

    Returns {levels: sorted unique levels, accuracy: per level, n: trials per level,
             params: {mid, scale, chance}, dt50: float | None, dt75: float | None}.
    """
    levels = np.asarray(levels, dtype=float)
    correct = np.asarray(correct)
    if levels.ndim != 1 or not np.isfinite(levels).all():
        raise ValueError(f"levels: expected a 1-D array of finite numbers, got shape {levels.shape}")
    if correct.shape != levels.shape or not np.isin(correct, (0, 1)).all():
        raise ValueError(f"correct: expected {levels.shape[0]} booleans matching levels, got shape {correct.shape}")
    if not 0.0 <= chance < 1.0:
        raise ValueError(f"chance: {chance!r} must lie in [0, 1)")
    unique_levels, inverse, counts = np.unique(levels, return_inverse=True, return_counts=True)
    if len(unique_levels) < 3:
        raise ValueError(f"levels: need at least 3 distinct levels to fit a curve, got {unique_levels.tolist()}")
    accuracy = np.bincount(inverse, weights=correct.astype(float)) / counts
    mid, scale = _fit_logistic(unique_levels, accuracy, counts, chance)
    return {
        "levels": unique_levels.tolist(),
        "accuracy": accuracy.tolist(),
        "n": counts.tolist(),
        "params": {"mid": mid, "scale": scale, "chance": float(chance)},
        "dt50": _level_at_accuracy(0.50, mid=mid, scale=scale, chance=chance),
        "dt75": _level_at_accuracy(0.75, mid=mid, scale=scale, chance=chance),
    }


def _fit_logistic(levels: np.ndarray, accuracy: np.ndarray, counts: np.ndarray, chance: float) -> tuple[float, float]:
    span = float(levels[-1] - levels[0])

    def model(level: np.ndarray, mid: float, scale: float) -> np.ndarray:
        return psychometric_accuracy(level, mid=mid, scale=scale, chance=chance)

    initial = (float(np.average(levels, weights=counts)), span / 8)
    bounds = ([levels[0] - span, span * 1e-3], [levels[-1] + span, span * 10])
    (mid, scale), _ = curve_fit(model, levels, accuracy, p0=initial, sigma=1 / np.sqrt(counts), bounds=bounds)
    return float(mid), float(scale)


def psychometric_level(*, accuracy: float, mid: float, scale: float, chance: float) -> float | None:
    """The inverse of `psychometric_accuracy`: the level at which the curve reaches `accuracy`;
    None when it never does (accuracy at or below chance, or at or above 1)."""
    for name, value in (("accuracy", accuracy), ("mid", mid), ("scale", scale), ("chance", chance)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: {value!r} must be a finite number")
    if scale <= 0 or not 0.0 <= chance < 1.0:
        raise ValueError(f"scale: {scale!r} must be > 0 and chance: {chance!r} in [0, 1)")
    return _level_at_accuracy(accuracy, mid=mid, scale=scale, chance=chance)


def _level_at_accuracy(target: float, *, mid: float, scale: float, chance: float) -> float | None:
    rise = (target - chance) / (1.0 - chance)  # the logistic's own value, in (0, 1) if reachable
    if not 0.0 < rise < 1.0:
        return None
    return float(mid + scale * math.log(rise / (1.0 - rise)))


# --- comparing two reports (C3, A8) ---------------------------------------------------------

_OVERALL_METRICS = ("accuracy", "f1_macro", "f1_weighted", "mAP")
_PER_CLASS_METRICS = ("accuracy", "precision", "recall", "f1")


def compare_reports(*, baseline: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """What changed from `baseline` to `candidate` (two `classification_report` results on
    the same classes), as candidate - baseline: positive = the candidate is higher.

    Returns {labels, overall: {accuracy, f1_macro, f1_weighted, mAP},
             per_class: {label: {accuracy, precision, recall, f1, accuracy_relative_change}},
             confusion_diff: C x C ints (candidate counts - baseline counts)}.
    accuracy_relative_change is (candidate - baseline) / baseline, e.g. -0.02 = 2% worse
    (A8's regression gate); every value is None where either side is undefined or the
    baseline accuracy is 0.
    """
    for name, report in (("baseline", baseline), ("candidate", candidate)):
        missing = [key for key in ("labels", "per_class", "confusion", *_OVERALL_METRICS) if key not in report]
        if missing:
            raise ValueError(f"{name}: not a classification_report result (missing {', '.join(missing)})")
    if list(candidate["labels"]) != list(baseline["labels"]):
        raise ValueError(f"candidate: labels {candidate['labels']} differ from baseline's {baseline['labels']}")
    per_class = {}
    for label in baseline["labels"]:
        base, cand = baseline["per_class"][label], candidate["per_class"][label]
        deltas = {metric: _delta(base[metric], cand[metric]) for metric in _PER_CLASS_METRICS}
        base_accuracy = base["accuracy"]
        deltas["accuracy_relative_change"] = (
            deltas["accuracy"] / base_accuracy if deltas["accuracy"] is not None and base_accuracy else None)
        per_class[label] = deltas
    confusion_diff = np.asarray(candidate["confusion"]["counts"]) - np.asarray(baseline["confusion"]["counts"])
    return {
        "labels": list(baseline["labels"]),
        "overall": {metric: _delta(baseline[metric], candidate[metric]) for metric in _OVERALL_METRICS},
        "per_class": per_class,
        "confusion_diff": confusion_diff.tolist(),
    }


def _delta(base: float | None, cand: float | None) -> float | None:
    return None if base is None or cand is None else float(cand - base)


# --- input validation -----------------------------------------------------------------------

def _check_labels(labels: Sequence[str]) -> list[str]:
    labels = list(labels)
    if len(labels) < 2 or not all(isinstance(label, str) for label in labels) or len(set(labels)) != len(labels):
        raise ValueError(f"labels: {labels!r} must be at least two distinct class names (strings)")
    return labels


def _as_class_ids(name: str, values: np.ndarray, *, n_classes: int) -> np.ndarray:
    values = np.asarray(values)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(f"{name}: expected a non-empty 1-D array of class ids, got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"{name}: expected integer class ids, got dtype {values.dtype}")
    out_of_range = values[(values < 0) | (values >= n_classes)]
    if out_of_range.size:
        raise ValueError(f"{name}: class ids {np.unique(out_of_range)[:5].tolist()} are outside [0, {n_classes - 1}]")
    return values


def _as_probabilities(name: str, probs: np.ndarray, *, n_rows: int, n_classes: int) -> np.ndarray:
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (n_rows, n_classes):
        raise ValueError(f"{name}: expected shape ({n_rows}, {n_classes}) (one row per clip, one column per "
                         f"label), got {probs.shape}")
    if not np.isfinite(probs).all() or (probs < 0).any() or (probs > 1).any():
        raise ValueError(f"{name}: values must be probabilities in [0, 1]; apply softmax to logits first")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROBABILITY_SUM_TOLERANCE)
    if bad.size:
        raise ValueError(f"{name}: each row must sum to 1; row {bad[0]} sums to {sums[bad[0]]:.4f} "
                         f"(apply softmax to logits first)")
    return probs


def _as_scores(name: str, scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores, dtype=float)
    if scores.ndim != 1 or scores.size == 0 or not np.isfinite(scores).all():
        raise ValueError(f"{name}: expected a non-empty 1-D array of finite numbers, got shape {scores.shape}")
    return scores


def _check_top_k(top_k: Sequence[int]) -> list[int]:
    top_k = list(top_k)
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in top_k):
        raise ValueError(f"top_k: {top_k!r} must be positive integers")
    return top_k


def _check_positive_int(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name}: {value!r} must be a positive integer")


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)
