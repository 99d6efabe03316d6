"""Child jobs of the one-writer rule: start a module on a run folder, follow its events, cancel it.

A job is `python -m MODULE RUN_DIR` (or `accelerate launch ... -m MODULE RUN_DIR` for several
processes). It appends JSON lines to RUN_DIR/events.jsonl and writes RUN_DIR/result.json when
it ends; stdout and stderr go to RUN_DIR/job.log. It never opens the session store.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from core.run_folder import CANCEL_FILE, EVENTS_FILE, LOG_FILE, RESULT_FILE

REPO_ROOT = Path(__file__).resolve().parent.parent


def launch(run_dir: Path, *, module: str, processes: int = 1) -> subprocess.Popen:
    """Start `module` on run_dir as a child in its own process group; output to RUN_DIR/job.log."""
    run_dir = Path(run_dir)
    if processes > 1:
        command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(processes),
                   "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        # "--cpu" would route to a single-process launcher; torchrun via --multi_gpu spawns the
        # processes and core.train picks the gloo CPU backend when no GPU is present.
        command += ["--multi_gpu"]
        command += ["-m", module, str(run_dir)]
    else:
        command = [sys.executable, "-m", module, str(run_dir)]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log = open(run_dir / LOG_FILE, "ab")
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def read_events(run_dir: Path, *, offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    """Events appended since byte offset, and the new offset (only whole lines are read)."""
    path = Path(run_dir) / EVENTS_FILE
    if not path.exists():
        return [], offset
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    events = [json.loads(line) for line in data[:end].splitlines() if line.strip()]
    return events, offset + end


def follow(run_dir: Path, process: subprocess.Popen, *, on_event: Callable[[dict[str, Any]], None],
           poll_s: float = 0.2, offset: int = 0) -> int:
    """Feed every event from byte offset on (a resumed run's earlier lines are skipped) to
    on_event until the child exits; returns its exit code."""
    while True:
        done = process.poll() is not None
        events, offset = read_events(run_dir, offset=offset)
        for event in events:
            on_event(event)
        if done:
            return process.returncode
        time.sleep(poll_s)


def cancel(run_dir: Path, process: subprocess.Popen | None = None) -> None:
    """Ask a run to stop after its current step (cancel file + SIGTERM to its process group)."""
    (Path(run_dir) / CANCEL_FILE).touch()
    if process is not None and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)


def run_child(run_dir: Path, *, module: str, desc: str, unit: str = "clip", progress: bool = True,
              on_event: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """Launch `module` on run_dir and follow it to the end with a tqdm bar (its "start" event
    gives the total as "clips", "progress" events the count "done"); Ctrl-C cancels it. Returns
    its result.json, or a failed result quoting job.log's last lines when it wrote none."""
    process = launch(run_dir, module=module)
    bar = tqdm(total=None, desc=desc, unit=unit, disable=not progress)

    def show(event: dict[str, Any]) -> None:
        if on_event is not None:
            on_event(event)
        if event["type"] == "start":
            bar.reset(total=event.get("clips"))
        elif event["type"] == "progress":
            bar.n = event["done"]
            bar.refresh()
        elif event["type"] in ("warning", "error"):
            bar.write(f"{event['type']}: {event['message']}")

    try:
        exit_code = follow(run_dir, process, on_event=show)
    except KeyboardInterrupt:
        bar.write(f"cancelling {desc.split(':')[0]} ...")
        cancel(run_dir, process)
        exit_code = follow(run_dir, process, on_event=show)
    finally:
        bar.close()
    result_file = Path(run_dir) / RESULT_FILE
    if not result_file.exists():
        log = Path(run_dir) / LOG_FILE
        tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
        return {"status": "failed", "error": f"the {module} process ended (exit code {exit_code}) without a result; "
                                             f"last log lines: {' | '.join(tail) or '(no log)'}"}
    return json.loads(result_file.read_text())
