"""Two recipes compared over their seeds (C3), and a go/no-go verdict that knows seed noise.

`earmark compare` sets two models side by side clip by clip. A recipe is more than one model: a
second seed of the same config moves accuracy by about as much as many a tweak. Here each side
is several runs (one per seed) of one config, scored on the same split; every number is the
mean over a side's seeds, and a difference comes with the 95% Welch interval of the difference
of means (core.study.difference). The verdict, against a GatePolicy:
  - no-go when a gate fails on the candidate's means (class accuracies, accuracy, F1-macro,
    balanced accuracy, rare-class F1, ECE, as the policy sets them);
  - no-go when a class loses more than max_relative_regression of its accuracy and the drop's
    interval lies below 0 (beyond seed noise); a drop within noise is reported, not held against it;
  - no-go when the F1-macro difference is within seed noise (its interval holds 0: the candidate
    is not shown to be better), when it is worse beyond noise, or when a side has one seed;
  - go otherwise: every gate passes and F1-macro is better beyond seed noise.
pair_confusions reads the same reports for how often each class of a pair is taken for the other
(siren -> alert and back), paired by seed: what the optional heads (A10) are meant to cut.
Pure: inputs are classification_report dicts (core.evaluate), one per run.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.config import GatePolicy
from core.gates import FAIL, evaluate_gates, rare_classes
from core.study import difference, spread

HEADLINE = "f1_macro"
OVERALL = ("accuracy", "f1_macro", "balanced_accuracy", "rare_class_f1")


def compare_seeds(*, baseline: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]],
                  policy: GatePolicy) -> dict[str, Any]:
    """baseline, candidate: one classification_report per seed run, on the same split and
    classes. Returns {labels, seeds, rare_classes, overall: {metric: {baseline, candidate (each
    core.study.spread), delta (core.study.difference)}}, per_class: {label: {support,
    baseline_accuracy, candidate_accuracy, accuracy_relative_change, accuracy_delta, f1_delta}},
    gates (evaluate_gates on the candidate's means), verdict: {go, reasons, headline}}.
    Deltas are candidate - baseline (positive = better)."""
    if not baseline or not candidate:
        raise ValueError("baseline and candidate: each needs at least one run's report")
    labels = list(candidate[0]["labels"])
    if any(list(r["labels"]) != labels for r in (*baseline, *candidate)):
        raise ValueError(f"baseline and candidate: every run must predict the same classes ({labels})")
    rare = rare_classes(policy, candidate[0])
    sides = {"baseline": baseline, "candidate": candidate}

    def values(side: str, metric: str) -> list[float | None]:
        return [_rare_f1(r, rare) if metric == "rare_class_f1" else r[metric] for r in sides[side]]

    overall = {m: {"baseline": spread(values("baseline", m)), "candidate": spread(values("candidate", m)),
                   "delta": difference(values("baseline", m), values("candidate", m))} for m in OVERALL}
    per_class = {label: _class_change(label, baseline, candidate) for label in labels}
    gates = evaluate_gates(policy=policy, candidate=_mean_report(candidate, labels, overall))
    return {"labels": labels, "seeds": {"baseline": len(baseline), "candidate": len(candidate)}, "rare_classes": rare,
            "overall": overall, "per_class": per_class, "gates": gates,
            "verdict": _verdict(policy, overall[HEADLINE]["delta"], per_class, gates, seeds=(len(baseline), len(candidate)))}


def _rare_f1(report: dict[str, Any], rare: list[str]) -> float | None:
    scores = [report["per_class"][c]["f1"] for c in rare if report["per_class"][c]["f1"] is not None]
    return sum(scores) / len(scores) if scores else None


def _class_change(label: str, baseline: Sequence[dict], candidate: Sequence[dict]) -> dict[str, Any]:
    def per(runs: Sequence[dict], name: str) -> list[float | None]:
        return [r["per_class"][label][name] for r in runs]
    before, after = spread(per(baseline, "accuracy"))["mean"], spread(per(candidate, "accuracy"))["mean"]
    relative = None if not before or after is None else (after - before) / before
    return {"support": candidate[0]["per_class"][label]["support"], "baseline_accuracy": before,
            "candidate_accuracy": after, "accuracy_relative_change": relative,
            "accuracy_delta": difference(per(baseline, "accuracy"), per(candidate, "accuracy")),
            "f1_delta": difference(per(baseline, "f1"), per(candidate, "f1"))}


def _mean_report(runs: Sequence[dict], labels: list[str], overall: dict[str, Any]) -> dict[str, Any]:
    """A classification report of the candidate's means over seeds, for evaluate_gates."""
    per_class = {label: {"accuracy": spread([r["per_class"][label]["accuracy"] for r in runs])["mean"],
                         "f1": spread([r["per_class"][label]["f1"] for r in runs])["mean"],
                         "support": runs[0]["per_class"][label]["support"]} for label in labels}
    return {"labels": labels, "per_class": per_class,
            **{m: overall[m]["candidate"]["mean"] for m in ("accuracy", "f1_macro", "balanced_accuracy")},
            "calibration": {"ece": spread([r["calibration"]["ece"] for r in runs])["mean"]}}


def _verdict(policy: GatePolicy, headline: dict[str, Any], per_class: dict[str, dict], gates: dict[str, Any], *,
             seeds: tuple[int, int]) -> dict[str, Any]:
    reasons = [f"gate {c['name']} fails on the candidate's mean over seeds: {c['detail']}"
               for c in gates["criteria"] if c["status"] == FAIL]
    notes = []
    limit = policy.max_relative_regression
    for label, change in per_class.items():
        relative, delta = change["accuracy_relative_change"], change["accuracy_delta"]
        if limit is None or relative is None or relative >= -limit:
            continue
        text = (f"{label} accuracy {change['baseline_accuracy']:.4f} -> {change['candidate_accuracy']:.4f} "
                f"({relative:+.1%} relative, at most -{limit:.0%} allowed)")
        if delta["within_noise"] is False:
            reasons.append(f"{text}, beyond seed noise {_interval(delta)}")
        else:
            notes.append(f"{text}, within seed noise {_interval(delta)}")
    shown = f"F1-macro {headline['delta']:+.4f}" if headline["delta"] is not None else "F1-macro"
    if min(seeds) < 2:
        reasons.append(f"{shown}: with one seed on a side the difference cannot be told from seed noise; "
                       "train more seeds (--seeds)")
    elif headline["within_noise"]:
        reasons.append(f"{shown} {_interval(headline)} is within seed noise: the candidate is not shown to be better")
    elif headline["delta"] < 0:
        reasons.append(f"{shown} {_interval(headline)}: worse beyond seed noise")
    go = not reasons
    summary = (f"go: every gate passes and {shown} {_interval(headline)} is better beyond seed noise" if go
               else "no-go: " + reasons[0])
    return {"go": go, "reasons": reasons, "notes": notes, "headline": summary,
            "within_seed_noise": headline["within_noise"]}


def _interval(delta: dict[str, Any]) -> str:
    if delta.get("ci95_low") is None:
        return "(no interval)"
    return f"[{delta['ci95_low']:+.4f}, {delta['ci95_high']:+.4f}]"


def pair_confusions(*, baseline: Sequence[dict[str, Any]], candidate: Sequence[dict[str, Any]],
                    pairs: Sequence[Sequence[str]]) -> list[dict[str, Any]]:
    """How often each class of a pair is taken for the other, on both sides, per seed.

    baseline, candidate: one classification_report per seed, in the same seed order (the same
    seeds trained both sides, so seed i's difference is a paired one). For each pair (a, b),
    both directions a -> b and b -> a: the count of clips of the true class predicted as the
    other, and the rate (count / the true class's clips), per seed; each side's spread over its
    seeds (core.study.spread); and the paired difference candidate - baseline of the rate (mean
    over seeds with its 95% t-interval; negative = fewer confusions). ValueError naming a class
    the reports lack."""
    if not baseline or len(baseline) != len(candidate):
        raise ValueError(f"baseline and candidate: need the same number (>= 1) of seed reports, got "
                         f"{len(baseline)} and {len(candidate)}")
    labels = list(candidate[0]["labels"])
    rows = []
    for pair in pairs:
        unknown = [name for name in pair if name not in labels]
        if unknown:
            raise ValueError(f"pairs: class {unknown[0]!r} is not one of the runs' classes ({', '.join(labels)})")
        for true, predicted in (tuple(pair), tuple(reversed(pair))):
            sides = {name: [_confusion(r, true, predicted) for r in runs]
                     for name, runs in (("baseline", baseline), ("candidate", candidate))}
            rates = {name: [rate for _, rate in values] for name, values in sides.items()}
            paired = [None if b is None or c is None else c - b for b, c in zip(rates["baseline"], rates["candidate"])]
            rows.append({"true": true, "predicted": predicted, "clips": candidate[0]["per_class"][true]["support"],
                         **{f"{name}_counts": [count for count, _ in values] for name, values in sides.items()},
                         "baseline": spread(rates["baseline"]), "candidate": spread(rates["candidate"]),
                         "delta": _paired(paired)})
    return rows


def _confusion(report: dict[str, Any], true: str, predicted: str) -> tuple[int, float | None]:
    """(clips of class true predicted as predicted, that count over true's clips) in one report."""
    labels = list(report["labels"])
    row = report["confusion"]["counts"][labels.index(true)]
    count, support = int(row[labels.index(predicted)]), int(sum(row))
    return count, (count / support if support else None)


def _paired(differences: Sequence[float | None]) -> dict[str, Any]:
    """Mean of per-seed differences with its 95% t-interval; within_noise when it holds 0."""
    summary = spread(differences, bounds=(-1.0, 1.0))
    within = None if summary["ci95_low"] is None else bool(summary["ci95_low"] <= 0 <= summary["ci95_high"])
    return {"delta": summary["mean"], "ci95_low": summary["ci95_low"], "ci95_high": summary["ci95_high"],
            "seeds": summary["n"], "within_noise": within}
