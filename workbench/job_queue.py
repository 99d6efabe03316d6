"""The workbench's job queue: schedules the fine-tune -> audit -> gates loop, one job at a time, in a server thread.

The audit and the gates after training are the pipeline's (pipelines/finetune_audit_gates.py,
the same as `earmark finetune`); this module queues, follows the training child for live
progress, cancels, and hands the UI snapshots. Four kinds of submission share the queue: a
fine-tune, a resumed fine-tune (a cancelled or crashed run continued from its last finished
epoch, then audited and gated like any fine-tune), an audit of a run trained earlier, e.g.
with `earmark train` while no server was running (the after-training steps alone: audit, then
gates), an audio-LLM prompt search (pipelines/prompt_search.py: its child scores prompts,
the writer ingests the best), a study (pipelines/study.py: a grid or a cross-validation,
one training run per trial, followed through the study's events and the running trial's; a
cancel keeps the finished trials and the study resumes later), an ensemble of finished runs
(pipelines/ensemble.py: calibrated, evaluated, then audited and gated like a fine-tune), and a
scoring of the inbox's unlabelled clips (pipelines/inbox.py: its child predicts them, the writer
ranks them into the uncertain queue). A job's id is its run's id (an audit job's, the audited run's).

Why a worker thread in the server: the server is the session's one writer (DESIGN.md). It freezes
the manifest when the user clicks, launches the trainer as a child process, follows its
events, and ingests the results; a browser tab only reads snapshots. Closing the tab changes
nothing, and a tab opened later sees the same job. Why a FIFO queue: two trainings on the same
CPUs would each take twice as long and compete for the feature cache; a second click waits its
turn in plain view.

This is the only place the UI starts child processes.
"""
from __future__ import annotations

import atexit
import collections
import copy
import dataclasses
import json
import logging
import subprocess
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Protocol

from core.aux_heads import describe_terms
from core.run_folder import CANCEL_FILE, EVENTS_FILE, LOG_FILE, RESULT_FILE
from core.store import Store, StoreError
from pipelines import ensemble, finetune
from pipelines.child_process import cancel as cancel_child
from pipelines.child_process import follow, launch, read_events
from pipelines.finetune_audit_gates import audit_then_gates, cancel_audit, verdict_line
from pipelines.inbox import MODULE as INBOX_MODULE
from pipelines.inbox import ingest_scoring, prepare_scoring
from pipelines.prompt_search import ingest_prompt_search, prepare_prompt_search
from pipelines.searched_prompt import KIND as SEARCH_KIND
from pipelines.study import KIND as STUDY_KIND
from pipelines.study import Study, best_so_far, cancel_study, default_parallel, execute

log = logging.getLogger("earmark.jobs")

FINAL = ("succeeded", "failed", "cancelled")
LOG_LINES = 300
# What each phase means to the person watching (the child's 'phase' events name most of them).
PHASES = {
    "queued": "waiting for the job before it",
    "starting": "starting the training process",
    "features": "computing log-mel features (cached after the first run)",
    "training": "training",
    "evaluate": "evaluating the best epoch on every split",
    "ingesting": "storing predictions and metrics",
    "auditing": "auditing the new model",
    "gates": "evaluating the promotion gates",
    "loading": "starting the prompt search (loading the base model)",
    "searching": "scoring prompts on the val clips",
    "final": "checking the best prompt on val, then test",
    "recording": "storing the prompt table and the best prompt",
    "calibrate": "predicting every clip with each member, then fitting each member's temperature on val",
    "trials": "training the study's trials, one run each",
    "reporting": "writing the study's report",
    "ranking": "predicting the inbox's unlabelled clips",
    "scoring": "re-scoring the inbox's unlabelled clips with the new model",
    "done": "finished",
}
# Phases in which a child process runs: a cancel signals it.
CHILD_PHASES = ("starting", "features", "training", "evaluate", "loading", "searching", "final", "calibrate", "ranking")
ENSEMBLE_MODULE = "core.ensemble_child"
SEARCH_MODULE = "core.prompt_search_child"
NOT_STARTED = "cancelled before it started"
RESUMABLE_STUDY = ("cancelled", "failed")  # a study stopped by a person, or interrupted (a crash, a server stop)


@dataclasses.dataclass
class Job:
    """One job as the UI sees it: a fine-tune, an audit of a trained run, or a prompt search. The
    (trained) run's id is the job's id."""
    run_id: str
    run_dir: Path
    preset: str
    overrides: list[str]
    submitted_by: str
    frozen_at_decision: int
    submitted_at: float
    status: str = "queued"               # queued, running, succeeded, failed, cancelled
    phase: str = "queued"
    step: int = 0
    total_steps: int | None = None
    epoch: float = 0.0
    epochs: int | None = None
    eta_s: float | None = None
    curve: list[dict[str, Any]] = dataclasses.field(default_factory=list)     # step, series, value
    log: collections.deque = dataclasses.field(default_factory=lambda: collections.deque(maxlen=LOG_LINES))
    error: str | None = None
    result: dict[str, Any] | None = None              # the trainer's result.json
    audit_run_id: str | None = None
    audit_done: int = 0                               # clips predicted by the audit so far
    audit_total: int | None = None
    gates_passed: bool | None = None                  # None until the gates were evaluated
    start: str | None = None                          # where the weights start ("production run X"); None = scratch
    start_note: str | None = None                     # the writer's line on it (finetune.PreparedRun.start_line)
    transfer: dict[str, Any] | None = None            # the trainer's record of the tensors it copied from `start`
    cancel_requested: bool = False
    finished_at: float | None = None
    kind: Literal["fine-tune", "audit", "prompt-search", "study", "ensemble", "inbox-score"] = "fine-tune"
    events_offset: int = 0                            # where the child's events start (a resumed run's earlier lines are history)
    search_done: int = 0                              # prompt search: clip answers scored so far, over every prompt
    search_total: int | None = None                   # ... and in all (prompts x val clips), from the child's start event
    prompts: int | None = None                        # prompts to score: the candidates, then the model's proposals
    candidate: str | None = None                      # the prompt being scored ("hand:2", "proposed:1")
    trials_done: int = 0                              # study: trials finished (succeeded, failed or cancelled) ...
    trials_total: int | None = None                   # ... and in all
    trials_failed: int = 0
    trials_stopped: int = 0                           # study: trials a cancel stopped (a resume trains them)
    trial: str | None = None                          # study: the running trial ("train.lr=0.002 seed 42, run X")
    design: str | None = None                         # study: "grid" or "crossval"
    best: dict[str, Any] | None = None                # grid: the config leading so far (pipelines.study.best_so_far)
    metric: str | None = None                         # study: what ranks its configs (val f1_macro, ...)
    clips_done: int = 0                               # inbox scoring: clips predicted so far
    clips_total: int | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINAL

    @property
    def state(self) -> str:
        """The outcome in words: a run that trained but failed its gates is not a success to the
        person deciding, so a finished job with a verdict names it."""
        if self.status != "succeeded" or self.gates_passed is None:
            return self.status
        done = {"fine-tune": "trained", "ensemble": "assembled"}.get(self.kind, "audited")
        return f"{done}, gates {'passed' if self.gates_passed else 'failed'}"

    def start_line(self) -> str | None:
        """Where the weights came from, with the tensor count once the trainer reported it."""
        if self.start is None or self.transfer is None:
            return self.start_note
        return finetune.describe_transfer(self.start, self.transfer)

    def fraction_done(self) -> float:
        """0..1 for the progress bar: training steps, then fixed shares for the work after it; a
        failed or cancelled job keeps the share it reached."""
        if self.status == "succeeded":
            return 1.0
        if self.kind == "study":
            if not self.trials_total:
                return 0.0
            running = min(self.step / self.total_steps, 1.0) if self.total_steps and self.trial else 0.0
            return 0.99 * min((self.trials_done + running) / self.trials_total, 1.0)
        if self.kind == "inbox-score":
            return 0.99 * min(self.clips_done / self.clips_total, 1.0) if self.clips_total else 0.0
        if self.kind == "prompt-search":
            tail = {"final": 0.95, "recording": 0.99}
            return tail.get(self.phase, 0.95 * min(self.search_done / self.search_total, 1.0) if self.search_total else 0.0)
        start = 0.0 if self.kind == "audit" else 0.93  # an audit job is all audit
        if self.phase == "auditing" and self.audit_total:
            return start + (0.99 - start) * min(self.audit_done / self.audit_total, 1.0)
        if self.kind == "audit":
            return 0.99 if self.phase == "gates" else 0.0
        tail = {"evaluate": 0.9, "ingesting": 0.93, "auditing": 0.93, "gates": 0.99, "scoring": 0.99}
        if self.phase in tail:
            return tail[self.phase]
        if self.total_steps:
            return 0.9 * min(self.step / self.total_steps, 1.0)
        return 0.0


    def prompt_number(self) -> int | None:
        """Which prompt (1..prompts) is being scored, from the answers counted so far."""
        if not self.prompts or not self.search_total or not self.search_done:
            return None
        per_prompt = self.search_total // self.prompts
        return min(-(-self.search_done // per_prompt), self.prompts) if per_prompt else None


class AfterTraining(Protocol):
    """Work that follows a succeeded, ingested training run (default: AuditThenGates)."""

    def run(self, manager: "JobManager", job: Job) -> None:
        """Do the work; raise to fail the job with the exception's message."""

    def cancel(self, manager: "JobManager", job: Job) -> None:
        """Ask the work in progress to stop soon (called from another thread)."""


class AuditThenGates:
    """The pipeline's audit and gates (pipelines/finetune_audit_gates.py), reported into the job."""

    def run(self, manager: "JobManager", job: Job) -> None:
        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") == "start":
                manager.update(job, audit_total=event.get("clips"), audit_done=0)
            elif event.get("type") == "progress":
                manager.update(job, audit_done=event.get("done", 0), audit_total=event.get("total"))
            elif event.get("type") in ("warning", "error"):
                manager.log_line(job, f"audit {event['type']}: {event.get('message')}")

        outcome = audit_then_gates(manager.store, run_id=job.run_id, on_event=on_event,
                                   on_phase=lambda phase, message: manager.set_phase(job, phase, message),
                                   cancelled=lambda: job.cancel_requested)
        manager.update(job, audit_run_id=outcome.audit_run_id)
        for line in outcome.audit_lines + outcome.inbox_lines:
            manager.log_line(job, line)
        if outcome.status == "failed":
            raise RuntimeError(outcome.error)
        if outcome.gates is None:
            return
        for criterion in outcome.gates["gates"]["criteria"]:
            manager.log_line(job, f"[{criterion['status']}] {criterion['name']}: {criterion['detail']}")
        manager.update(job, gates_passed=outcome.gates_passed)
        manager.log_line(job, verdict_line(outcome.gates))

    def cancel(self, manager: "JobManager", job: Job) -> None:
        cancel_audit(manager.store, job.run_id)


AUDIT_THEN_GATES = AuditThenGates()


class JobManager:
    """Queue and run fine-tune jobs for one session; thread-safe; snapshots for the UI.

    after_training: what runs once a training run succeeded and was ingested (default: the
    audit, then the promotion gates); None stops at training.
    """

    def __init__(self, store: Store, *, after_training: AfterTraining | None = AUDIT_THEN_GATES, poll_s: float = 0.3) -> None:
        self.store = store
        self.after_training = after_training
        self.poll_s = poll_s
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._queue: collections.deque[str] = collections.deque()
        self._current: str | None = None
        self._process: subprocess.Popen | None = None
        self._version = 0
        self._worker: threading.Thread | None = None
        self._closed = False
        self._recover_interrupted()

    # --- what the UI calls --------------------------------------------------------------------
    def submit(self, *, preset: str, overrides: list[str] | None = None, submitted_by: str,
               init_from: str | None = "production") -> Job:
        """Validate the settings, freeze the manifest now, and queue the job; returns it.

        Raises ConfigError (naming the dotted key) for a bad value, before anything is queued.
        """
        signer = _signer(submitted_by, "a fine-tune")
        overrides = list(overrides or [])
        prepared = finetune.prepare_finetune(self.store, preset=preset, overrides=overrides, init_from=init_from)
        job = self._training_job(prepared, submitted_by=signer, preset=preset, overrides=overrides)
        return self._queue_training(job, prepared, what=f"preset {preset}"
                                    + (f" with {', '.join(overrides)}" if overrides else ""))

    def submit_resume(self, run_id: str, *, submitted_by: str) -> Job:
        """Queue a cancelled or crashed training run to continue from its last finished epoch, in
        its own folder with the config and manifest it started with, then the same audit and
        gates as a fine-tune; returns the job. Raises StoreError, in one line, for a run that
        cannot resume (succeeded, still running, or stopped before its first epoch ended)."""
        signer = _signer(submitted_by, "a resumed fine-tune")
        prepared = finetune.prepare_resume(self.store, run_id)
        job = self._training_job(prepared, submitted_by=signer, preset=prepared.config.name, overrides=[])
        job.curve = [point for event in read_events(job.run_dir)[0] for point in curve_points(event)]  # as it trained
        return self._queue_training(job, prepared, what=f"resume of run {run_id}")

    @staticmethod
    def _training_job(prepared: finetune.PreparedRun, *, submitted_by: str, preset: str, overrides: list[str]) -> Job:
        return Job(run_id=prepared.run_id, run_dir=prepared.run_dir, preset=preset, overrides=overrides,
                   submitted_by=submitted_by, frozen_at_decision=int(prepared.job.frozen_at_decision),
                   submitted_at=time.time(), start=prepared.start, start_note=prepared.start_line(),
                   events_offset=prepared.events_offset)

    def _queue_training(self, job: Job, prepared: finetune.PreparedRun, *, what: str) -> Job:
        self._log(job, f"queued by {job.submitted_by}: {what}; {len(prepared.manifest)} clips frozen at decision "
                       f"{job.frozen_at_decision}")
        self._log(job, job.start_note)
        return self._enqueue(job)

    def submit_audit(self, *, run_id: str, submitted_by: str) -> Job:
        """Queue an audit (then the gates) of a succeeded training run; returns the job."""
        signer = _signer(submitted_by, "an audit")
        if self.after_training is None:
            raise ValueError("this workbench runs no audits (its job manager stops at training)")
        run = self.store.run(run_id)
        if run["kind"] != "train" or run["status"] != "succeeded":
            raise ValueError(f"run {run_id} is a {run['status']} {run['kind']} run; only a succeeded training run "
                             "can be audited")
        job = Job(run_id=run_id, run_dir=Path(run["run_dir"]), preset=run["preset"] or "-", overrides=[],
                  submitted_by=signer, frozen_at_decision=self.store.last_decision_id(),
                  submitted_at=time.time(), kind="audit")
        self._log(job, f"queued by {job.submitted_by}: audit of run {run_id}, then its gates")
        job.curve = [point for event in read_events(job.run_dir)[0] for point in curve_points(event)]  # as it trained
        return self._enqueue(job)

    def submit_ensemble(self, *, members: list[str], weights: list[float] | None = None, submitted_by: str) -> Job:
        """Freeze the clips and queue an ensemble of finished runs (pipelines/ensemble.py), then the
        audit and gates of a fine-tune; returns the job. Raises ConfigError or StoreError in one line,
        before anything is queued, for members that cannot be combined."""
        signer = _signer(submitted_by, "an ensemble")
        prepared = ensemble.prepare_ensemble(self.store, members=members, weights=weights)
        job = Job(run_id=prepared.run_id, run_dir=prepared.run_dir, preset=ensemble.ENSEMBLE, overrides=[],
                  submitted_by=signer, frozen_at_decision=int(prepared.job.frozen_at_decision), submitted_at=time.time(),
                  kind="ensemble", start_note=prepared.start_line())
        self._log(job, f"queued by {signer}: {job.start_note}; clips frozen at decision {job.frozen_at_decision}")
        return self._enqueue(job)

    def submit_prompt_search(self, *, preset: str, overrides: list[str] | None = None, submitted_by: str) -> Job:
        """Freeze the clips and queue a prompt search of the preset's base model (no adapters);
        returns the job. Raises ConfigError in one line, before anything is queued, for a preset
        that is not the audio LLM, an unreadable base model, or a session without val and test
        clips of both labels."""
        signer = _signer(submitted_by, "a prompt search")
        overrides = list(overrides or [])
        run_id, run_dir = prepare_prompt_search(self.store, preset=preset, overrides=overrides)
        job = Job(run_id=run_id, run_dir=run_dir, preset=preset, overrides=overrides, submitted_by=signer,
                  frozen_at_decision=int(self.store.run(run_id)["manifest_decision_id"]), submitted_at=time.time(),
                  kind="prompt-search")
        self._log(job, f"queued by {signer}: prompt search with preset {preset}"
                       + (f" with {', '.join(overrides)}" if overrides else "")
                       + f"; clips frozen at decision {job.frozen_at_decision}")
        return self._enqueue(job)

    def submit_study(self, plan: Callable[[Store], Study], *, submitted_by: str) -> Job:
        """Queue a study: plan(store) checks every trial against the preset and writes the study
        (pipelines.study.plan_grid / study_crossval.plan_crossval); a ConfigError from it, in one
        line, comes back before anything is queued. Returns the job (the study's id is its id)."""
        signer = _signer(submitted_by, "a study")
        study = plan(self.store)
        return self._queue_study(study, submitted_by=signer, what="")

    def submit_study_resume(self, study_id: str, *, submitted_by: str) -> Job:
        """Queue a cancelled or interrupted study to train what it left (its finished trials stay,
        a stopped trial continues from its last finished epoch); StoreError, in one line, for a run
        that is no study or has nothing left to train."""
        signer = _signer(submitted_by, "a resumed study")
        run = self.store.run(study_id)
        if run["kind"] != STUDY_KIND:
            raise StoreError(f"run {study_id} is a {run['kind']} run, not a study")
        study = Study.load(Path(run["run_dir"]))
        left = sum(t.status != "succeeded" for t in study.trials)
        if run["status"] not in RESUMABLE_STUDY or not left:
            raise StoreError(f"study {study_id} is {run['status']} with {left} trial(s) left; only a cancelled or "
                             "interrupted study with trials left resumes")
        (study.study_dir / CANCEL_FILE).unlink(missing_ok=True)
        return self._queue_study(study, submitted_by=signer, what="resume of ")

    def _queue_study(self, study: Study, *, submitted_by: str, what: str) -> Job:
        done = sum(t.status == "succeeded" for t in study.trials)
        events = study.study_dir / EVENTS_FILE
        job = Job(run_id=study.study_id, run_dir=study.study_dir, preset=study.preset, overrides=list(study.overrides),
                  submitted_by=submitted_by, frozen_at_decision=study.as_of, submitted_at=time.time(), kind="study",
                  trials_done=done, trials_total=len(study.trials), design=study.study, metric=study.metric,
                  best=best_so_far(study) if study.study == "grid" else None,
                  events_offset=events.stat().st_size if events.exists() else 0)
        shape = (f"{len(study.settings['grid']['configs'])} config(s)" if study.study == "grid"
                 else f"{study.settings['folds']} folds of {study.settings['groups']} source groups")
        self._log(job, f"queued by {submitted_by}: {what}{study.study} study {study.study_id} of preset {study.preset}, "
                       f"{shape} x {len(study.seeds)} seed(s) = {len(study.trials)} trials"
                       + (f", {done} finished already" if done else "") + f"; labels frozen at decision {study.as_of}")
        return self._enqueue(job)

    def submit_inbox_score(self, *, run_id: str | None = None, submitted_by: str, **options: Any) -> Job:
        """Freeze the inbox's unlabelled clips and queue their scoring by run_id (default:
        production); options are InboxConfig fields. Refused in one line (ConfigError or
        StoreError) before anything is queued: no model, an empty inbox, a bad setting."""
        signer = _signer(submitted_by, "a scoring of the inbox")
        score_id, run_dir = prepare_scoring(self.store, run_id=run_id, **options)
        run = self.store.run(score_id)
        job = Job(run_id=score_id, run_dir=run_dir, preset="-", overrides=[], submitted_by=signer,
                  frozen_at_decision=int(run["manifest_decision_id"]), submitted_at=time.time(), kind="inbox-score")
        self._log(job, f"queued by {signer}: scoring of the inbox by run {run['parent_run_id']}; clips frozen at "
                       f"decision {job.frozen_at_decision}")
        return self._enqueue(job)

    def _enqueue(self, job: Job) -> Job:
        """Put a job at the back of the queue and wake the worker. A run has one job at a time:
        a finished one of the same run (its fine-tune, an earlier audit) gives way."""
        with self._wake:
            if self._closed:
                raise ValueError("the workbench is shutting down; no new jobs")
            previous = self._jobs.get(job.run_id)
            if previous is not None and not previous.finished:
                raise ValueError(f"run {job.run_id} already has an unfinished {previous.kind} job ({previous.status}); "
                                 "wait for it to end")
            self._jobs.pop(job.run_id, None)  # so the new job is listed as the newest
            self._jobs[job.run_id] = job
            self._queue.append(job.run_id)
            self._touch()
            self._ensure_worker()
            self._wake.notify()
        return self.snapshot(job.run_id)

    def cancel(self, run_id: str) -> Job:
        """Cancel a queued job at once, or ask a running one to stop after its current step."""
        with self._lock:
            job = self._job(run_id)
            if job.finished:
                raise ValueError(f"job {run_id} has already {job.status}; nothing to cancel")
            job.cancel_requested = True
            if run_id in self._queue:
                self._queue.remove(run_id)
                self._finish(job, "cancelled", error=NOT_STARTED)
                if job.kind != "audit":  # an audit job's run was trained before: it stays as it is
                    self.store.set_run_status(run_id, "cancelled", error=NOT_STARTED)
            elif job.kind == "study":
                self._log(job, "cancel requested: the running trial stops after its current step; finished trials "
                               "stay, and the study can be resumed from the Runs tab")
                cancel_study(job.run_dir)
            elif job.phase in CHILD_PHASES:
                stops = {"prompt-search": "the search stops after its current batch of clips",
                         "inbox-score": "the scoring stops after its current batch of clips"}
                self._log(job, "cancel requested: " + stops.get(job.kind, "training stops after its current step"))
                if self._process is not None:
                    cancel_child(job.run_dir, self._process)
            elif self.after_training is not None:
                self._log(job, f"cancel requested while {PHASES.get(job.phase, job.phase)}")
                self.after_training.cancel(self, job)
            self._touch()
            return self.snapshot(run_id)

    def snapshot(self, run_id: str) -> Job:
        """A copy of a job that the caller may read without locks."""
        with self._lock:
            job = self._job(run_id)
            return dataclasses.replace(job, overrides=list(job.overrides), curve=list(job.curve),
                                       log=collections.deque(job.log, maxlen=LOG_LINES),
                                       result=copy.deepcopy(job.result))

    def jobs(self) -> list[Job]:
        """Every job of this server's lifetime, oldest first (snapshots)."""
        with self._lock:
            return [self.snapshot(run_id) for run_id in self._jobs]

    def queue(self) -> list[str]:
        """Run ids waiting to start, in the order they will run."""
        with self._lock:
            return list(self._queue)

    def current(self) -> str | None:
        with self._lock:
            return self._current

    def latest(self) -> Job | None:
        """The job to show: the running one, else the most recently submitted."""
        with self._lock:
            run_id = self._current or (next(reversed(self._jobs)) if self._jobs else None)
            return None if run_id is None else self.snapshot(run_id)

    @property
    def version(self) -> int:
        """Grows with every change, so a polling UI can skip redrawing when nothing moved."""
        return self._version

    def wait(self, run_id: str, *, timeout_s: float) -> Job:
        """Block until the job has finished (tests and scripts); raises TimeoutError."""
        deadline = time.monotonic() + timeout_s
        with self._wake:
            while not self._job(run_id).finished:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"job {run_id} still {self._jobs[run_id].phase} after {timeout_s} s")
                self._wake.wait(left)
            return self.snapshot(run_id)

    def shutdown(self) -> None:
        """Stop taking jobs, cancel the waiting ones and ask the running child to stop."""
        with self._wake:
            self._closed = True
            for run_id in list(self._queue):
                self.cancel(run_id)
            if self._current is not None and not self._jobs[self._current].cancel_requested:
                self.cancel(self._current)
            self._wake.notify_all()

    # --- the worker ---------------------------------------------------------------------------
    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            # Daemon: the server's exit is not held up by a training run; atexit asks it to stop.
            self._worker = threading.Thread(target=self._work, name="earmark-jobs", daemon=True)
            self._worker.start()
            atexit.register(self.shutdown)

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closed:
                    self._wake.wait()
                if not self._queue:
                    return
                run_id = self._queue.popleft()
                self._current = run_id
                self._touch()
            job = self._jobs[run_id]
            try:
                self._run(job)
            except Exception as exc:  # the job fails with its reason; the worker and the session go on
                log.error("job %s failed:\n%s", run_id, traceback.format_exc())
                message = f"{type(exc).__name__}: {exc}"
                with self._lock:
                    self._finish(job, "failed", error=message)
                if self.store.run(run_id)["status"] not in FINAL:
                    self.store.set_run_status(run_id, "failed", error=message)
            finally:
                with self._wake:
                    self._current = None
                    self._process = None
                    self._touch()
                    self._wake.notify_all()

    def _run(self, job: Job) -> None:
        {"fine-tune": self._run_training, "ensemble": self._run_training, "audit": self._run_audit,
         "prompt-search": self._run_prompt_search, "study": self._run_study,
         "inbox-score": self._run_inbox_score}[job.kind](job)

    def _launch(self, job: Job, *, phase: str, module: str) -> bool:
        """Mark the job running and start its child; False (the job cancelled) when a cancel came
        between leaving the queue and starting."""
        self._set(job, status="running", phase=phase)
        self.store.set_run_status(job.run_id, "running")
        with self._lock:
            if job.cancel_requested:
                self._finish(job, "cancelled", error=NOT_STARTED)
                self.store.set_run_status(job.run_id, "cancelled", error=NOT_STARTED)
                return False
            self._process = launch(job.run_dir, module=module)
            return True

    def _run_training(self, job: Job) -> None:
        """A fine-tune's or an ensemble's child, its ingest, then the after-training steps."""
        module = ENSEMBLE_MODULE if job.kind == "ensemble" else "core.train"
        if not self._launch(job, phase="starting", module=module):
            return
        with self._lock:
            self._log(job, f"{'ensemble' if job.kind == 'ensemble' else 'training'} process started (pid {self._process.pid})")
        exit_code = follow(job.run_dir, self._process, on_event=lambda event: self._on_event(job, event),
                           poll_s=self.poll_s, offset=job.events_offset)
        self._set(job, phase="ingesting")
        killed_by_cancel = job.cancel_requested and not (job.run_dir / RESULT_FILE).exists()
        result = finetune.ingest(self.store, job.run_id, exit_code=exit_code)
        if killed_by_cancel:  # the stop signal reached the child before it could catch it (still importing)
            result = {**result, "status": "cancelled", "error": "cancelled while the training process was starting"}
            self.store.set_run_status(job.run_id, "cancelled", error=result["error"])
        with self._lock:
            job.result = result
            if result["status"] != "succeeded":
                error = result.get("error") or result.get("message") or ("cancelled" if result["status"] == "cancelled" else None)
                self._finish(job, result["status"], error=error)
                return
            done = "ensemble assembled" if job.kind == "ensemble" else "training finished"
            self._log(job, f"{done}: test accuracy {_fmt(result.get('accuracy', {}).get('test'))}")
        if self.after_training is not None and not job.cancel_requested:
            self.after_training.run(self, job)
        with self._lock:
            self._finish(job, "cancelled" if job.cancel_requested else "succeeded",
                         error="cancelled after training: the trained run is kept, its audit or gates are not complete"
                         if job.cancel_requested else None)

    def _run_audit(self, job: Job) -> None:
        self._set(job, status="running", phase="auditing")
        if not job.cancel_requested:
            self.after_training.run(self, job)
        with self._lock:
            self._finish(job, "cancelled" if job.cancel_requested else "succeeded",
                         error="cancelled: the audit or the gates are not complete" if job.cancel_requested else None)

    def _run_prompt_search(self, job: Job) -> None:
        if not self._launch(job, phase="loading", module=SEARCH_MODULE):
            return
        self._log(job, f"prompt search process started (pid {self._process.pid})")
        exit_code = follow(job.run_dir, self._process, on_event=lambda event: self._on_search_event(job, event),
                           poll_s=self.poll_s)
        self._set(job, phase="recording")
        result = _child_result(job.run_dir, exit_code, what="prompt search")
        if job.cancel_requested and result["status"] == "failed":  # stopped before it could catch the signal
            result = {"status": "cancelled", "error": "cancelled while the prompt search process was starting"}
        outcome = ingest_prompt_search(self.store, job.run_id, result)
        with self._lock:
            job.result = outcome.summary or result
            for line in outcome.lines():
                self._log(job, line)
            self._finish(job, outcome.status, error=outcome.error)

    def _run_study(self, job: Job) -> None:
        """Train the study's unfinished trials (pipelines.study.execute, in a thread of its own)
        while this worker follows the study's events and the running trial's, then report."""
        self._set(job, status="running", phase="trials")
        self.store.set_run_status(job.run_id, "running")
        if job.cancel_requested:  # between leaving the queue and starting
            cancel_study(job.run_dir)
        outcome: dict[str, Any] = {}

        def train() -> None:
            try:
                outcome["done"] = execute(self.store, Study.load(job.run_dir), parallel=default_parallel(),
                                          keep_models=True, progress=False, on_event=None)
            except Exception as exc:  # noqa: BLE001 - re-raised in the worker, which fails the job with it
                outcome["error"] = exc

        running = threading.Thread(target=train, name=f"earmark-study-{job.run_id}", daemon=True)
        running.start()
        self._follow_study(job, running)
        if "error" in outcome:
            raise outcome["error"]
        done = outcome["done"]
        with self._lock:
            job.result = done.report["summary"]
            for line in done.lines()[:-1]:  # the last names the report file; the Runs tab shows it
                self._log(job, line)
            error = None
            if done.status == "cancelled":
                error = (f"cancelled: {job.trials_done} of {job.trials_total} trials finished and stay; resume the "
                         "study from the Runs tab")
            elif done.status == "failed":
                error = done.report["summary"]["message"]
            self._finish(job, done.status, error=error)

    def _follow_study(self, job: Job, running: threading.Thread) -> None:
        """Fold the study's events (trial started, trial finished with the best so far and the time
        left) and the running trial's training events into the job until the study thread ends."""
        offset, trial_dir, trial_offset = job.events_offset, None, 0
        while True:
            alive = running.is_alive()
            events, offset = read_events(job.run_dir, offset=offset)
            for event in events:
                if event.get("type") == "trial_start":
                    trial_dir, trial_offset = Path(self.store.run(event["run_id"])["run_dir"]), 0
                self._on_study_event(job, event)
            if trial_dir is not None:
                trial_events, trial_offset = read_events(trial_dir, offset=trial_offset)
                for event in trial_events:
                    self._on_trial_event(job, event)
            if not alive:
                return
            time.sleep(self.poll_s)

    def _on_study_event(self, job: Job, event: dict[str, Any]) -> None:
        with self._lock:
            kind = event.get("type")
            if kind == "start":
                job.trials_total, job.trials_done = event["total"], event["done"]
            elif kind == "trial_start":
                job.trial = f"{event['trial']} seed {event['seed']}, run {event['run_id']}"
                job.step, job.total_steps, job.epoch, job.epochs, job.curve = 0, None, 0.0, None, []
                self._log(job, f"trial {job.trials_done + 1} of {job.trials_total}: {job.trial}")
            elif kind == "trial":  # a trial stopped by a cancel is not done: a resume trains it
                job.trials_failed += event["status"] == "failed"
                job.trials_stopped += event["status"] == "cancelled"
                job.trials_done, job.trial = event["done"] - job.trials_stopped, None
                if job.design == "grid":  # folds are not rivals: a cross-validation has no best so far
                    job.best = event["best"]
                job.eta_s = event["eta_s"]
                self._log(job, f"trial {event['trial']} seed {event['seed']} {event['status']}"
                               + (f": {event['error']}" if event.get("error") else ""))
                if job.trials_done >= (job.trials_total or 0):
                    job.phase = "reporting"
            self._touch()

    def _on_trial_event(self, job: Job, event: dict[str, Any]) -> None:
        """The running trial's training progress: steps for the bar, its curves, its epochs in the log."""
        with self._lock:
            kind = event.get("type")
            if kind == "start":
                job.total_steps, job.epochs = event["total_steps"], event["epochs"]
            elif kind == "step":
                job.step, job.total_steps, job.epoch = event["step"], event["total_steps"], event["epoch"]
            elif kind == "epoch":
                self._log(job, describe_event(event))
            job.curve.extend(curve_points(event))
            self._touch()

    def _run_inbox_score(self, job: Job) -> None:
        if not self._launch(job, phase="ranking", module=INBOX_MODULE):
            return
        self._log(job, f"inbox scoring process started (pid {self._process.pid})")

        def on_event(event: dict[str, Any]) -> None:
            if event.get("type") in ("start", "progress"):
                self._set(job, clips_done=event.get("done", 0), clips_total=event.get("clips", event.get("total")))
            elif event.get("type") in ("warning", "error"):
                self.log_line(job, describe_event(event))

        exit_code = follow(job.run_dir, self._process, on_event=on_event, poll_s=self.poll_s)
        result = _child_result(job.run_dir, exit_code, what="inbox scoring")
        if job.cancel_requested and result["status"] == "failed":  # stopped before it could catch the signal
            result = {"status": "cancelled", "error": "cancelled while the scoring process was starting"}
        outcome = ingest_scoring(self.store, job.run_id, result)
        with self._lock:
            job.result = result
            for line in outcome.lines():
                self._log(job, line)
            self._finish(job, outcome.status, error=outcome.error)

    def _on_search_event(self, job: Job, event: dict[str, Any]) -> None:
        """Fold one prompt-search event into the job: prompts and answers to score, the prompt
        being scored, the final check; a log line when a new prompt starts."""
        with self._lock:
            kind = event.get("type")
            if kind == "start":
                job.phase, job.search_total = "searching", event.get("clips")
                job.prompts = event.get("candidates", 0) + event.get("proposals", 0)
                proposals = event.get("proposals", 0)
                self._log(job, f"scoring {event.get('candidates')} prompts on {event.get('dev_clips')} val clips each"
                               + (f", then up to {proposals} the model proposes" if proposals else ""))
            elif kind == "progress":
                new_prompt = event.get("candidate") != job.candidate
                job.search_done, job.candidate = event.get("done", 0), event.get("candidate")
                if new_prompt:
                    self._log(job, f"prompt {job.prompt_number()} of {job.prompts}: {job.candidate}")
                if job.search_total and job.search_done >= job.search_total:
                    job.phase = "final"
            elif kind in ("info", "warning", "error"):
                self._log(job, describe_event(event))
            self._touch()

    def _on_event(self, job: Job, event: dict[str, Any]) -> None:
        """Fold one child event into the job's progress, curve and log."""
        with self._lock:
            kind = event.get("type")
            if kind == "phase" and event["phase"] in PHASES and event["phase"] != "done":  # the job is done after ingesting
                job.phase = event["phase"]
            elif kind == "start" and "total_steps" in event:
                job.phase, job.total_steps, job.epochs = "training", event["total_steps"], event["epochs"]
            elif kind == "progress":  # an ensemble's members predicting: the bar counts clips
                job.step, job.total_steps = event["done"], event["total"]
            elif kind == "step":
                job.phase = "training"
                job.step, job.total_steps, job.epoch, job.eta_s = event["step"], event["total_steps"], event["epoch"], event["eta_s"]
            elif kind == "info" and "init" in event:
                job.transfer = event["init"]
            job.curve.extend(curve_points(event))
            line = job.start_line() if "init" in event else describe_event(event)
            if line:
                self._log(job, line)
            self._touch()

    # --- helpers ------------------------------------------------------------------------------
    def set_phase(self, job: Job, phase: str, message: str | None = None) -> None:
        """For the after-training steps: show a phase and a log line."""
        self._set(job, phase=phase)
        if message:
            self.log_line(job, message)

    def log_line(self, job: Job, message: str) -> None:
        with self._lock:
            self._log(job, message)
            self._touch()

    def _log(self, job: Job, line: str | None) -> None:
        """One line of the job's log, in the UI and in the run folder's job.log, where the Train
        tab points: beside the child's own output, so the file tells the whole story."""
        if line is None:
            return
        with self._lock:
            job.log.append(line)
            with open(job.run_dir / LOG_FILE, "a", encoding="utf-8") as file:
                file.write(f"[{time.strftime('%H:%M:%S')}] {line}\n")

    def update(self, job: Job, **fields: Any) -> None:
        """Set fields of a job (after-training steps report their progress this way)."""
        self._set(job, **fields)

    def _set(self, job: Job, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(job, name, value)
            self._touch()

    def _finish(self, job: Job, status: str, *, error: str | None = None) -> None:
        job.status, job.phase, job.error, job.finished_at = status, "done", error, time.time()
        job.eta_s = None
        self._log(job, f"job {job.state}" + (f": {error}" if error else ""))
        self._touch()

    def _touch(self) -> None:
        self._version += 1

    def _job(self, run_id: str) -> Job:
        try:
            return self._jobs[run_id]
        except KeyError:
            raise ValueError(f"no job {run_id!r} in this workbench") from None

    def _recover_interrupted(self) -> None:
        """Runs left 'queued' or 'running' by a server that stopped: ingest what finished, fail the rest.

        Without this they would show as running forever; nothing else could ever ingest them.
        """
        runs = self.store.runs()
        for run in runs[runs.status.isin(["queued", "running"])].itertuples():
            finished = (Path(run.run_dir) / RESULT_FILE).exists()
            if finished and run.kind in ("train", SEARCH_KIND):
                if run.kind == "train":
                    finetune.ingest(self.store, run.id)
                else:
                    ingest_prompt_search(self.store, run.id, _child_result(Path(run.run_dir), None, what="prompt search"))
                log.info("ingested run %s, finished while no workbench was running", run.id)
            else:
                self.store.set_run_status(run.id, "failed", error="interrupted: the process following this run stopped before it ended")
                log.info("marked run %s failed: it was interrupted", run.id)


def _signer(submitted_by: str, what: str) -> str:
    """The name a job is signed with; refused when blank, before anything is prepared."""
    if not submitted_by or not submitted_by.strip():
        raise ValueError(f"submitted_by: {what} is signed by the person who starts it; enter your name")
    return submitted_by.strip()


def _child_result(run_dir: Path, exit_code: int | None, *, what: str) -> dict[str, Any]:
    """The child's result.json, or a failed result quoting job.log's last lines when it wrote none."""
    result_file = run_dir / RESULT_FILE
    if result_file.exists():
        return json.loads(result_file.read_text())
    log_file = run_dir / LOG_FILE
    tail = log_file.read_text(errors="replace").strip().splitlines()[-5:] if log_file.exists() else []
    return {"status": "failed", "error": f"the {what} process ended (exit code {exit_code}) without a result; "
                                         f"last log lines: {' | '.join(tail) or '(no log)'}"}


def curve_points(event: dict[str, Any]) -> list[dict[str, Any]]:
    """The points one trainer event adds to the loss and validation curves."""
    if event.get("type") == "step":
        return [{"step": event["step"], "series": "train loss (per step)", "value": event["loss"]}]
    if event.get("type") == "epoch":
        return [{"step": event["step"], "series": series, "value": event[key]}
                for key, series in (("val_loss", "validation loss"), ("val_accuracy", "validation accuracy"),
                                    ("val_f1_macro", "validation F1 macro")) if event.get(key) is not None]
    return []


def describe_event(event: dict[str, Any]) -> str | None:
    """One log line for a child event (steps are shown by the progress bar, not the log)."""
    kind = event.get("type")
    if kind == "phase":
        return ("the training process wrote its results" if event["phase"] == "done"
                else f"phase: {PHASES.get(event['phase'], event['phase'])}")
    if kind == "start" and "members" in event:
        return f"ensemble of {', '.join(event['members'])}: {event.get('clips')} clips to predict with each member"
    if kind == "start":
        return (f"training {event.get('train_clips')} clips, validating on {event.get('val_clips')}: "
                f"{event['epochs']} epochs, {event['total_steps']} steps on {event.get('device', '?')}")
    if kind == "epoch":
        return (f"epoch {event['epoch']}: train loss {_fmt(event.get('train_loss'))}  val loss {_fmt(event.get('val_loss'))}  "
                f"val acc {_fmt(event.get('val_accuracy'))}  val F1 {_fmt(event.get('val_f1_macro'))}"
                + describe_terms(event) + ("  *best*" if event.get("improved") else ""))
    if kind in ("info", "warning", "error"):
        return f"{kind}: {event.get('message')}"
    if kind == "cancelled":
        return f"cancelled at step {event.get('step')}"
    return None


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"
