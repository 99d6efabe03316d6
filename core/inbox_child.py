"""The inbox's scoring child job: predict every frozen unlabelled clip with a checkpoint.

    python -m core.inbox_child RUN_DIR

Under DESIGN.md's one-writer rule it reads only its run folder (job.json: ScoreJob;
manifest.parquet: the inbox clips still without a label at the freeze) and writes only there
(events.jsonl, predictions.parquet, result.json). It never opens the store: the writer ranks
the predictions (core/uncertainty.py) when it ingests them (pipelines/inbox.py). Clips are
predicted in batches like the audit's (audit_child.predict_streamed), so a large inbox streams.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from core.audit_child import predict_streamed
from core.checkpoint import load_checkpoint
from core.child_job import JobContext, JobSpec, command_line, predictions_frame, run_child_job
from core.run_folder import MANIFEST_FILE, PREDICTIONS_FILE


@dataclasses.dataclass
class ScoreJob(JobSpec):
    """What the writer froze for one scoring of the inbox (job.json)."""
    run_id: str
    model_run_id: str
    checkpoint: str
    cache_dir: str
    frozen_at_decision: int
    batch_size: int = 256
    workers: int = 2


def run_scoring(run_dir: str | Path) -> dict[str, Any]:
    """Predict the frozen inbox clips; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _score(context, ScoreJob.load(context.run_dir)))


def _score(context: JobContext, job: ScoreJob) -> dict[str, Any]:
    manifest = pd.read_parquet(context.run_dir / MANIFEST_FILE)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    loaded = load_checkpoint(job.checkpoint, device=device)
    context.events.write("start", clips=len(manifest), labels=loaded.labels, model_run_id=job.model_run_id,
                         device=device)
    probs, failed = predict_streamed(manifest, loaded, context, cache_dir=job.cache_dir, batch_size=job.batch_size,
                                     workers=job.workers, device=device)
    if failed:
        context.events.write("warning", message=f"{len(failed)} clips could not be read and are left out",
                             clips=sorted(failed)[:20])
    predicted = manifest[~manifest["path"].isin(failed)].reset_index(drop=True)
    predictions_frame(predicted, probs, loaded.labels).to_parquet(context.run_dir / PREDICTIONS_FILE)
    context.events.write("phase", phase="done", predicted=len(predicted))
    return {"status": "succeeded", "predicted": len(predicted), "failed": sorted(failed), "labels": loaded.labels}


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.inbox_child", run=run_scoring)


if __name__ == "__main__":
    sys.exit(main())
