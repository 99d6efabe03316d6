"""A job as the Train tab draws it: the progress bar with its status line, the loss and validation
curves, the log tail, and the table of this server's jobs; a finished prompt search names its
best prompt. Plain values from a job snapshot (workbench/job_queue.py); no store reads, so the
1 s timer stays cheap. A study shows its trials done, the running trial's steps and curves, the
best config so far and the time left; once it ends, its headline and where to open it."""
from __future__ import annotations

import html
from typing import Any

import pandas as pd

from workbench.common import queue_place
from workbench.context import Workbench
from workbench.job_queue import PHASES, Job

JOB_COLUMNS = ["run", "job", "state", "preset", "changed settings", "by", "frozen at decision"]
LOADING = '<div class="em-job" data-status="loading"><div class="em-job-status">Reading the job queue&hellip;</div></div>'
LOG_TAIL = 14
MAX_CURVE_POINTS = 400
LOSS_SERIES = ("train loss (per step)", "validation loss")
SCORE_SERIES = ("validation accuracy", "validation F1 macro")
CURVE_COLOURS = {"train loss (per step)": "#4f46e5", "validation loss": "#e67e22",
                 "validation accuracy": "#1e8449", "validation F1 macro": "#8e44ad"}
ERROR_STYLE = "margin-top:6px;padding:6px 10px;border-left:4px solid #c0392b;background:#fdecea;color:#922b21;white-space:pre-wrap"
BAR_COLOURS = {"succeeded": "#1e8449", "failed": "#c0392b", "cancelled": "#7f8c8d",
               "trained, gates passed": "#1e8449", "trained, gates failed": "#c0392b",
               "audited, gates passed": "#1e8449", "audited, gates failed": "#c0392b"}


def job_views(job: Job | None) -> list[Any]:
    """Progress bar, the two curves and the log tail of one job (or of none yet)."""
    if job is None:
        return [progress_html(None), curve([], LOSS_SERIES), curve([], SCORE_SERIES), ""]
    losses = [p for p in job.curve if p["series"] in LOSS_SERIES]
    per_step = [p for p in losses if p["series"] == LOSS_SERIES[0]]
    if len(per_step) > MAX_CURVE_POINTS:  # thin the per-step loss; keep every validation point
        losses = per_step[::-(-len(per_step) // MAX_CURVE_POINTS)] + [p for p in losses if p["series"] != LOSS_SERIES[0]]
    return [progress_html(job), curve(losses, LOSS_SERIES), curve(job.curve, SCORE_SERIES),
            "\n".join(list(job.log)[-LOG_TAIL:])]


def jobs_frame(wb: Workbench) -> pd.DataFrame:
    """Every job of this server, newest first (JOB_COLUMNS), with its place in the queue or phase."""
    current = wb.jobs.current()
    rows = []
    for job in reversed(wb.jobs.jobs()):
        place = queue_place(wb.jobs, job.run_id)
        state = (f"queued #{place}" if place else f"running: {job.phase}" if job.run_id == current else job.state)
        rows.append([job.run_id, job.kind, state, job.preset, ", ".join(job.overrides) or "-", job.submitted_by,
                     job.frozen_at_decision])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def curve(points: list[dict[str, Any]], series: tuple[str, ...]) -> pd.DataFrame:
    """Points of the named series, plus one empty (NaN) point per series.

    Why the empty points: Gradio's plot fixes its colour legend from the first data it draws,
    so every series must be named from the start, or the validation curves added after the
    first epoch would never get a line.
    """
    frame = pd.DataFrame([p for p in points if p["series"] in series], columns=["step", "series", "value"])
    placeholders = pd.DataFrame({"step": 0, "series": list(series), "value": float("nan")})
    return pd.concat([placeholders, frame], ignore_index=True).astype({"step": "int64", "value": "float64"})


def progress_html(job: Job | None) -> str:
    """The job's title, bar (coloured by its outcome) and status line; its error when it failed."""
    if job is None:
        return ('<div class="em-job" data-status="none"><div class="em-job-status">No fine-tune has run in this server yet. '
                'Choose a preset, adjust the settings, and press Fine-tune.</div></div>')
    percent = 100 * job.fraction_done()
    what = {"fine-tune": f"<b>run {html.escape(job.run_id)}</b> &middot; {html.escape(job.preset)}",
            "audit": f"<b>audit of run {html.escape(job.run_id)}</b>",
            "prompt-search": f"<b>prompt search {html.escape(job.run_id)}</b> &middot; {html.escape(job.preset)}",
            "study": f"<b>study {html.escape(job.run_id)}</b> &middot; {html.escape(job.preset)}"}[job.kind]
    title = (f"{what} &middot; started by {html.escape(job.submitted_by)} &middot; labels frozen at decision "
             f"{job.frozen_at_decision}")
    error = (f'<div class="em-job-error" style="{ERROR_STYLE}">{html.escape(job.error)}</div>'
             if job.error and job.status == "failed" else "")
    note = f'<div style="margin-top:4px">{html.escape(job.error)}</div>' if job.error and job.status == "cancelled" else ""
    gates = "none" if job.gates_passed is None else "passed" if job.gates_passed else "failed"
    return (f'<div class="em-job" data-status="{job.status}" data-gates="{gates}" data-phase="{job.phase}">'
            f'<div style="margin-bottom:4px">{title}</div>'
            f'<div class="em-progress"><div style="width:{percent:.1f}%;background:{BAR_COLOURS.get(job.state, "")}"></div></div>'
            f'<div class="em-job-status" style="margin-top:4px">{" &middot; ".join(html.escape(p) for p in _status(job))}</div>'
            f'{error}{note}{_best_prompt(job)}{_study_outcome(job)}</div>')


def _best_prompt(job: Job) -> str:
    """A succeeded prompt search's best prompt, its dev and test scores, and what uses it."""
    best = (job.result or {}).get("best") if job.kind == "prompt-search" and job.status == "succeeded" else None
    if not best:
        return ""
    final = job.result["final"]
    test = ("-" if final.get("test_balanced_accuracy") is None
            else f"{final['test_balanced_accuracy']:.1%} on {final['test_clips']} test clips")
    return (f'<div class="em-search-best" style="margin-top:6px">Best prompt ({html.escape(best["origin"])}, '
            f'{html.escape(best["speech_answer"])} = speech): <b>dev balanced accuracy {best["balanced_accuracy"]:.1%}</b> '
            f'on {best["clips"]} val clips; test balanced accuracy {test} at the dev threshold '
            f'{final["threshold"]:.3f}. A fine-tune of this base model with prompt_from_search asks with it.'
            f'<pre class="em-prompt">{html.escape(best["text"])}</pre></div>')


def _study_outcome(job: Job) -> str:
    """A finished study's headline (its summary message) and where its table and plot are."""
    if job.kind != "study" or not job.finished or not job.result:
        return ""
    return (f'<div class="em-study-outcome" style="margin-top:6px">{html.escape(job.result["message"])}. '
            f'The results table, the plot and Promote through the gates are in the '
            f'<a href="#" class="em-open-tab" data-tab="Runs">Runs tab</a> (select study {html.escape(job.run_id)}).</div>')


def _study_status(job: Job) -> list[str]:
    """A study's status line: trials done, the running trial and its steps, the best so far, time left."""
    parts = [PHASES.get(job.phase, job.phase) if not job.finished else job.state]
    if job.trials_total:
        parts.append(f"{job.trials_done} / {job.trials_total} trials done"
                     + (f" ({job.trials_failed} failed)" if job.trials_failed else ""))
    if job.trial and not job.finished:
        parts.append(f"trial {job.trials_done + 1}: {job.trial}"
                     + (f", step {job.step} / {job.total_steps}" if job.total_steps else ""))
    best = job.best
    if best:
        spread = "" if best.get("std") is None else f" ± {best['std']:.3f}"
        parts.append(f"best so far: {best['name']}, val {job.metric} {best['mean']:.3f}{spread} over "
                     f"{best['seeds']} seed(s)")
    if not job.finished:
        parts.append(f"about {_duration(job.eta_s)} left" if job.eta_s is not None
                     else "time left: known when the first trial ends")
    return parts


def _status(job: Job) -> list[str]:
    """The parts of the status line: phase or outcome, epoch, step, clips audited, start, time left."""
    if job.kind == "study":
        return _study_status(job)
    parts = [PHASES.get(job.phase, job.phase) if not job.finished else job.state]
    if job.epochs and job.phase == "training":
        parts.append(f"epoch {min(job.epoch, job.epochs):.1f} / {job.epochs}")
    if job.total_steps:
        parts.append(f"step {job.step} / {job.total_steps}")
    if job.phase == "auditing" and job.audit_total:
        parts.append(f"{job.audit_done} / {job.audit_total} clips predicted")
    if job.kind == "prompt-search" and job.search_total and not job.finished:
        number = job.prompt_number()
        if number is not None:
            parts.append(f"prompt {number} of {job.prompts} ({job.candidate})")
        parts.append(f"{job.search_done} / {job.search_total} clip answers scored")
    if job.start_line():
        parts.append(job.start_line())
    if job.eta_s is not None and not job.finished and job.phase == "training":
        parts.append(f"about {_duration(job.eta_s)} left in training")
    return parts


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
