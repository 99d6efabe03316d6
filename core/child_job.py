"""One runner for every child job of DESIGN.md's one-writer rule: training, audit, and the
coming hygiene, detector-comparison and study jobs.

A job module declares what the writer froze for it (a `JobSpec` dataclass, saved as job.json)
and a body that does the work in the run folder. `run_child_job` gives the body its event log
and stop flag, turns a cancel (`Cancelled`) or any error into a result, and writes result.json
whatever happened, so the writer (pipelines/child_process.py) follows every job the same way
and a crashed body never leaves it guessing. The outputs most jobs share (the predictions frame,
a split's plots) are written here once.

    def _body(context: JobContext) -> dict:   # returns result.json's content
        job = MyJob.load(context.run_dir)
        ...
        context.check_stop()                   # between units of work: raises Cancelled
    run_child_job(run_dir, _body)
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd

from core.plots import plot_breakdowns, plot_confusion, plot_reliability
from core.run_folder import EVENTS_FILE, JOB_FILE, RESULT_FILE, EventLog, StopFlag, write_json

__all__ = ["Cancelled", "JobContext", "JobSpec", "command_line", "plot_split", "predictions_frame", "run_child_job"]

SpecT = TypeVar("SpecT", bound="JobSpec")


class Cancelled(Exception):
    """The job was asked to stop (cancel file or SIGTERM/SIGINT); the message says what is left undone."""


@dataclasses.dataclass
class JobSpec:
    """Base of the job.json dataclasses: what the writer froze for one job, read back by the child."""

    @classmethod
    def load(cls: type[SpecT], run_dir: Path) -> SpecT:
        return cls(**json.loads((Path(run_dir) / JOB_FILE).read_text()))

    def save(self, run_dir: Path) -> None:
        (Path(run_dir) / JOB_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))


@dataclasses.dataclass
class JobContext:
    """What a job body gets from the runner: its folder, its event log, its stop flag and clock."""
    run_dir: Path
    events: EventLog
    stop: StopFlag
    started: float

    def check_stop(self, message: str = "cancelled") -> None:
        """Raise Cancelled(message) when a stop was asked for; call it between units of work."""
        if self.stop.raised:
            raise Cancelled(message)

    def seconds(self) -> float:
        return round(time.time() - self.started, 1)


def run_child_job(run_dir: str | Path, body: Callable[[JobContext], dict[str, Any]], *,
                  main_process: bool = True) -> dict[str, Any]:
    """Run body in run_dir and write its result.json (main process only, as the event log);
    returns the result. A Cancelled the body lets through becomes status "cancelled", any other
    exception status "failed" with its message (the traceback goes to the event log): the writer
    reads result.json, never a stack trace. Every result carries "seconds"."""
    run_dir = Path(run_dir)
    context = JobContext(run_dir=run_dir, events=EventLog(run_dir / EVENTS_FILE, enabled=main_process),
                         stop=StopFlag(run_dir), started=time.time())
    try:
        result = body(context)
    except Cancelled as stop:
        result = {"status": "cancelled", "error": str(stop)}
        context.events.write("cancelled")
    except Exception as exc:  # the writer reads result.json; the traceback goes to the log
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
        context.events.write("error", message=result["error"], traceback=traceback.format_exc())
    result.setdefault("seconds", context.seconds())
    if main_process:
        write_json(run_dir / RESULT_FILE, result)
    return result


def command_line(argv: list[str] | None, *, module: str, run: Callable[[str], dict[str, Any]],
                 ok: tuple[str, ...] = ("succeeded",)) -> int:
    """`python -m MODULE RUN_DIR`: run the job on RUN_DIR; exit 0 when its status is one of ok,
    1 otherwise (result.json says why), 2 for a bad command line."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m {module} RUN_DIR", file=sys.stderr)
        return 2
    return 0 if run(argv[0])["status"] in ok else 1


def predictions_frame(clips: pd.DataFrame, probs: np.ndarray, labels: list[str]) -> pd.DataFrame:
    """One row per clip (clip_id, split, label as given, predicted, confidence, probs) for
    predictions.parquet; probs (len(clips), len(labels)) in the labels' order."""
    return pd.DataFrame({
        "clip_id": clips["clip_id"].to_numpy(), "split": clips["split"].to_numpy(), "label": clips["label"].to_numpy(),
        "predicted": [labels[i] for i in probs.argmax(1)], "confidence": probs.max(1).astype(float),
        "probs": list(probs.astype(np.float32)),
    })


def plot_split(plots: Path, split: str, report: dict[str, Any], breakdowns: dict[str, Any], labels: list[str], *,
               confusion_title: str, breakdowns_title: str) -> None:
    """A split's confusion matrix and reliability diagram, and its metadata breakdowns when any:
    the pictures every evaluating job leaves in plots/."""
    plot_confusion(plots / f"confusion_{split}.png", matrix=np.array(report["confusion"]["counts"]), labels=labels,
                   normalized=False, title=confusion_title)
    plot_reliability(plots / f"reliability_{split}.png", bins=report["calibration"]["bins"],
                     ece=report["calibration"]["ece"])
    if breakdowns:
        plot_breakdowns(plots / f"breakdowns_{split}.png", breakdowns=breakdowns, title=breakdowns_title)
