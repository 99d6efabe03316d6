"""VAD hygiene's child job (B6): measure every frozen clip with one voice-activity detector.

    python -m core.hygiene_child RUN_DIR

Under DESIGN.md's one-writer rule it reads only its run folder (job.json: HygieneJob;
manifest.parquet: clip_id, path, label) and writes only there (events.jsonl, vad.parquet,
result.json). Clips are read at 16 kHz, a rate both detectors take, in chunks: Silero runs a
chunk side by side (core.vad.silero_probabilities_batch), WebRTC clip by clip. A clip that
cannot be read is left out and named in a warning; the writer judges the rest.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core import audio, vad
from core.child_job import JobContext, JobSpec, command_line, run_child_job
from core.run_folder import MANIFEST_FILE

VAD_FILE = "vad.parquet"
READ_RATE_HZ = 16000
CHUNK = vad.SILERO_BATCH  # clips read and measured together


@dataclasses.dataclass
class HygieneJob(JobSpec):
    """What the writer froze for one hygiene run (job.json)."""
    run_id: str
    vad: str                    # core.vad.VAD_NAMES
    options: dict[str, Any]     # the detector's options (webrtc: mode, frame_ms; silero: threshold)


def run_hygiene(run_dir: str | Path) -> dict[str, Any]:
    """Measure one hygiene run's clips; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _measure_all(context, HygieneJob.load(context.run_dir)))


def _measure_all(context: JobContext, job: HygieneJob) -> dict[str, Any]:
    manifest = pd.read_parquet(context.run_dir / MANIFEST_FILE)
    context.events.write("start", clips=len(manifest), vad=job.vad, options=job.options)
    rows: list[dict[str, Any]] = []
    unreadable: dict[str, str] = {}
    timer = vad.StageTimer()
    for start in range(0, len(manifest), CHUNK):
        context.check_stop()
        chunk = manifest.iloc[start:start + CHUNK]
        waves = _read_chunk(chunk, unreadable, timer)
        measured_chunk = vad.measure_batch(list(waves.values()), READ_RATE_HZ, vad=job.vad, timer=timer, **job.options)
        for clip_id, measured in zip(waves, measured_chunk):
            rows.append({"clip_id": clip_id, "detector": measured.detector, "fraction": measured.fraction,
                         "frame_s": measured.frame_s, "frame_scores": measured.frame_scores.astype(np.float32)})
        context.events.write("progress", done=start + len(chunk), total=len(manifest))
    if unreadable:
        context.events.write("warning", message=f"{len(unreadable)} clips could not be read and are left out",
                             clips=sorted(unreadable)[:20])
    pd.DataFrame(rows, columns=["clip_id", "detector", "fraction", "frame_s", "frame_scores"]).to_parquet(
        context.run_dir / VAD_FILE)
    audio_s = sum(float(len(r["frame_scores"]) * r["frame_s"]) for r in rows)
    return {"status": "succeeded", "measured": len(rows), "unreadable": unreadable,
            "stage_seconds": {k: round(v, 3) for k, v in timer.seconds.items()}, "audio_seconds": round(audio_s, 1)}


def _read_chunk(chunk: pd.DataFrame, unreadable: dict[str, str], timer: vad.StageTimer) -> dict[int, np.ndarray]:
    """clip_id -> mono float audio at READ_RATE_HZ for the clips of chunk that can be read."""
    waves = {}
    with timer.stage("load"):
        for row in chunk.itertuples():
            try:
                waves[int(row.clip_id)] = audio.load(row.path, sample_rate_hz=READ_RATE_HZ)
            except (audio.AudioError, OSError) as exc:
                unreadable[str(row.path)] = str(exc)
    return waves


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.hygiene_child", run=run_hygiene)


if __name__ == "__main__":
    sys.exit(main())
