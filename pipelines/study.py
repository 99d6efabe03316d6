"""Studies (B3, B4), writer side: many ordinary training runs, one per trial, as one run of kind
"study" that records them and reports over seeds.

A trial is a config (a grid point, or a cross-validation fold) at one seed. Every trial is a
training run like `earmark train` makes (frozen manifest, events, checkpoint, metrics), frozen
at the decision the study started at, so every trial sees the same labels. The study's folder
(runs/<study>/) holds study.json (the plan, and each trial's status and run id, rewritten after
every change), preset.yaml (the preset as it was at the start: a resume trains what was
planned), events.jsonl (progress for a UI) and the report (pipelines/study_report.py).

Every config is checked against the preset and the session before anything is written, so a
bad key or value is refused in one line and no run exists. A trial that crashes is recorded as
that trial's failure and the study goes on. Ctrl-C, or cancel_study from another thread or
process, stops the running trials after their current step; finished trials stay, and
resume_study (`earmark grid --resume STUDY`) skips them, continues a stopped trial from its
last finished epoch, and restarts the others.

    outcome = run_grid(store, preset="demo-fast", grid=read_grid("grid.yaml"), seeds=[42, 123])
    print("\n".join(outcome.lines()))
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from core import train as trainer
from core.checkpoint import CHECKPOINT_DIR
from core.config import ConfigError, load_preset
from core.run_folder import CANCEL_FILE, EVENTS_FILE, METRICS_FILE, EventLog
from core.store import Store, StoreError
from core.study import (DEFAULT_SEEDS, EVAL_SPLITS, STUDY_METRICS, Grid, check_metric, check_seeds_not_in_grid,
                        parse_seeds, preset_only, rank, summarise)
from pipelines.child_process import cancel
from pipelines.finetune import (PreparedRun, freeze_manifest, new_run_id, plan_finetune, prepare_finetune,
                                prepare_resume, train_and_ingest)
from pipelines.study_report import report_lines, trials_frame, write_report

KIND = "study"
STUDY_FILE = "study.json"
PRESET_FILE = "preset.yaml"
SPLITS_FILE = "splits.parquet"  # cross-validation: each clip's split in each fold
FINAL = ("succeeded", "failed", "cancelled")


@dataclasses.dataclass
class Trial:
    """One training run of a study: a config (or fold) at a seed, and how it went."""
    name: str
    seed: int
    overrides: list[str]            # --set items of this config, beyond the study's own and the seed
    fold: str | None = None         # cross-validation: the column of splits.parquet it trains on
    status: str = "pending"         # pending, running, succeeded, failed, cancelled
    run_id: str | None = None
    error: str | None = None
    metrics: dict[str, float | None] = dataclasses.field(default_factory=dict)  # val_accuracy, test_f1_macro, ...
    timing: dict[str, float] = dataclasses.field(default_factory=dict)          # wall_s, child_s, overhead_s


@dataclasses.dataclass
class Study:
    """What study.json holds: the plan, the trials and their state."""
    study_id: str
    study_dir: Path
    study: str                      # "grid" or "crossval"
    preset: str                     # as given; trials train from the snapshot in PRESET_FILE
    overrides: list[str]
    init_from: str
    metric: str
    seeds: list[int]
    as_of: int
    trials: list[Trial]
    settings: dict[str, Any]        # grid: {"grid": Grid.to_dict()}; crossval: folds, groups, ...
    status: str = "running"

    def run_overrides(self, trial: Trial) -> list[str]:
        return [*self.overrides, *trial.overrides, f"train.seed={trial.seed}"]

    def save(self) -> None:
        """Rewrite study.json whole (a reader never sees half a file)."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("study_dir", "trials")}
        data["trials"] = [dataclasses.asdict(t) for t in self.trials]
        path = self.study_dir / STUDY_FILE
        scratch = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        scratch.write_text(json.dumps(data, indent=2, default=str))
        os.replace(scratch, path)

    @classmethod
    def load(cls, study_dir: Path) -> Study:
        data = json.loads((Path(study_dir) / STUDY_FILE).read_text())
        trials = [Trial(**t) for t in data.pop("trials")]
        return cls(study_dir=Path(study_dir), trials=trials, **data)

    def splits(self) -> pd.DataFrame:
        """Cross-validation: clip_id, group, and each fold's split of the clip (a column per fold)."""
        return pd.read_parquet(self.study_dir / SPLITS_FILE)

    def counts(self) -> dict[str, int]:
        return {status: sum(t.status == status for t in self.trials) for status in ("succeeded", "failed", "cancelled", "pending")}


@dataclasses.dataclass
class StudyOutcome:
    study: Study
    report: dict[str, Any]          # results.json's content (pipelines/study_report.py)
    files: dict[str, Path]

    @property
    def study_id(self) -> str:
        return self.study.study_id

    @property
    def status(self) -> str:
        return self.study.status

    def lines(self) -> list[str]:
        return report_lines(self.study, self.report, self.files)


# --- starting a grid ------------------------------------------------------------------------------

def run_grid(store: Store, *, preset: str, grid: Grid | None = None, seeds: Sequence[int] | str = DEFAULT_SEEDS,
             overrides: Sequence[str] | None = None, init_from: str = "none", metric: str = "f1_macro",
             parallel: int = 1, keep_models: bool = True, progress: bool = True,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> StudyOutcome:
    """Train every config of `grid` (default: the preset alone) at every seed, rank the configs
    by the mean of `metric` on the val split over their seeds, and report.

    overrides: --set items for every trial. init_from: what every trial starts from ("none":
    the preset's own start; "production", a run id or a checkpoint folder as for a fine-tune).
    parallel: trials run side by side (default 1: each training process uses every core).
    keep_models: False deletes every trial's checkpoint but the best one's when the study ends
    (the runs and their metrics stay). Every config is checked first: ConfigError, one line
    naming the config and key, before any run exists."""
    parallel = check_parallel(parallel)
    study = plan_grid(store, preset=preset, grid=grid, seeds=seeds, overrides=overrides, init_from=init_from,
                      metric=metric)
    return execute(store, study, parallel=parallel, keep_models=keep_models, progress=progress, on_event=on_event)


def plan_grid(store: Store, *, preset: str, grid: Grid | None = None, seeds: Sequence[int] | str = DEFAULT_SEEDS,
              overrides: Sequence[str] | None = None, init_from: str = "none", metric: str = "f1_macro") -> Study:
    """Check every config of the grid against the preset and the session, then write the study's
    folder and register its run (status queued), every trial pending; nothing trains yet
    (execute does, e.g. in the workbench's job queue). ConfigError in one line, naming the
    config and key, before anything exists."""
    grid = grid or preset_only()
    seeds, metric = parse_seeds(seeds), check_metric(metric)
    check_seeds_not_in_grid(grid)
    overrides = list(overrides or [])
    manifest, as_of = freeze_manifest(store)
    for config in grid.configs:
        try:
            plan_finetune(store, preset=preset, overrides=[*overrides, *config.assignments()], init_from=init_from,
                          manifest=manifest)
        except ConfigError as exc:
            raise ConfigError(f"grid config {config.name!r}: {exc}") from None
    trials = [Trial(name=config.name, seed=seed, overrides=config.assignments())
              for config in grid.configs for seed in seeds]
    return create_study(store, study="grid", preset=preset, overrides=overrides, init_from=init_from, metric=metric,
                        seeds=seeds, as_of=as_of, trials=trials, settings={"grid": grid.to_dict()})


def check_parallel(parallel: int) -> int:
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise ConfigError(f"parallel: {parallel!r} must be a whole number >= 1 (trials trained side by side)")
    return parallel


def default_parallel() -> int:
    """Trials side by side by default: one per 4 cores (a training process keeps several busy),
    at least 1; a 2-core machine trains one at a time."""
    return max(1, (os.cpu_count() or 1) // 4)


def create_study(store: Store, *, study: str, preset: str, overrides: list[str], init_from: str, metric: str,
                 seeds: list[int], as_of: int, trials: list[Trial], settings: dict[str, Any],
                 splits: pd.DataFrame | None = None) -> Study:
    """Write the study's folder (study.json, the preset snapshot, the fold splits) and register
    its run; the trials are planned and checked already."""
    study_id = new_run_id(KIND)
    study_dir = Path(store.session_dir) / "runs" / study_id
    study_dir.mkdir(parents=True)
    base = load_preset(preset)
    base.save(study_dir / PRESET_FILE)
    if splits is not None:
        splits.to_parquet(study_dir / SPLITS_FILE)
    record = Study(study_id=study_id, study_dir=study_dir, study=study, preset=preset, overrides=overrides,
                   init_from=init_from, metric=metric, seeds=seeds, as_of=as_of, trials=trials, settings=settings)
    record.save()
    store.create_run(study_id, kind=KIND, preset=base.name,
                     config={"study": study, "preset": preset, "set": overrides, "init_from": init_from,
                             "metric": metric, "seeds": seeds, **settings},
                     parent_run_id=None, manifest_decision_id=as_of, run_dir=study_dir)
    return record


# --- resuming and cancelling ----------------------------------------------------------------------

def resume_study(store: Store, study_id: str, *, parallel: int = 1, keep_models: bool = True, progress: bool = True,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> StudyOutcome:
    """Run what a stopped or crashed study left: finished trials are skipped, a stopped trial
    continues from its last finished epoch, the rest start again (with the plan, preset
    snapshot, labels and splits the study started with). StoreError for a run that is no study."""
    run = store.run(study_id)
    if run["kind"] != KIND:
        raise StoreError(f"run {study_id} is a {run['kind']} run, not a study; resume a training run with "
                         f"'earmark train --resume {study_id}'")
    study = Study.load(Path(run["run_dir"]))
    (study.study_dir / CANCEL_FILE).unlink(missing_ok=True)
    store.set_run_status(study_id, "running")
    return execute(store, study, parallel=check_parallel(parallel), keep_models=keep_models, progress=progress,
                   on_event=on_event)


def cancel_study(study_dir: str | Path) -> None:
    """Ask a running study to stop (from a UI thread or another process): its running trials stop
    after their current step and no new trial starts; finished trials stay."""
    (Path(study_dir) / CANCEL_FILE).touch()


# --- running the trials ---------------------------------------------------------------------------

def execute(store: Store, study: Study, *, parallel: int, keep_models: bool, progress: bool,
            on_event: Callable[[dict[str, Any]], None] | None) -> StudyOutcome:
    """Train the study's unfinished trials, `parallel` at a time, then write the report and the
    study run's status. Trials train in worker threads; this thread follows them, so Ctrl-C here
    (or a cancel file) stops them all cleanly."""
    lock, stop = threading.Lock(), threading.Event()
    events = EventLog(study.study_dir / EVENTS_FILE, enabled=True)
    todo = [t for t in study.trials if t.status != "succeeded"]
    for trial in todo:  # to run again (a resume): its run id stays, to continue from its saved state
        trial.status = "pending"
    total = len(study.trials)
    bar = tqdm(total=total, initial=total - len(todo), desc=f"study {study.study_id}", unit="trial", disable=not progress)
    started, walls = time.monotonic(), []

    def report_trial(trial: Trial) -> None:
        with lock:
            study.save()
            if trial.status == "running":  # a UI follows the running trial's own events from its run
                events.write("trial_start", study_id=study.study_id, trial=trial.name, seed=trial.seed,
                             run_id=trial.run_id)
            if trial.status not in FINAL:
                return
            walls.append(trial.timing.get("wall_s", 0.0))
            done = sum(t.status in FINAL for t in study.trials)
            left = sum(t.status not in FINAL for t in study.trials)
            fields = {"study_id": study.study_id, "trial": trial.name, "seed": trial.seed, "status": trial.status,
                      "run_id": trial.run_id, "error": trial.error, "done": done, "total": total,
                      "best": best_so_far(study), "eta_s": round(sum(walls) / len(walls) * left / parallel, 1)}
        events.write("trial", **fields)
        bar.update(1)
        bar.set_postfix_str(_best_text(fields["best"], study.metric))
        if trial.status == "failed":
            bar.write(f"trial {trial.name} seed {trial.seed} failed: {trial.error}")
        if on_event is not None:
            on_event({"type": "trial", **fields})

    events.write("start", study=study.study, total=total, done=total - len(todo), parallel=parallel)
    show_trials = progress and parallel == 1
    with concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="trial") as pool:
        running: dict[concurrent.futures.Future, Trial] = {}
        queue = list(todo)
        try:
            while queue or running:
                while queue and len(running) < parallel and not stop.is_set():
                    trial = queue.pop(0)
                    running[pool.submit(run_trial, store, study, trial, stop=stop, progress=show_trials,
                                        on_change=report_trial)] = trial
                if not running:
                    break
                finished, _ = concurrent.futures.wait(running, timeout=1.0, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in finished:
                    running.pop(future)
                    future.result()  # run_trial records a trial's failure on the trial; anything else is a bug
                # a cancel file, or a trial cancelled on its own (its run's Cancel in a UI), stops the study
                asked = (study.study_dir / CANCEL_FILE).exists() or any(t.status == "cancelled" for t in todo)
                if asked and not stop.is_set():
                    _stop_all(store, stop, running.values())
        except KeyboardInterrupt:
            bar.write("cancelling the study: running trials stop after their current step ...")
            _stop_all(store, stop, running.values())
            concurrent.futures.wait(running)
    bar.close()
    study.status = _final_status(study)
    with lock:
        study.save()
    report, files = write_report(store, study)
    if not keep_models:
        drop_models(store, study, keep={(report.get("best") or {}).get("run_id")} - {None})
    summary = {**report["summary"], "minutes": round((time.monotonic() - started) / 60, 2)}
    store.set_run_status(study.study_id, study.status, error=summary["message"] if study.status == "failed" else None,
                         summary=summary)
    events.write("done", status=study.status, **study.counts())
    return StudyOutcome(study=study, report=report, files=files)


def _stop_all(store: Store, stop: threading.Event, running: Sequence[Trial]) -> None:
    """Stop: no new trial starts; each running trial's child stops after its current step."""
    stop.set()
    for trial in running:
        if trial.run_id is not None:
            cancel(Path(store.run(trial.run_id)["run_dir"]))


def _final_status(study: Study) -> str:
    """cancelled while a trial is left to train; else succeeded when any trial did, failed when none."""
    counts = study.counts()
    if counts["pending"] or counts["cancelled"]:
        return "cancelled"
    return "succeeded" if counts["succeeded"] else "failed"


def run_trial(store: Store, study: Study, trial: Trial, *, stop: threading.Event, progress: bool,
              on_change: Callable[[Trial], None]) -> None:
    """Train one trial to its end and record how it went on the trial. Never raises for the
    trial's own failure (a refused config, a crashed child, an error while ingesting): that is
    the trial's status and error, and the study goes on."""
    began = time.monotonic()
    try:
        prepared = _prepare_trial(store, study, trial)
        if prepared is None:  # its run had finished before the study stopped
            on_change(trial)
            return
        trial.run_id, trial.status, trial.error = prepared.run_id, "running", None
        on_change(trial)
        if stop.is_set():  # stopped while this one was being prepared: its child stops at once
            cancel(prepared.run_dir)
        outcome = train_and_ingest(store, prepared, processes=1, progress=progress)
        trial.status, trial.error = outcome.status, outcome.result.get("error")
        trial.metrics = read_metrics(prepared.run_dir) if outcome.status == "succeeded" else {}
        child_s = float(outcome.result.get("seconds") or 0.0)
    except Exception as exc:  # noqa: BLE001 - one trial's failure is recorded, never the study's end
        trial.status, trial.error, child_s = "failed", f"{type(exc).__name__}: {exc}", 0.0
        _mark_failed(store, trial)
    wall = time.monotonic() - began
    trial.timing = {"wall_s": round(wall, 2), "child_s": child_s, "overhead_s": round(max(wall - child_s, 0.0), 2)}
    on_change(trial)


def _prepare_trial(store: Store, study: Study, trial: Trial) -> PreparedRun | None:
    """The trial's run, ready to train: its stopped run continued from its saved state, else a
    new run frozen at the study's decision (and fold splits). None when its run already finished
    (the study stopped between ingesting it and writing study.json): the trial takes its result."""
    if trial.run_id is not None:
        run = store.run(trial.run_id)
        if run["status"] == "succeeded":
            trial.status, trial.error, trial.metrics = "succeeded", None, read_metrics(Path(run["run_dir"]))
            return None
        if run["status"] in ("queued", "running"):  # its writer stopped while it trained
            store.set_run_status(trial.run_id, "failed", error="the study stopped while this trial trained")
        if trainer.saved_progress(run["run_dir"]) is not None:
            return prepare_resume(store, trial.run_id)
    return prepare_finetune(store, preset=str(study.study_dir / PRESET_FILE), overrides=study.run_overrides(trial),
                            init_from=study.init_from, as_of=study.as_of, splits=trial_splits(study, trial))


def trial_splits(study: Study, trial: Trial) -> pd.Series | None:
    """clip id -> split for a cross-validation trial's fold; None for a grid trial."""
    if trial.fold is None:
        return None
    return study.splits().set_index("clip_id")[trial.fold]


def _mark_failed(store: Store, trial: Trial) -> None:
    """A trial that failed in the writer leaves its run (if it has one) failed, not running."""
    if trial.run_id is None:
        return
    try:
        if store.run(trial.run_id)["status"] not in FINAL:
            store.set_run_status(trial.run_id, "failed", error=trial.error)
    except StoreError:
        pass


def read_metrics(run_dir: Path) -> dict[str, float | None]:
    """A finished run's headline numbers on every clip of val and test (given labels):
    val_accuracy, val_balanced_accuracy, val_f1_macro, test_... (None where a split is missing)."""
    splits = json.loads((Path(run_dir) / METRICS_FILE).read_text())["splits"]
    return {f"{split}_{name}": (splits[split]["given"][name] if split in splits else None)
            for split in EVAL_SPLITS for name in STUDY_METRICS}


def best_so_far(study: Study) -> dict[str, Any] | None:
    """The config leading on the val metric's mean over its finished seeds (None before any)."""
    frame = trials_frame(study)
    if not (frame["status"] == "succeeded").any():
        return None
    column = f"val_{study.metric}"
    top = rank(summarise(frame, by="name", columns=[column]), column=f"{column}_mean").iloc[0]
    return {"name": top["name"], "mean": top[f"{column}_mean"], "std": top[f"{column}_std"], "seeds": int(top["succeeded"])}


def _best_text(best: dict[str, Any] | None, metric: str) -> str:
    if best is None:
        return "no trial finished yet"
    spread = "" if best["std"] is None or pd.isna(best["std"]) else f" ± {best['std']:.3f}"
    return f"best {best['name']}: val {metric} {best['mean']:.3f}{spread}"


def drop_models(store: Store, study: Study, *, keep: set[str]) -> None:
    """Delete the checkpoints and resume points of the study's finished trials but `keep`:
    their runs, metrics and predictions stay in the session."""
    for trial in study.trials:
        if trial.status == "succeeded" and trial.run_id not in keep:
            run_dir = Path(store.run(trial.run_id)["run_dir"])
            for folder in (CHECKPOINT_DIR, trainer.STATE_DIR):
                shutil.rmtree(run_dir / folder, ignore_errors=True)
