"""Promotion gates and run comparisons (A8, A9, C3).

`compare_predictions` sets two models' predictions on the same clips and labels side by side:
per-class accuracies and deltas, the confusion difference, and the clips whose prediction
flipped (fixed: wrong before, right now; broken: right before, wrong now). `evaluate_gates`
reads a candidate's classification report, and that comparison against production, against a
`GatePolicy`: every criterion comes back with its status, number and threshold, so a decision
can be read, argued with and recorded. `write_comparison` saves a comparison as JSON + PNG.

Pure functions (no store). Reports are `core.evaluate.classification_report` results;
accuracy of a class is its recall. Higher is better for every number compared here.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from core.config import GatePolicy
from core.evaluate import classification_report, compare_reports
from core.plots import plot_confusion_diff

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "n/a"
COMPARISON_FILE = "comparison.json"
CONFUSION_DIFF_FILE = "confusion_diff.png"


@dataclasses.dataclass(frozen=True)
class Criterion:
    """One gate: pass, fail, or n/a (nothing to measure: no clips, no production model)."""
    name: str
    status: str
    value: float | None
    threshold: float | None
    detail: str


# --- comparing two models on the same clips ------------------------------------------------------

def compare_predictions(*, classes: Sequence[str], clip_ids: Sequence[int], y_true: np.ndarray,
                        baseline_probs: np.ndarray, candidate_probs: np.ndarray) -> dict[str, Any]:
    """Baseline vs candidate on the same N clips and labels.

    classes: C names (the probabilities' column order, identical for both models);
    clip_ids: N ids; y_true: (N,) class ids; *_probs: (N, C). Returns {labels, n_clips,
    overall: {metric: {baseline, candidate, delta}}, per_class: {label: {support,
    baseline_accuracy, candidate_accuracy, accuracy_delta, accuracy_relative_change, precision_delta,
    recall_delta, f1_delta}}, confusion_diff: C x C (candidate - baseline counts), fixed, broken:
    [{clip_id, label, baseline, candidate}]}. Deltas are candidate - baseline (positive = better).
    """
    clip_ids = np.asarray(clip_ids)
    y_true = np.asarray(y_true)
    if clip_ids.shape != y_true.shape:
        raise ValueError(f"clip_ids: expected {y_true.shape[0]} ids, one per label, got shape {clip_ids.shape}")
    baseline = classification_report(y_true=y_true, probs=baseline_probs, labels=classes)
    candidate = classification_report(y_true=y_true, probs=candidate_probs, labels=classes)
    deltas = compare_reports(baseline=baseline, candidate=candidate)
    classes = baseline["labels"]
    base_pred, cand_pred = np.asarray(baseline_probs).argmax(1), np.asarray(candidate_probs).argmax(1)

    def flipped(mask: np.ndarray) -> list[dict[str, Any]]:
        return [{"clip_id": int(clip_ids[i]), "label": classes[y_true[i]], "baseline": classes[base_pred[i]],
                 "candidate": classes[cand_pred[i]]} for i in np.flatnonzero(mask)]

    per_class = {}
    for label in classes:
        base, cand, delta = baseline["per_class"][label], candidate["per_class"][label], deltas["per_class"][label]
        per_class[label] = {"support": base["support"], "baseline_accuracy": base["accuracy"],
                            "candidate_accuracy": cand["accuracy"], "accuracy_delta": delta["accuracy"],
                            "accuracy_relative_change": delta["accuracy_relative_change"],
                            "precision_delta": delta["precision"], "recall_delta": delta["recall"], "f1_delta": delta["f1"]}
    return {
        "labels": classes,
        "n_clips": int(len(y_true)),
        "overall": {metric: {"baseline": baseline[metric], "candidate": candidate[metric], "delta": delta}
                    for metric, delta in deltas["overall"].items()},
        "per_class": per_class,
        "confusion_diff": deltas["confusion_diff"],
        "fixed": flipped((base_pred != y_true) & (cand_pred == y_true)),
        "broken": flipped((base_pred == y_true) & (cand_pred != y_true)),
    }


def write_comparison(folder: str | Path, comparison: dict[str, Any], *, title: str = "") -> dict[str, Path]:
    """Save a comparison (plus anything the caller added to it) as comparison.json and its
    confusion difference as confusion_diff.png in `folder`; returns both paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / COMPARISON_FILE
    json_path.write_text(json.dumps(comparison, indent=2))
    png_path = plot_confusion_diff(folder / CONFUSION_DIFF_FILE, diff=comparison["confusion_diff"],
                                   labels=comparison["labels"], title=title)
    return {"json": json_path, "png": png_path}


# --- gates ----------------------------------------------------------------------------------------

def evaluate_gates(*, policy: GatePolicy, candidate: dict[str, Any], comparison: dict[str, Any] | None = None,
                   production_run_id: str | None = None, vad_baselines: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every criterion of `policy` for a candidate.

    candidate: the candidate's classification_report on the policy's split (every clip, open
    quarantine included: quarantine must not flatter a gate); comparison: `compare_predictions` against the production model on the
    clips both predicted. production_run_id: the production model, None when there is none
    (the regression gate is then n/a); a production model without a comparison (it predicts
    other classes) fails the regression gate: nobody can say what regressed, so a person
    decides (override). vad_baselines: for `beat_vads_at_snr_db`, balanced accuracies on the
    split's clips at or below that SNR, {"max_snr_db", "clips", "candidate", "detectors": {name:
    value}}; missing while the policy asks for it fails that gate for the same reason. Returns {passed: no criterion failed, failed: [names], criteria: [Criterion as
    dict], policy: the policy as a dict}.
    """
    if not isinstance(policy, GatePolicy):
        raise ValueError(f"policy: expected a GatePolicy, got {type(policy).__name__}")
    missing = [key for key in ("labels", "per_class", "accuracy", "f1_macro") if key not in candidate]
    if missing:
        raise ValueError(f"candidate: not a classification_report result (missing {', '.join(missing)})")
    if comparison is not None and list(comparison.get("labels", [])) != list(candidate["labels"]):
        raise ValueError(f"comparison: labels {comparison.get('labels')} differ from the candidate's {candidate['labels']}")
    criteria = [*_class_accuracy(policy, candidate), *_regression(policy, comparison, production_run_id),
                *_overall(policy, candidate), *_beats_vads(policy, vad_baselines)]
    failed = [c.name for c in criteria if c.status == FAIL]
    return {"passed": not failed, "failed": failed, "criteria": [dataclasses.asdict(c) for c in criteria],
            "policy": policy.to_dict()}


def _at_least(name: str, value: float | None, threshold: float, what: str) -> Criterion:
    if value is None:
        return Criterion(name, NOT_APPLICABLE, None, threshold, f"{what}: undefined (no clips)")
    status = PASS if value >= threshold else FAIL
    return Criterion(name, status, value, threshold, f"{what} {value:.4f} {'>=' if status == PASS else '<'} {threshold:.4f}")


def _at_most(name: str, value: float | None, threshold: float, what: str) -> Criterion:
    if value is None:
        return Criterion(name, NOT_APPLICABLE, None, threshold, f"{what}: undefined (no clips)")
    status = PASS if value <= threshold else FAIL
    return Criterion(name, status, value, threshold, f"{what} {value:.4f} {'<=' if status == PASS else '>'} {threshold:.4f}")


def _class_accuracy(policy: GatePolicy, report: dict[str, Any]) -> list[Criterion]:
    criteria = []
    for label in policy.key_classes:
        if label not in report["per_class"]:
            criteria.append(Criterion(f"accuracy[{label}]", NOT_APPLICABLE, None, policy.min_key_class_accuracy,
                                      f"key class {label} is not a class of this model"))
    for label, per in report["per_class"].items():
        key = label in policy.key_classes
        threshold = policy.min_key_class_accuracy if key else policy.min_class_accuracy
        if threshold is None:
            continue
        value = per["accuracy"] if per["support"] else None
        criteria.append(_at_least(f"accuracy[{label}]", value, threshold,
                                  f"{'key class ' if key else ''}{label} accuracy ({per['support']} clips)"))
    return criteria


def _regression(policy: GatePolicy, comparison: dict[str, Any] | None, production_run_id: str | None) -> list[Criterion]:
    limit = policy.max_relative_regression
    if limit is None:
        return []
    if comparison is None:
        if production_run_id is None:
            return [Criterion("regression", NOT_APPLICABLE, None, limit, "no production model to compare with")]
        return [Criterion("regression", FAIL, None, limit, f"production {production_run_id} predicts other classes: "
                                                           "no clip-by-clip comparison (promote by override)")]
    criteria = []
    for label, per in comparison["per_class"].items():
        change = per["accuracy_relative_change"]
        name = f"regression[{label}]"
        if change is None:
            criteria.append(Criterion(name, NOT_APPLICABLE, None, limit,
                                      f"{label}: no relative change (no clips, or production scored 0)"))
            continue
        status = PASS if change >= -limit - 1e-12 else FAIL
        criteria.append(Criterion(name, status, change, -limit,
                                  f"{label} accuracy {per['baseline_accuracy']:.4f} -> {per['candidate_accuracy']:.4f} "
                                  f"({change:+.1%} relative; at most -{limit:.0%} allowed) on {per['support']} clips"))
    return criteria


def _overall(policy: GatePolicy, report: dict[str, Any]) -> list[Criterion]:
    criteria = []
    if policy.min_accuracy is not None:
        criteria.append(_at_least("accuracy", report["accuracy"], policy.min_accuracy, "accuracy"))
    if policy.min_f1_macro is not None:
        criteria.append(_at_least("f1_macro", report["f1_macro"], policy.min_f1_macro, "F1-macro"))
    if policy.min_balanced_accuracy is not None:
        criteria.append(_at_least("balanced_accuracy", report["balanced_accuracy"], policy.min_balanced_accuracy,
                                  "balanced accuracy"))
    if policy.max_ece is not None:
        criteria.append(_at_most("ece", report["calibration"]["ece"], policy.max_ece, "ECE"))
    if policy.min_rare_class_f1 is not None:
        rare = rare_classes(policy, report)
        scores = [report["per_class"][c]["f1"] for c in rare if report["per_class"][c]["f1"] is not None]
        value = float(np.mean(scores)) if scores else None
        criteria.append(_at_least("rare_class_f1", value, policy.min_rare_class_f1,
                                  f"mean F1 of the rare classes ({', '.join(rare) or 'none'})"))
    return criteria


def _beats_vads(policy: GatePolicy, baselines: dict[str, Any] | None) -> list[Criterion]:
    """The candidate must beat every VAD baseline at low SNR: value = its margin over the best."""
    snr = policy.beat_vads_at_snr_db
    if snr is None:
        return []
    if baselines is None or not baselines.get("detectors"):
        return [Criterion("beats_vads", FAIL, None, 0.0, f"no VAD baseline measured at SNR <= {snr:g} dB "
                                                          "(compare detectors first, or promote by override)")]
    if not baselines.get("clips") or baselines.get("candidate") is None:
        return [Criterion("beats_vads", NOT_APPLICABLE, None, 0.0, f"no clip at SNR <= {snr:g} dB in the split")]
    best_name = max(baselines["detectors"], key=lambda name: baselines["detectors"][name])
    best, candidate = baselines["detectors"][best_name], baselines["candidate"]
    margin = candidate - best
    status = PASS if margin > 0 else FAIL
    return [Criterion("beats_vads", status, margin, 0.0,
                      f"balanced accuracy at SNR <= {snr:g} dB on {baselines['clips']} clips: candidate {candidate:.4f} "
                      f"{'>' if status == PASS else '<='} best VAD {best_name} {best:.4f}")]


def rare_classes(policy: GatePolicy, report: dict[str, Any]) -> list[str]:
    """The classes the rare-class gate reads: the policy's list (those the model has), else the
    rare_class_count classes with the fewest clips in the report's split (ties by name)."""
    if policy.rare_classes:
        return [c for c in policy.rare_classes if c in report["per_class"]]
    by_support = sorted(report["per_class"], key=lambda c: (report["per_class"][c]["support"], c))
    return by_support[:policy.rare_class_count]
