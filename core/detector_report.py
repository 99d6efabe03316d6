"""Plan B9's comparison matrix for speech detectors, built from their scores (B5, B9).

Every detector gives each clip a score in [0, 1], higher = more likely speech (core/detectors.py).
Its threshold is chosen on the dev split by an objective and applied unchanged to the test split
(B5); the report gives, per detector and on test: accuracy and balanced accuracy overall, per
class, per SNR and per duration, the confusion, ECE / MCE of the score read as p(speech), the
psychometric curve (accuracy against SNR, overall and per duration, with DT50 / DT75 and a
bootstrap 95% interval), the latency of each stage per clip, and the clips it gets most
confidently wrong.

Psychometric curves follow the usual convention for a task with a guessing floor (psignifit's
threshold): the logistic rises from chance (50%: two classes, as balanced as a factorial set's
cells) to 100%, and DT50 / DT75 are the SNRs where it has risen 50% / 75% of that way, i.e.
accuracy 75% / 87.5% (lower = the detector still works in more noise). A detector that cannot
tell speech from noise below 5 dB and is perfect above has its DT50 between the two levels. `write_report` saves it as report.json, report.md and PNGs.

Pure functions over frames (no store, no audio):
- scores: one row per (clip, detector): clip_id, detector, score (NaN = not scored), and the
  cost columns load_s, resample_s, features_s, model_s (seconds);
- clips: one row per clip: clip_id, label, split, and where known snr_db (dB), duration_ms and path.
"""
from __future__ import annotations

import json
import math
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import OptimizeWarning

from core.detector_report_markdown import render_markdown
from core.evaluate import (THRESHOLD_OBJECTIVES, apply_threshold, calibrate_threshold, psychometric_curve,
                           psychometric_level, score_calibration)
from core.plots import plot_metric_by_group, plot_psychometric_curves, plot_reliability_grid
from core.vad import STAGES

__all__ = ["OBJECTIVES", "REPORT_FILES", "balanced_accuracy_at_snr", "build_report", "write_report"]

OBJECTIVES = ("accuracy", "balanced_accuracy", "youden")  # how a threshold is chosen on dev (B5)
SNR, DURATION = "snr_db", "duration_ms"
COSTS = tuple(f"{stage}_s" for stage in STAGES)
CHANCE = 0.5  # two classes: the accuracy of a detector that cannot tell
RISES = {"dt50": 0.50, "dt75": 0.75}  # how far from chance to perfect each threshold lies
MIN_LEVELS = 3  # a logistic needs at least three SNR levels
REPORT_FILES = {"json": "report.json", "markdown": "report.md", "reliability": "reliability.png",
                "psychometric": "psychometric.png", "snr": "balanced_accuracy_per_snr.png"}


def build_report(*, scores: pd.DataFrame, clips: pd.DataFrame, speech_label: str = "SPEECH",
                 nonspeech_label: str = "NONSPEECH", objective: str = "balanced_accuracy", dev_split: str = "val",
                 test_split: str = "test", reliability_bins: int = 10, bootstrap_draws: int = 200,
                 worst_clips: int = 10, seed: int = 0) -> dict[str, Any]:
    """The comparison report (JSON-ready) of every detector in scores on the clips.

    objective: one of OBJECTIVES, maximised on dev_split; bootstrap_draws: resamples of the
    test clips (within each SNR level, generator seeded by seed and the detector's name) for
    the DT50 / DT75 intervals, 0 = none; worst_clips: how many wrong clips to list per detector.

    Returns {speech_label, nonspeech_label, objective, splits: {dev, test}, clips: {dev, test},
    snr_levels, durations_ms, detectors: {name: entry}}; an entry is {unscored: {split: clips},
    threshold: {objective, dev, dev_value, test_optimal, test_optimal_value, gap (dev - test
    optimal), test_value_at_dev, test_value_lost}, test: {n, accuracy, balanced_accuracy,
    per_class: {label: accuracy}, confusion: {labels, counts (rows true, columns predicted)},
    calibration (score_calibration), per_snr / per_duration: [{snr_db | duration_ms, n,
    accuracy, balanced_accuracy, per_class}]}, psychometric: {overall, per_duration: {ms:
    curve}} (a curve, or {note} saying why there is none), latency_ms: {clips, load, resample,
    features, model, total: {p50, p95}}, worst_clips: [{clip_id, label, score, predicted,
    snr_db, duration_ms, path where known}]}, or {unscored, error} for a detector that scored
    no clip of one class. Accuracies are in [0, 1], higher is better; ECE, MCE, DT50, DT75 and
    latency: lower is better.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective: {objective!r} is not one of {', '.join(OBJECTIVES)}")
    for name, value, low in (("reliability_bins", reliability_bins, 1), ("bootstrap_draws", bootstrap_draws, 0),
                             ("worst_clips", worst_clips, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{name}: {value!r} must be an integer >= {low}")
    labels = (speech_label, nonspeech_label)
    rows = _joined(scores, clips, labels=labels, splits=(dev_split, test_split))
    options = {"objective": objective, "bins": reliability_bins, "draws": bootstrap_draws, "worst": worst_clips,
               "seed": seed, "splits": (dev_split, test_split), "labels": labels}
    test = rows[rows.split == test_split].drop_duplicates("clip_id")
    return {
        "speech_label": speech_label, "nonspeech_label": nonspeech_label, "objective": objective,
        "splits": {"dev": dev_split, "test": test_split},
        "clips": {"dev": int(rows[rows.split == dev_split].clip_id.nunique()), "test": int(len(test))},
        "snr_levels": _levels(test, SNR), "durations_ms": _levels(test, DURATION),
        "detectors": {name: _detector(group, options) for name, group in rows.groupby("detector", sort=False)},
    }


def _joined(scores: pd.DataFrame, clips: pd.DataFrame, *, labels: tuple[str, str], splits: tuple[str, str]) -> pd.DataFrame:
    """scores joined to the clip facts, validated; is_speech added."""
    for name, frame, needed in (("scores", scores, ("clip_id", "detector", "score", *COSTS)),
                                ("clips", clips, ("clip_id", "label", "split"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"{name}: missing columns {missing}")
    if scores.duplicated(["clip_id", "detector"]).any() or clips.clip_id.duplicated().any():
        raise ValueError("scores: one row per (clip_id, detector) and clips: one row per clip_id")
    other = sorted(set(clips.label) - set(labels))
    if other:
        raise ValueError(f"clips: labels {other} are neither speech_label nor nonspeech_label {list(labels)}")
    score = scores.score.to_numpy(dtype=float)
    if ((score < 0) | (score > 1)).any():
        raise ValueError("scores: score must lie in [0, 1] (NaN for a clip that could not be scored)")
    for split in splits:
        present = set(clips.label[clips.split == split])
        if present != set(labels):
            raise ValueError(f"clips: the {split} split needs clips of both {labels[0]} and {labels[1]}, "
                             f"has {sorted(present) or 'none'}")
    unknown = set(scores.clip_id) - set(clips.clip_id)
    if unknown:
        raise ValueError(f"scores: clip ids {sorted(unknown)[:5]} are not in clips")
    rows = scores.merge(clips, on="clip_id", how="inner")
    return rows[rows.split.isin(splits)].assign(is_speech=lambda f: f.label == labels[0]).reset_index(drop=True)


def _levels(frame: pd.DataFrame, column: str) -> list[float]:
    return sorted(float(v) for v in frame[column].dropna().unique()) if column in frame else []


# --- one detector --------------------------------------------------------------------------

def _detector(rows: pd.DataFrame, options: dict[str, Any]) -> dict[str, Any]:
    """One detector's entry of the report (see build_report) from its joined rows."""
    dev_split, test_split = options["splits"]
    scored = rows[rows.score.notna()]
    dev, test = scored[scored.split == dev_split], scored[scored.split == test_split]
    unscored = {split: int((rows.split == split).sum() - (scored.split == split).sum()) for split in options["splits"]}
    entry: dict[str, Any] = {"unscored": unscored}
    for split, frame in ((dev_split, dev), (test_split, test)):
        if frame.is_speech.nunique() < 2:
            entry["error"] = f"the {split} split has no scored clip of one class ({unscored[split]} clips unscored)"
            return entry
    threshold = _threshold(dev, test, options["objective"])
    test = test.assign(predicted=apply_threshold(scores=test.score.to_numpy(), threshold=threshold["dev"]))
    name = str(rows.detector.iloc[0])
    entry.update(threshold=threshold, test=_test_metrics(test, options),
                 psychometric=_psychometric(test, name=name, draws=options["draws"], seed=options["seed"]),
                 latency_ms=_latency(scored), worst_clips=_worst(test, options["worst"], options["labels"]))
    return entry


def _threshold(dev: pd.DataFrame, test: pd.DataFrame, objective: str) -> dict[str, Any]:
    """The dev threshold, the test-optimal one and what the gap costs on test (B5)."""
    chosen = calibrate_threshold(scores=dev.score.to_numpy(), y_true_binary=dev.is_speech.to_numpy(), objective=objective)
    best = calibrate_threshold(scores=test.score.to_numpy(), y_true_binary=test.is_speech.to_numpy(), objective=objective)
    at_dev = _objective_value(test.is_speech.to_numpy(), test.score.to_numpy() >= chosen["threshold"], objective)
    return {"objective": objective, "dev": chosen["threshold"], "dev_value": chosen["value"],
            "test_optimal": best["threshold"], "test_optimal_value": best["value"],
            "gap": chosen["threshold"] - best["threshold"], "test_value_at_dev": at_dev,
            "test_value_lost": best["value"] - at_dev}


def _objective_value(truth: np.ndarray, predicted: np.ndarray, objective: str) -> float:
    tpr, fpr = predicted[truth].mean(), predicted[~truth].mean()
    return float(THRESHOLD_OBJECTIVES[objective](np.array([tpr]), np.array([fpr]), int(truth.sum()), int((~truth).sum()))[0])


def _rates(frame: pd.DataFrame, labels: tuple[str, str]) -> dict[str, Any]:
    """n, accuracy, balanced accuracy (mean recall over the classes present) and each class's accuracy."""
    correct = frame.predicted == frame.is_speech
    per_class = {label: float(correct[frame.is_speech == speech].mean()) if (frame.is_speech == speech).any() else None
                 for label, speech in zip(labels, (True, False))}
    present = [v for v in per_class.values() if v is not None]
    return {"n": int(len(frame)), "accuracy": float(correct.mean()) if len(frame) else None,
            "balanced_accuracy": float(np.mean(present)) if present else None, "per_class": per_class}


def _test_metrics(test: pd.DataFrame, options: dict[str, Any]) -> dict[str, Any]:
    labels = options["labels"]
    counts = [[int(((test.is_speech == truth) & (test.predicted == said)).sum()) for said in (True, False)]
              for truth in (True, False)]
    metrics = {**_rates(test, labels), "confusion": {"labels": list(labels), "counts": counts},
               "calibration": score_calibration(scores=test.score.to_numpy(), y_true_binary=test.is_speech.to_numpy(),
                                                n_bins=options["bins"])}
    for column, key in ((SNR, "per_snr"), (DURATION, "per_duration")):
        if column in test and test[column].notna().any():
            metrics[key] = [{column: float(level), **_rates(group, labels)}
                            for level, group in test.groupby(column, sort=True)]
    return metrics


def _latency(scored: pd.DataFrame) -> dict[str, Any]:
    """p50 / p95 (ms) of each stage's seconds per clip and of their sum, over the scored clips."""
    seconds = {stage: scored[f"{stage}_s"].to_numpy(dtype=float) for stage in STAGES}
    seconds["total"] = sum(seconds.values())
    return {"clips": int(len(scored)),
            **{stage: {"p50": float(np.percentile(1000 * v, 50)), "p95": float(np.percentile(1000 * v, 95))}
               for stage, v in seconds.items()}}


def _worst(test: pd.DataFrame, count: int, labels: tuple[str, str]) -> list[dict[str, Any]]:
    """The wrong clips, most confident first: a NONSPEECH clip by its score, a SPEECH clip by 1 - score."""
    wrong = test[test.predicted != test.is_speech]
    wrongness = np.where(wrong.is_speech, 1.0 - wrong.score, wrong.score)
    ranked = wrong.assign(wrongness=wrongness).sort_values(["wrongness", "clip_id"], ascending=[False, True]).head(count)
    extras = [(column, cast) for column, cast in ((SNR, float), (DURATION, float), ("path", str)) if column in ranked]
    return [{"clip_id": int(row.clip_id), "label": row.label, "score": float(row.score),
             "predicted": labels[0] if row.predicted else labels[1],
             **{column: cast(row[column]) for column, cast in extras if pd.notna(row[column])}}
            for _, row in ranked.iterrows()]


# --- psychometric curves ---------------------------------------------------------------------

def _psychometric(test: pd.DataFrame, *, name: str, draws: int, seed: int) -> dict[str, Any]:
    """Accuracy against SNR with DT50 / DT75, over all test clips and per duration."""
    if SNR not in test or test[SNR].isna().all():
        return {"overall": {"note": f"no clip carries {SNR} metadata: no psychometric curve"}}
    test = test[test[SNR].notna()]
    result = {"overall": _curve(test, draws=draws, rng=_rng(seed, name, "all"))}
    if DURATION in test and test[DURATION].notna().any():
        result["per_duration"] = {f"{level:g}": _curve(group, draws=draws, rng=_rng(seed, name, f"{level:g}"))
                                  for level, group in test.groupby(DURATION, sort=True)}
    return result


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator of its own per detector and curve: one detector's interval never depends on the others."""
    return np.random.default_rng([seed, *(zlib.crc32(n.encode()) for n in names)])


def _curve(frame: pd.DataFrame, *, draws: int, rng: np.random.Generator) -> dict[str, Any]:
    levels = frame[SNR].to_numpy(dtype=float)
    correct = (frame.predicted == frame.is_speech).to_numpy()
    distinct = np.unique(levels)
    if len(distinct) < MIN_LEVELS:
        return {"note": f"only {len(distinct)} SNR level(s) ({', '.join(f'{v:g}' for v in distinct)} dB): "
                        f"a curve needs at least {MIN_LEVELS}"}
    curve = _fit(levels, correct)
    if curve is None:
        return {"note": "the logistic fit did not converge"}
    return {**curve, "interval_95": _bootstrap(levels, correct, draws=draws, rng=rng)}


def _fit(levels: np.ndarray, correct: np.ndarray) -> dict[str, Any] | None:
    """psychometric_curve above chance, with DT50 / DT75 as RISES defines them (and the
    accuracy each stands for); None when the fit fails."""
    with warnings.catch_warnings():  # a flat curve leaves the covariance undefined: the fit still stands
        warnings.simplefilter("ignore", OptimizeWarning)
        try:
            curve = psychometric_curve(levels=levels, correct=correct, chance=CHANCE)
        except (RuntimeError, ValueError):  # no convergence, or a resample that lost a level
            return None
    targets = {key: CHANCE + rise * (1 - CHANCE) for key, rise in RISES.items()}
    return {**curve, **{key: psychometric_level(accuracy=target, **curve["params"]) for key, target in targets.items()},
            "threshold_accuracy": targets}


def _bootstrap(levels: np.ndarray, correct: np.ndarray, *, draws: int, rng: np.random.Generator) -> dict[str, Any]:
    """DT50 / DT75 2.5-97.5 percentiles over draws that resample the clips within each SNR level;
    failed fits are skipped and counted, as are draws where a DT is not reached."""
    by_level = [np.flatnonzero(levels == level) for level in np.unique(levels)]
    found: dict[str, list[float]] = {"dt50": [], "dt75": []}
    failed = 0
    for _ in range(draws):
        index = np.concatenate([rng.choice(members, size=len(members)) for members in by_level])
        curve = _fit(levels[index], correct[index])
        if curve is None:
            failed += 1
            continue
        for key, values in found.items():
            if curve[key] is not None:
                values.append(curve[key])
    return {"draws": draws, "failed": failed,
            **{key: [float(v) for v in np.percentile(values, [2.5, 97.5])] if values else None
               for key, values in found.items()},
            **{f"{key}_reached": len(values) for key, values in found.items()}}


# --- the gate's view -----------------------------------------------------------------------

def balanced_accuracy_at_snr(*, scores: pd.DataFrame, clips: pd.DataFrame, thresholds: dict[str, float],
                             max_snr_db: float, speech_label: str = "SPEECH", nonspeech_label: str = "NONSPEECH",
                             split: str = "test") -> dict[str, Any]:
    """Each detector's balanced accuracy (higher = better) on the split's clips at SNR <=
    max_snr_db (dB), at its given (dev) threshold; None for a detector with no scored clip
    there. scores and clips as build_report takes them. Returns {max_snr_db, split, clips,
    detectors: {name: value}}; clips counts the split's clips at that SNR."""
    if not isinstance(max_snr_db, (int, float)) or not math.isfinite(max_snr_db):
        raise ValueError(f"max_snr_db: {max_snr_db!r} must be a finite number (dB)")
    in_split = clips[clips.split == split]
    snr = pd.to_numeric(in_split[SNR], errors="coerce") if SNR in in_split else pd.Series(np.nan, index=in_split.index)
    low = in_split[snr <= max_snr_db]
    rows = scores[scores.clip_id.isin(low.clip_id) & scores.score.notna()].merge(low[["clip_id", "label"]], on="clip_id")
    values: dict[str, float | None] = {}
    for name, threshold in thresholds.items():
        mine = rows[rows.detector == name]
        frame = mine.assign(is_speech=mine.label == speech_label, predicted=mine.score >= threshold)
        values[name] = _rates(frame, (speech_label, nonspeech_label))["balanced_accuracy"]
    return {"max_snr_db": float(max_snr_db), "split": split, "clips": int(len(low)), "detectors": values}


# --- writing ---------------------------------------------------------------------------------

def write_report(folder: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """report.json, report.md (tables a paper can take) and the PNGs in folder; returns the paths
    by REPORT_FILES key (psychometric_<d>ms per duration too)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"json": folder / REPORT_FILES["json"], "markdown": folder / REPORT_FILES["markdown"]}
    paths["json"].write_text(json.dumps(report, indent=2))
    usable = {name: entry for name, entry in report["detectors"].items() if "error" not in entry}
    if usable:
        paths["reliability"] = plot_reliability_grid(folder / REPORT_FILES["reliability"], calibrations={
            name: entry["test"]["calibration"] for name, entry in usable.items()})
        paths.update(_psychometric_plots(folder, usable))
        per_snr = {name: {row[SNR]: row["balanced_accuracy"] for row in entry["test"].get("per_snr", [])}
                   for name, entry in usable.items()}
        if report["snr_levels"]:
            paths["snr"] = plot_metric_by_group(
                folder / REPORT_FILES["snr"], groups=[f"{v:g} dB" for v in report["snr_levels"]],
                series={name: [values.get(v) for v in report["snr_levels"]] for name, values in per_snr.items()},
                ylabel="balanced accuracy (test)", title="Balanced accuracy per SNR, each detector at its dev threshold")
    paths["markdown"].write_text(render_markdown(report, images={k: p.name for k, p in paths.items()}))
    return paths


def _psychometric_plots(folder: Path, usable: dict[str, Any]) -> dict[str, Path]:
    paths = {}
    overall = {name: e["psychometric"]["overall"] for name, e in usable.items() if "levels" in e["psychometric"]["overall"]}
    if overall:
        paths["psychometric"] = plot_psychometric_curves(folder / REPORT_FILES["psychometric"], curves=overall,
                                                         title="Accuracy against SNR (test)")
    durations = sorted({d for e in usable.values() for d in e["psychometric"].get("per_duration", {})}, key=float)
    for duration in durations:
        curves = {name: e["psychometric"]["per_duration"][duration] for name, e in usable.items()
                  if "levels" in e["psychometric"].get("per_duration", {}).get(duration, {})}
        if curves:
            paths[f"psychometric_{duration}ms"] = plot_psychometric_curves(
                folder / f"psychometric_{duration}ms.png", curves=curves, title=f"Accuracy against SNR, {duration} ms clips")
    return paths
