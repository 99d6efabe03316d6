"""The audit's child job: predict every frozen clip with a checkpoint, score, flag, plot.

    python -m core.audit_job RUN_DIR

It runs under DESIGN.md's one-writer rule: it reads only its run folder (job.json: AuditJob;
manifest.parquet: the clips with their labels as of the freeze and whether each was
quarantined then) and writes only there (events.jsonl, predictions.parquet, metrics.json,
extreme_off.parquet, plots/, result.json). It never opens the session store.

Any registered architecture works: the checkpoint folder describes its model and features,
and features come from the session's cache, built batch by batch as the audit streams through
the clips (a clip never cached, e.g. one quarantined before any training, is computed here).
Clips quarantined at the freeze are predicted, but left out of the metrics until resolved
(A1); so are clips whose label the model does not know. metrics.json counts both, and the
clips excluded by a decision (never frozen: e.g. ambiguous drones, A3), as job.json lists them.
Each split's metrics are broken down by clip metadata (core/breakdowns.py) with the audited
model's evaluation settings.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.audit import extreme_off_counts, extreme_off_proposals
from core.breakdowns import plan_breakdowns
from core.checkpoint import load_checkpoint
from core.config import EvaluationConfig
from core.evaluate import classification_report
from core.features import FeatureCache
from core.jobs import EVENTS_FILE, JOB_FILE, MANIFEST_FILE, RESULT_FILE, EventLog, StopFlag, json_default
from core.plots import plot_breakdowns, plot_confusion, plot_reliability
from core.train import METRICS_FILE, PLOTS_DIR, PREDICTIONS_FILE, predict_probs

EXTREME_OFF_FILE = "extreme_off.parquet"


class Cancelled(Exception):
    """The audit was asked to stop."""


@dataclasses.dataclass
class AuditJob:
    """What the writer froze for one audit (job.json)."""
    run_id: str
    model_run_id: str
    checkpoint: str
    cache_dir: str
    splits: list[str]
    max_label_prob: float
    min_top_prob: float
    frozen_at_decision: int
    excluded: dict[str, int] = dataclasses.field(default_factory=dict)  # per split: excluded by a decision, not frozen
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)  # EvaluationConfig of the audited model's run
    batch_size: int = 256
    workers: int = 2

    @classmethod
    def load(cls, run_dir: Path) -> "AuditJob":
        return cls(**json.loads((run_dir / JOB_FILE).read_text()))

    def save(self, run_dir: Path) -> None:
        (run_dir / JOB_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def run_audit(run_dir: str | Path) -> dict[str, Any]:
    """Predict, score and plot one audit; returns result.json's content (also written)."""
    run_dir = Path(run_dir)
    events = EventLog(run_dir / EVENTS_FILE, enabled=True)
    stop = StopFlag(run_dir)
    started = time.time()
    try:
        result = _audit(run_dir, AuditJob.load(run_dir), events, stop)
    except Cancelled:
        result = {"status": "cancelled", "error": "cancelled before every clip was predicted"}
        events.write("cancelled")
    except Exception as exc:  # the writer reads result.json; the traceback goes to the log
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        events.write("error", message=result["error"], traceback=traceback.format_exc())
    result["seconds"] = round(time.time() - started, 1)
    (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=json_default))
    return result


def _audit(run_dir: Path, job: AuditJob, events: EventLog, stop: StopFlag) -> dict[str, Any]:
    manifest = pd.read_parquet(run_dir / MANIFEST_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_checkpoint(job.checkpoint, device=device)
    classes = loaded.labels
    events.write("start", clips=len(manifest), labels=classes, model_run_id=job.model_run_id, device=device)
    probs, failed = _predict_streamed(manifest, loaded, job, events, stop, device=device)
    predicted = manifest[~manifest["path"].isin(failed)].reset_index(drop=True)
    if failed:
        events.write("warning", message=f"{len(failed)} clips could not be read and are left out",
                     clips=sorted(failed)[:20])

    events.write("phase", phase="evaluate")
    class_index = {label: i for i, label in enumerate(classes)}
    y = predicted["label"].map(class_index)
    known = y.notna().to_numpy()
    pd.DataFrame({
        "clip_id": predicted["clip_id"], "split": predicted["split"], "label": predicted["label"],
        "predicted": [classes[i] for i in probs.argmax(1)], "confidence": probs.max(1).astype(float),
        "probs": list(probs.astype(np.float32)),
    }).to_parquet(run_dir / PREDICTIONS_FILE)
    scored = predicted[known].reset_index(drop=True)
    scored_probs, scored_y = probs[known], y[known].astype(int).to_numpy()
    thresholds = {"max_label_prob": job.max_label_prob, "min_top_prob": job.min_top_prob}
    extreme_off_proposals(clip_ids=scored["clip_id"].to_numpy(), labels=scored_y, pred_probs=scored_probs,
                          classes=classes, **thresholds).to_parquet(run_dir / EXTREME_OFF_FILE)

    plan = plan_breakdowns(predicted, EvaluationConfig.from_dict(job.evaluation, prefix="evaluation."))
    metrics: dict[str, Any] = {"labels": classes, "splits": {}, "counts": {}, "extreme_off": {}, "thresholds": thresholds,
                               "breakdowns": {}, "breakdowns_skipped": plan.skipped}
    for split in job.splits:
        in_split = (predicted["split"] == split).to_numpy()
        scorable = in_split & known
        evaluated = scorable & ~predicted["quarantined"].to_numpy()
        metrics["counts"][split] = {
            "clips": int(in_split.sum()), "evaluated": int(evaluated.sum()),
            "excluded_quarantined": int((scorable & ~evaluated).sum()),
            "excluded_unknown_label": int((in_split & ~known).sum()),
            "excluded": int(job.excluded.get(split, 0)),
        }
        if not scorable.any():
            continue
        split_rows = np.flatnonzero(scorable[known])  # positions within the scored frame
        metrics["extreme_off"][split] = extreme_off_counts(labels=scored_y[split_rows], pred_probs=scored_probs[split_rows],
                                                           classes=classes, **thresholds)
        if evaluated.any():
            metrics["splits"][split] = _split_reports(predicted[evaluated], probs[evaluated], classes)
            rows = np.flatnonzero(evaluated)
            breakdowns = plan.report(rows, y_true=y.to_numpy()[rows].astype(int), y_pred=probs[rows].argmax(1),
                                     labels=classes)
            if breakdowns:
                metrics["breakdowns"][split] = breakdowns
            _plot_split(run_dir / PLOTS_DIR, split, metrics["splits"][split]["given"], breakdowns, classes)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=json_default))
    summary = {split: {"accuracy": entry["given"]["accuracy"],
                       **({"accuracy_true": entry["true"]["accuracy"]} if "true" in entry else {})}
               for split, entry in metrics["splits"].items()}
    events.write("phase", phase="done", **summary)
    return {"status": "succeeded", "predicted": len(predicted), "failed": len(failed), "splits": summary,
            "counts": metrics["counts"]}


def _predict_streamed(manifest: pd.DataFrame, loaded, job: AuditJob, events: EventLog, stop: StopFlag, *,
                      device: str) -> tuple[np.ndarray, set[str]]:
    """Probabilities (rows of readable clips, in manifest order) and the paths that failed.

    Streams in batches of job.batch_size: features for a batch are built (or found) in the
    cache, then predicted, so memory stays bounded by one batch whatever the session's size.
    """
    cache = FeatureCache(job.cache_dir, loaded.feature_cfg)
    outputs: list[np.ndarray] = []
    failed: set[str] = set()
    for start in range(0, len(manifest), job.batch_size):
        if stop.raised:
            raise Cancelled()
        paths = manifest["path"].iloc[start:start + job.batch_size].tolist()
        report = cache.build(paths, workers=job.workers, progress=False)
        failed.update(report.failed)
        readable = [p for p in paths if p not in report.failed]
        if readable:
            outputs.append(predict_probs(loaded.model, cache, cache.rows(readable), loaded.norm_stats, device=device))
        events.write("progress", done=min(start + job.batch_size, len(manifest)), total=len(manifest))
    probs = np.concatenate(outputs) if outputs else np.zeros((0, len(loaded.labels)), dtype=np.float32)
    return probs, failed


def _split_reports(part: pd.DataFrame, probs: np.ndarray, classes: list[str]) -> dict[str, Any]:
    """The report against the labels as given, and against the true labels where the data knows
    them (synthetic demo clips carry theirs; never shown to annotators)."""
    index = {label: i for i, label in enumerate(classes)}
    entry = {"given": classification_report(y_true=part["label"].map(index).astype(int).to_numpy(), probs=probs,
                                            labels=classes)}
    true_y = part["true_label"].map(index) if "true_label" in part else pd.Series(np.nan, index=part.index)
    known = true_y.notna().to_numpy()
    if known.any():
        entry["true"] = classification_report(y_true=true_y[known].astype(int).to_numpy(), probs=probs[known], labels=classes)
    return entry


def _plot_split(plots: Path, split: str, report: dict[str, Any], breakdowns: dict[str, Any], classes: list[str]) -> None:
    plot_confusion(plots / f"confusion_{split}.png", matrix=np.array(report["confusion"]["counts"]), labels=classes,
                   normalized=False, title=f"{split}: audit (given labels, quarantined clips left out)")
    plot_reliability(plots / f"reliability_{split}.png", bins=report["calibration"]["bins"],
                     ece=report["calibration"]["ece"])
    if breakdowns:
        plot_breakdowns(plots / f"breakdowns_{split}.png", breakdowns=breakdowns,
                        title=f"{split}: audit accuracy by clip metadata (given labels)")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.audit_job RUN_DIR", file=sys.stderr)
        return 2
    result = run_audit(argv[0])
    return 0 if result["status"] == "succeeded" else 1


if __name__ == "__main__":
    sys.exit(main())
