"""The ensemble's child job (plan D5): calibrate each member on val, save the ensemble, evaluate it.

The writer (pipelines/ensemble.py) freezes the session's manifest into a new run folder, as for
a fine-tune, and names the member checkpoints. Here each member predicts every frozen clip
(through core/models/ensemble.py, so exactly as the saved ensemble will), its temperature is
fitted on the val clips that are not in quarantine, and the ensemble's checkpoint, predictions,
metrics, plots and model card are written like a training run's: the ensemble is then audited,
compared, gated and promoted like any run.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.checkpoint import CONFIG_FILE as CHECKPOINT_CONFIG, checkpoint_dir, load_checkpoint, save_checkpoint
from core.child_job import JobContext, JobSpec, command_line, run_child_job
from core.config import EvaluationConfig, ModelConfig
from core.evaluate import apply_temperature, fit_temperature
from core.features import FeatureCache
from core.models.ensemble import ENSEMBLE, EnsembleClassifier, Member, ensemble_features
from core.run_folder import METRICS_FILE, write_json
from core.train import EVAL_BATCH, done_summary, evaluate_splits, read_manifest, readable_rows

CALIBRATION_SPLIT = "val"


@dataclasses.dataclass
class EnsembleJob(JobSpec):
    """What the writer froze for one ensemble (job.json)."""
    run_id: str
    labels: list[str]
    members: list[dict[str, Any]]  # {run_id, checkpoint, weight}
    cache_dir: str
    frozen_at_decision: int
    evaluation: dict[str, Any] = dataclasses.field(default_factory=dict)
    workers: int = 2


def run_ensemble(run_dir: str | Path) -> dict[str, Any]:
    """Assemble, calibrate and evaluate one ensemble; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _assemble(context, EnsembleJob.load(context.run_dir)))


def _assemble(context: JobContext, job: EnsembleJob) -> dict[str, Any]:
    run_dir, events = context.run_dir, context.events
    members = [Member(run_id=m["run_id"], description=json.loads((Path(m["checkpoint"]) / CHECKPOINT_CONFIG).read_text()),
                      weight=float(m["weight"])) for m in job.members]
    feature_cfg = ensemble_features(members)
    model = EnsembleClassifier(labels=job.labels, members=members, feature_cfg=feature_cfg,
                               models=[load_checkpoint(m["checkpoint"]).model for m in job.members])
    manifest = read_manifest(run_dir, job.labels)
    events.write("start", run_id=job.run_id, clips=len(manifest), labels=job.labels, members=[m.run_id for m in members])
    events.write("phase", phase="features", clips=len(manifest))
    cache = FeatureCache(job.cache_dir, feature_cfg)
    report = cache.build(manifest["path"].tolist(), workers=job.workers, progress=False)
    manifest = readable_rows(cache, manifest, report, events)

    events.write("phase", phase="calibrate")
    per_member = _member_probabilities(model, cache, manifest["row"].to_numpy(), context)
    held = ((manifest["split"] == CALIBRATION_SPLIT) & ~manifest["quarantined"].fillna(False).astype(bool)).to_numpy()
    if not held.any():
        raise ValueError("the session has no val clips outside quarantine: the members cannot be calibrated")
    y = manifest["y"].to_numpy()
    calibration = [fit_temperature(y_true=y[held], probs=probs[held]) for probs in per_member]
    for member, fitted in zip(members, calibration):
        member.temperature = fitted["temperature"]
    probs = _weighted_mean([apply_temperature(probs=p, temperature=m.temperature) for p, m in zip(per_member, members)],
                           [m.weight for m in members])

    save_checkpoint(checkpoint_dir(run_dir), model=model, model_cfg=ModelConfig(name=ENSEMBLE), feature_cfg=feature_cfg,
                    labels=job.labels, norm_stats={},
                    extra={"run_id": job.run_id, "frozen_at_decision": job.frozen_at_decision, "preset": ENSEMBLE,
                           "members": [m.run_id for m in members]})
    metrics = evaluate_splits(run_dir, manifest, probs, job.labels,
                              evaluation=EvaluationConfig.from_dict(job.evaluation, prefix="evaluation."))
    metrics["ensemble"] = _member_table(members, calibration, per_member, manifest)
    write_json(run_dir / METRICS_FILE, metrics)
    _write_card(run_dir, job, metrics)
    return {"status": "succeeded", "members": [m.run_id for m in members], "seconds": context.seconds(),
            **done_summary(metrics, events)}


def _member_probabilities(model: EnsembleClassifier, cache: FeatureCache, rows: np.ndarray,
                          context: JobContext) -> list[np.ndarray]:
    """Each member's uncalibrated probabilities for the cached rows, in the ensemble's label order."""
    outputs: list[list[torch.Tensor]] = [[] for _ in model.members]
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            context.check_stop("cancelled before every clip was predicted")
            waves = torch.from_numpy(cache.take(rows[start:start + EVAL_BATCH])).float()
            for collected, probs in zip(outputs, model.member_probabilities(waves)):
                collected.append(probs)
            context.events.write("progress", done=min(start + EVAL_BATCH, len(rows)), total=len(rows))
    return [torch.cat(parts).numpy().astype(np.float64) for parts in outputs]


def _weighted_mean(probs: list[np.ndarray], weights: list[float]) -> np.ndarray:
    shares = np.asarray(weights, dtype=np.float64) / sum(weights)
    return sum(share * p for share, p in zip(shares, probs))


def _member_table(members: list[Member], calibration: list[dict[str, Any]], per_member: list[np.ndarray],
                  manifest: pd.DataFrame) -> dict[str, Any]:
    """Per member: its temperature, weight and accuracy per split (calibration never changes a
    member's argmax), so the card shows what the ensemble adds over each of them."""
    y = manifest["y"].to_numpy()
    rows = []
    for member, fitted, probs in zip(members, calibration, per_member):
        correct = probs.argmax(1) == y
        accuracy = {split: float(correct[(manifest["split"] == split).to_numpy()].mean())
                    for split in sorted(manifest["split"].unique())}
        rows.append({"run_id": member.run_id, "model": member.description["model"]["name"], "weight": member.weight,
                     "temperature": fitted["temperature"], "val_ece_before": fitted["ece_before"],
                     "val_ece_after": fitted["ece_after"], "accuracy": accuracy})
    return {"members": rows}


def _write_card(run_dir: Path, job: EnsembleJob, metrics: dict[str, Any]) -> None:
    splits = sorted(metrics["splits"])
    lines = [f"# Model card: ensemble {job.run_id}", "",
             f"Classes ({len(job.labels)}): {', '.join(job.labels)}",
             f"Evaluated on the session's labels as of decision {job.frozen_at_decision} (manifest.parquet in the run folder).",
             "It averages its members' probabilities, each softmax(logits / T) with T fitted on val; weights as below.",
             "", "## Members", "",
             "| run | model | weight | temperature | " + " | ".join(f"{s} accuracy" for s in splits) + " |",
             "|---|---|---|---|" + "---|" * len(splits)]
    for member in metrics["ensemble"]["members"]:
        cells = " | ".join(f"{member['accuracy'].get(s, float('nan')):.4f}" for s in splits)
        lines.append(f"| {member['run_id']} | {member['model']} | {member['weight']:g} | {member['temperature']:.3f} | {cells} |")
    cells = " | ".join(f"{metrics['splits'][s]['given']['accuracy']:.4f}" for s in splits)
    lines += [f"| **ensemble** | | | | {cells} |", ""]
    (checkpoint_dir(run_dir) / "README.md").write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.ensemble_child", run=run_ensemble)


if __name__ == "__main__":
    sys.exit(main())
