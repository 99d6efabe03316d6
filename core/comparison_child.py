"""Detector comparison's child job (B5, B9): score the frozen dev and test clips with every
requested speech detector, then write plan B9's report.

    python -m core.comparison_child RUN_DIR

Under DESIGN.md's one-writer rule it reads only its run folder (job.json: ComparisonJob;
manifest.parquet: clip_id, path, label, split and meta.* columns) and writes only there
(events.jsonl, scores.parquet, report/, result.json). Detectors run one after another, clip by
clip, so each row's costs are that clip's own latency; a cancel is honoured between clips. A
detector that cannot be built is named with its one-line error in result.json and the others
go on; a clip a detector cannot read keeps its reason in scores.parquet's error column.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from core.breakdowns import METADATA_PREFIX
from core.child_job import JobContext, JobSpec, command_line, run_child_job
from core.detector_report import DURATION, REPORT_FILES, SNR, build_report, write_report
from core.detectors import build_detector
from core.run_folder import MANIFEST_FILE

SCORES_FILE = "scores.parquet"
REPORT_DIR = "report"
PROGRESS_EVERY = 10  # clips between progress events (a cancel is checked after every clip)


@dataclasses.dataclass
class ComparisonJob(JobSpec):
    """What the writer froze for one comparison run (job.json)."""
    run_id: str
    # One entry per detector: {"name": its name in the report, "detector": a core.detectors
    # registry name, "options": what build_detector takes (run_dir= for a trained run)}.
    detectors: list[dict[str, Any]]
    settings: dict[str, Any]  # ComparisonConfig.to_dict()


def run_comparison(run_dir: str | Path) -> dict[str, Any]:
    """Score and report one comparison run; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _compare(context, ComparisonJob.load(context.run_dir)))


def clip_facts(manifest: pd.DataFrame) -> pd.DataFrame:
    """A frozen manifest as the clip facts core.detector_report reads: clip_id, label, split,
    path, and snr_db / duration_ms where the clips carry that metadata."""
    facts = manifest[["clip_id", "label", "split", "path"]].copy()
    for column in (SNR, DURATION):
        if METADATA_PREFIX + column in manifest:
            facts[column] = pd.to_numeric(manifest[METADATA_PREFIX + column], errors="coerce")
    return facts


def _compare(context: JobContext, job: ComparisonJob) -> dict[str, Any]:
    manifest = pd.read_parquet(context.run_dir / MANIFEST_FILE)
    total = len(manifest) * len(job.detectors)
    context.events.write("start", clips=total, detectors=[spec["name"] for spec in job.detectors])
    frames, errors = [], {}
    for index, spec in enumerate(job.detectors):
        context.check_stop()
        try:
            detector = build_detector(spec["detector"], **spec["options"])
        except Exception as exc:  # any reason a detector cannot be built is its one line, the others go on
            errors[spec["name"]] = f"{type(exc).__name__}: {exc}"
            context.events.write("warning", message=f"{spec['name']} not compared: {errors[spec['name']]}")
            continue
        frames.append(_score(context, detector, spec["name"], manifest, done_before=index * len(manifest), total=total))
    if not frames:
        return {"status": "failed", "error": "no detector could be built: "
                + "; ".join(f"{name}: {error}" for name, error in errors.items()), "errors": errors}
    scores = pd.concat(frames, ignore_index=True)
    scores.to_parquet(context.run_dir / SCORES_FILE)
    context.events.write("info", message="scored every clip; writing the report")
    settings = {key: value for key, value in job.settings.items() if key != "detectors"}
    report = {**build_report(scores=scores, clips=clip_facts(manifest), **settings), "run_id": job.run_id,
              "not_compared": errors}
    write_report(context.run_dir / REPORT_DIR, report)
    return {"status": "succeeded", "scored": scores.groupby("detector", sort=False).score.count().to_dict(),
            "errors": errors, "report": f"{REPORT_DIR}/{REPORT_FILES['json']}"}


def _score(context: JobContext, detector: Any, name: str, manifest: pd.DataFrame, *, done_before: int,
           total: int) -> pd.DataFrame:
    """One detector's scores of every manifest clip (with clip_id), progress events as it goes."""
    def progress(done: int, clips: int) -> None:
        context.check_stop(f"cancelled while {name} scored clip {done} of {clips}")
        if done % PROGRESS_EVERY == 0 or done == clips:
            context.events.write("progress", done=done_before + done, total=total, detector=name)

    frame = detector.score(list(manifest.path), progress=progress)
    return frame.assign(clip_id=manifest.clip_id.to_numpy()[frame["clip"].to_numpy()], detector=name).drop(columns="clip")


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.comparison_child", run=run_comparison)


if __name__ == "__main__":
    sys.exit(main())
