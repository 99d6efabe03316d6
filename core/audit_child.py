"""The audit's child job: predict every frozen clip with a checkpoint, score, flag, plot.

    python -m core.audit_child RUN_DIR

It runs under DESIGN.md's one-writer rule: it reads only its run folder (job.json: AuditJob;
manifest.parquet: the clips with their labels as of the freeze and whether each was
quarantined then) and writes only there (events.jsonl, predictions.parquet, metrics.json,
extreme_off.parquet, plots/, result.json). It never opens the session store.

Any registered architecture works: the checkpoint folder describes its model and features,
and features come from the session's cache, built batch by batch as the audit streams through
the clips (a clip never cached, e.g. one quarantined before any training, is computed here).
Clips quarantined at the freeze are predicted and scored with their labels as they stand, so
quarantine cannot flatter the number the gates read; the same report without them stands beside
it until the queue is reviewed (A1, core/split_report.py). Clips whose label the model does not
know are left out. metrics.json counts both, and the clips excluded by a decision (never
frozen: e.g. ambiguous drones, A3), as job.json lists them.
Each split's metrics are broken down by clip metadata (core/breakdowns.py) with the audited
model's evaluation settings.

Before judging any label the job asks how far to trust the model (job.judging, AuditConfig):
the validation clips are always predicted (frozen for that even when val is not audited), a
temperature is fitted on them (ECE and NLL before and after), the extreme-off thresholds come
from their calibrated probabilities (per class) or are the fixed numbers, and a class whose
validation accuracy is below the floor gets no proposals. metrics.json and result.json carry
all of it under "judging"; extreme-off scores use the calibrated probabilities, while
predictions.parquet and the metrics keep the model's own.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.extreme_off import extreme_off_counts, extreme_off_proposals, per_class_thresholds
from core.model_trust import held_out_calibration, trust_report, trusted_mask
from core.breakdowns import plan_breakdowns
from core.checkpoint import load_checkpoint
from core.clip_sets import members
from core.child_job import JobContext, JobSpec, command_line, plot_split, predictions_frame, run_child_job
from core.config import AuditConfig, EvaluationConfig
from core.evaluate import apply_temperature
from core.features import FeatureCache
from core.run_folder import MANIFEST_FILE, METRICS_FILE, PLOTS_DIR, PREDICTIONS_FILE, write_json
from core.split_report import headline_accuracy, quarantine_counts, split_reports
from core.train import predict_probs

EXTREME_OFF_FILE = "extreme_off.parquet"
CALIBRATION_SPLIT = "val"  # always frozen with an audit: the model is calibrated and checked on it


@dataclasses.dataclass
class AuditJob(JobSpec):
    """What the writer froze for one audit (job.json)."""
    run_id: str
    model_run_id: str
    checkpoint: str
    cache_dir: str
    splits: list[str]  # audited splits and clip sets; the manifest also holds the val clips the model is calibrated on
    judging: dict[str, Any]  # AuditConfig
    frozen_at_decision: int
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)  # per split: excluded by a decision, not frozen
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)  # EvaluationConfig of the audited model's run
    clip_sets: dict[str, int] = dataclasses.field(default_factory=dict)  # audited clip set -> its version id
    batch_size: int = 256
    workers: int = 2


def run_audit(run_dir: str | Path) -> dict[str, Any]:
    """Predict, score and plot one audit; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _audit(context, AuditJob.load(context.run_dir)))


def _audit(context: JobContext, job: AuditJob) -> dict[str, Any]:
    run_dir, events = context.run_dir, context.events
    manifest = pd.read_parquet(run_dir / MANIFEST_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_checkpoint(job.checkpoint, device=device)
    classes = loaded.labels
    events.write("start", clips=len(manifest), labels=classes, model_run_id=job.model_run_id, device=device)
    probs, failed = predict_streamed(manifest, loaded, context, cache_dir=job.cache_dir, batch_size=job.batch_size,
                                     workers=job.workers, device=device)
    predicted = manifest[~manifest["path"].isin(failed)].reset_index(drop=True)
    if failed:
        events.write("warning", message=f"{len(failed)} clips could not be read and are left out",
                     clips=sorted(failed)[:20])

    events.write("phase", phase="evaluate")
    judging, calibrated, limits = _judging_basis(predicted, probs, classes,
                                                 AuditConfig.from_dict(job.judging, prefix="audit."))
    audited = np.logical_or.reduce([members(predicted, name) for name in job.splits])
    predicted, probs, calibrated = predicted[audited].reset_index(drop=True), probs[audited], calibrated[audited]
    class_index = {label: i for i, label in enumerate(classes)}
    y = predicted["label"].map(class_index)
    known = y.notna().to_numpy()
    predictions_frame(predicted, probs, classes).to_parquet(run_dir / PREDICTIONS_FILE)
    scored = predicted[known].reset_index(drop=True)
    scored_probs, scored_y = calibrated[known], y[known].astype(int).to_numpy()
    extreme_off_proposals(clip_ids=scored["clip_id"].to_numpy(), labels=scored_y, pred_probs=scored_probs,
                          classes=classes, **limits).to_parquet(run_dir / EXTREME_OFF_FILE)

    plan = plan_breakdowns(predicted, EvaluationConfig.from_dict(job.evaluation, prefix="evaluation."))
    metrics: dict[str, Any] = {"labels": classes, "splits": {}, "counts": {}, "extreme_off": {}, "judging": judging,
                               "breakdowns": {}, "breakdowns_skipped": plan.skipped}
    for split in job.splits:
        in_split = members(predicted, split)
        scorable = in_split & known
        quarantined = predicted["quarantined"].to_numpy()[scorable]
        metrics["counts"][split] = {
            "clips": int(in_split.sum()), "evaluated": int(scorable.sum()), **quarantine_counts(quarantined),
            "excluded_unknown_label": int((in_split & ~known).sum()),
            "excluded": int(job.excluded.get(split, 0)),
        }
        if not scorable.any():
            continue
        split_rows = np.flatnonzero(scorable[known])  # positions within the scored frame
        metrics["extreme_off"][split] = extreme_off_counts(labels=scored_y[split_rows], pred_probs=scored_probs[split_rows],
                                                           classes=classes, **limits)
        part = predicted[scorable]
        metrics["splits"][split] = split_reports(
            y=part["label"].map(class_index).astype(int).to_numpy(), probs=probs[scorable], labels=classes,
            quarantined=quarantined, true_labels=part["true_label"] if "true_label" in part else None)
        rows = np.flatnonzero(scorable)
        breakdowns = plan.report(rows, y_true=y.to_numpy()[rows].astype(int), y_pred=probs[rows].argmax(1),
                                 labels=classes)
        if breakdowns:
            metrics["breakdowns"][split] = breakdowns
        plot_split(run_dir / PLOTS_DIR, split, metrics["splits"][split]["given"], breakdowns, classes,
                   confusion_title=f"{split}: audit (given labels, every clip)",
                   breakdowns_title=f"{split}: audit accuracy by clip metadata (given labels)")
    write_json(run_dir / METRICS_FILE, metrics)
    summary = {split: headline_accuracy(entry) for split, entry in metrics["splits"].items()}
    events.write("phase", phase="done", **summary)
    return {"status": "succeeded", "predicted": len(predicted), "failed": len(failed), "splits": summary,
            "counts": metrics["counts"], "judging": judging}


def _judging_basis(predicted: pd.DataFrame, probs: np.ndarray, classes: list[str],
                   settings: AuditConfig) -> tuple[dict[str, Any], np.ndarray, dict[str, Any]]:
    """Calibrate on the val clips (known label, not in quarantine), derive the thresholds and the
    trust check from them. Returns (the JSON record, calibrated probabilities of every row, the
    keyword arguments of the extreme-off functions)."""
    y = predicted["label"].map({label: i for i, label in enumerate(classes)})
    held = ((predicted["split"] == CALIBRATION_SPLIT) & y.notna() & ~predicted["quarantined"].astype(bool)).to_numpy()
    held_y = y[held].astype(int).to_numpy()
    calibration = held_out_calibration(labels=held_y, pred_probs=probs[held], enabled=settings.calibrate,
                                       source=CALIBRATION_SPLIT)
    calibrated = apply_temperature(probs=probs, temperature=calibration["temperature"]) if len(probs) else probs
    if settings.thresholds == "per_class":
        limits = per_class_thresholds(labels=held_y, pred_probs=calibrated[held])
    else:
        limits = {name: np.full(len(classes), getattr(settings, name)) for name in ("max_label_prob", "min_top_prob")}
    trust = trust_report(labels=held_y, pred_probs=calibrated[held], classes=classes,
                         min_accuracy=settings.min_class_accuracy, source=CALIBRATION_SPLIT)
    record = {"settings": settings.to_dict(), "calibration": calibration, "trust": trust,
              "thresholds": {"mode": settings.thresholds,
                             **{name: dict(zip(classes, map(float, values))) for name, values in limits.items()}}}
    return record, calibrated, {**limits, "trusted": trusted_mask(trust, classes)}


def predict_streamed(manifest: pd.DataFrame, loaded, context: JobContext, *, cache_dir: str, batch_size: int,
                     workers: int, device: str) -> tuple[np.ndarray, set[str]]:
    """Probabilities (rows of readable clips, in manifest order) and the paths that failed.

    Streams in batches of batch_size: features for a batch are built (or found) in the cache
    at cache_dir, then predicted, so memory stays bounded by one batch whatever the session's
    size. The audit and the inbox's scoring (core/inbox_child.py) predict this way.
    """
    cache = FeatureCache(cache_dir, loaded.feature_cfg)
    outputs: list[np.ndarray] = []
    failed: set[str] = set()
    for start in range(0, len(manifest), batch_size):
        context.check_stop("cancelled before every clip was predicted")
        paths = manifest["path"].iloc[start:start + batch_size].tolist()
        report = cache.build(paths, workers=workers, progress=False)
        failed.update(report.failed)
        readable = [p for p in paths if p not in report.failed]
        if readable:
            outputs.append(predict_probs(loaded.model, cache, cache.rows(readable), loaded.norm_stats, device=device))
        context.events.write("progress", done=min(start + batch_size, len(manifest)), total=len(manifest))
    probs = np.concatenate(outputs) if outputs else np.zeros((0, len(loaded.labels)), dtype=np.float32)
    return probs, failed


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.audit_child", run=run_audit)


if __name__ == "__main__":
    sys.exit(main())
