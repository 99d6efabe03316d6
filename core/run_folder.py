"""The child side of a job's run folder: file names, the event log, and the stop flag.

Shared by every job (core/child_job.py runs them) so the writer side (pipelines/child_process.py)
can follow and ingest any of them the same way.
"""
from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.parquet"
JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"
CANCEL_FILE = "cancel"
LOG_FILE = "job.log"
PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"


class EventLog:
    """Append-only JSON lines the writer tails for progress (only the main process writes)."""

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path, self.enabled = path, enabled

    def write(self, kind: str, **fields: Any) -> None:
        if not self.enabled:
            return
        record = {"type": kind, "time": round(time.time(), 3), **fields}
        with open(self.path, "a") as out:
            out.write(json.dumps(record, default=json_default) + "\n")


class StopFlag:
    """Set by SIGTERM/SIGINT or a cancel file; checked once per step."""

    def __init__(self, run_dir: Path) -> None:
        self.cancel_file = run_dir / CANCEL_FILE
        self.signalled = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, *_: Any) -> None:
        self.signalled = True

    @property
    def raised(self) -> bool:
        return self.signalled or self.cancel_file.exists()


def write_json(path: Path, data: Any) -> None:
    """An indented JSON file (numpy values included): metrics.json, result.json."""
    Path(path).write_text(json.dumps(data, indent=2, default=json_default))


def json_default(value: Any) -> Any:
    """JSON for numpy scalars and arrays (metrics and events carry them)."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)
