"""One training loop on Hugging Face Accelerate: one CPU, one GPU, or many via `accelerate launch`.

It runs as a child job of DESIGN.md's one-writer rule (core/child_job.py runs it): it reads only
its run folder (config.yaml, manifest.parquet, job.json) and writes only there (events.jsonl,
checkpoint/, state/, predictions.parquet, metrics.json, plots/, result.json). It never opens the
session store.

    python -m core.train RUN_DIR
    accelerate launch --num_processes 2 --cpu -m core.train RUN_DIR

Setup builds the data, features, model, optimizer, epoch plan (core/curriculum.py) and
augmentation feed; the loop keeps nanoGPT's fixed order, per step: learning rate for this step,
forward/backward/step, log; per epoch: validate, keep the best checkpoint, save the resume point,
log, early-stop check. Then the best checkpoint is evaluated on every split. With the optional
heads on (preset `heads`, A10; core/aux_heads.py), a step adds their weighted terms on the
model's embedding, and each epoch's history row records them (train_contrastive_loss,
train_envelope_loss; train_loss stays the classification term, comparable across runs).
Batches come from core.augment.AugmentFeed: cached log-mel rows, plus augmented samples when the preset lists
augmentations (on the fly, or rendered once before the first epoch when on the fly would cost
more than the model step; the choice is logged as an 'info' event and in result.json).

Runs resume. After every epoch the run folder's state/ holds Accelerate's save_state (weights,
optimizer, every process's RNG) and a TrainState (epoch, step, best metric, early-stopping count,
history, the MixUp generator). Started again on a folder that has one (`earmark train --resume
RUN`), the trainer builds the same setup, loads that state and continues with the next epoch, so
it ends where an uninterrupted run of the same seed would.

Cancel with SIGTERM/SIGINT or by creating RUN_DIR/cancel: the run stops at its next step and
leaves a consistent folder (the best checkpoint so far, its curves, the resume point,
result.json "cancelled"); evaluating it is an explicit audit.
"""
from __future__ import annotations

import dataclasses
import json
import math
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader

from core.augment import AugmentDecision, AugmentFeed
from core.augment.cost import time_model_step
from core.aux_heads import TERMS, AuxiliaryHeads
from core.breakdowns import describe, plan_breakdowns
from core.checkpoint import (CHECKPOINT_DIR, checkpoint_dir, init_from_checkpoint, load_checkpoint, save_checkpoint,
                             update_extra)
from core.child_job import Cancelled, JobContext, JobSpec, command_line, plot_split, predictions_frame, run_child_job
from core.config import AUTO_FIELDS, EvaluationConfig, ExperimentConfig, TrainConfig
from core.curriculum import EpochPlan
from core.envelope import EnvelopeRateCache, log_rate_targets
from core.evaluate import calibrate_threshold, classification_report
from core.feature_fit import fit_to_clips
from core.features import FeatureCache, compute_norm_stats, normalize
from core.losses import build_loss
from core.mixup import mixup
from core.models import AudioClassifier, build_model
from core.plots import plot_training_curves
from core.run_folder import (CONFIG_FILE, MANIFEST_FILE, METRICS_FILE, PLOTS_DIR, PREDICTIONS_FILE, EventLog,
                             write_json)
from core.schedule import apply_lr, lr_multiplier
from core.split_report import UNQUARANTINED, headline_accuracy, quarantine_counts, split_reports

# CHECKPOINT_DIR and the run-folder file names stay importable from here: callers name a run's
# outputs through the trainer that writes them.
__all__ = ["CHECKPOINT_DIR", "EVAL_BATCH", "MANIFEST_COLUMNS", "METRICS_FILE", "PLOTS_DIR", "PREDICTIONS_FILE",
           "Job", "TrainState", "done_summary", "evaluate_splits", "main", "predict_probs", "predict_sharded", "read_manifest", "readable_rows",
           "run_training", "saved_progress"]

EVAL_BATCH = 64
STATE_DIR = "state"              # the resume point, rewritten whole after every epoch
PROGRESS_FILE = "progress.json"  # in STATE_DIR: where that point is, readable without torch
MANIFEST_COLUMNS = ("clip_id", "path", "label", "split", "hard", "true_label", "duration_s", "sample_rate_hz")


@dataclasses.dataclass
class Job(JobSpec):
    """What the writer froze for this run (job.json)."""
    run_id: str
    labels: list[str]
    cache_dir: str
    init_checkpoint: str | None = None
    frozen_at_decision: int | None = None
    workers: int = 2


@dataclasses.dataclass
class TrainState:
    """Where the loop is, beside what Accelerate saves by itself (weights, optimizer, RNG).
    Registered for checkpointing, so save_state / load_state carry it with the rest."""
    mixup_rng: torch.Generator
    epochs_done: int = 0
    step: int = 0
    best_metric: tuple[float, float] = (-math.inf, -math.inf)  # _watched(): higher is better
    best_epoch: int | None = None
    stale_epochs: int = 0
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def state_dict(self) -> dict[str, Any]:
        saved = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "mixup_rng"}
        return {**saved, "mixup_rng": self.mixup_rng.get_state()}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        self.mixup_rng.set_state(saved["mixup_rng"])
        for name, value in saved.items():
            if name != "mixup_rng":
                setattr(self, name, value)
        self.best_metric = tuple(self.best_metric)

    def record(self, row: dict[str, Any], metric: tuple[float, float]) -> bool:
        """Add a finished epoch's history row; True when it is the best so far (which restarts
        the early-stopping count)."""
        self.history.append(row)
        self.epochs_done = row["epoch"]
        improved = metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch, self.stale_epochs = metric, row["epoch"], 0
        else:
            self.stale_epochs += 1
        return improved

    def out_of_patience(self, tc: TrainConfig) -> bool:
        return bool(tc.early_stopping_patience) and self.stale_epochs >= tc.early_stopping_patience


@dataclasses.dataclass
class Setup:
    """Everything the loop reads, built the same way by every process, and again on resume."""
    config: ExperimentConfig
    job: Job
    accelerator: Any
    manifest: pd.DataFrame        # every readable clip with its cache row and class id y
    train: pd.DataFrame
    val: pd.DataFrame             # without quarantined clips: model selection never reads a suspect label
    cache: FeatureCache
    norm_stats: dict[str, Any]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    base_lrs: list[float]
    loss_fn: Callable
    plan: EpochPlan
    feed: AugmentFeed
    total_steps: int
    decision: AugmentDecision | None
    initialised: dict[str, Any]   # how much of the start model this run kept, for the job view and the verdict
    own_loss: bool = False        # the model computes its training loss itself (forward(..., answer_targets=))
    aux: torch.nn.Module | None = None      # the auxiliary heads (A10), prepared like the model
    log_rates: np.ndarray | None = None     # envelope head: each training row's log-rate target (nan = none)

    @property
    def y_train(self) -> np.ndarray:
        return self.train["y"].to_numpy()


def run_training(run_dir: str | Path) -> dict[str, Any]:
    """Train (or continue from the folder's saved state), evaluate and write every output of one
    run; returns result.json's content."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(run_dir)
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=config.train.grad_accum_steps,
                              mixed_precision=_mixed_precision(config.train))
    set_seed(config.train.seed)
    result = run_child_job(run_dir, lambda context: _train(context, config, Job.load(run_dir), accelerator),
                           main_process=accelerator.is_main_process)
    accelerator.end_training()
    return result


def _train(context: JobContext, config: ExperimentConfig, job: Job, accelerator) -> dict[str, Any]:
    """The job body: setup, the loop (resumed when the folder has a saved state), evaluation."""
    run = _setup(context, config, job, accelerator)
    events = context.events
    events.write("start", run_id=job.run_id, epochs=run.plan.n_epochs, total_steps=run.total_steps,
                 train_clips=len(run.train), val_clips=len(run.val), labels=job.labels,
                 processes=accelerator.num_processes, device=str(accelerator.device))
    if run.decision is not None:
        events.write("info", message=f"augmentation {run.decision.mode}: {run.decision.reason}",
                     augmentation=run.decision.to_dict())
    state = TrainState(mixup_rng=torch.Generator().manual_seed(config.train.seed))
    accelerator.register_for_checkpointing(state)
    if accelerator.unwrap_model(run.model).frozen_base:
        _resume_point_keeps_trainable_only(accelerator, accelerator.unwrap_model(run.model))
    _restore(run, state, context)
    cancelled = False
    try:
        _fit(run, state, context)
    except Cancelled:
        cancelled = True
        events.write("cancelled", step=state.step)
    accelerator.wait_for_everyone()
    run.feed.close(context.run_dir if accelerator.is_main_process else None)  # offline copies are scratch
    return _outcome(run, state, context, cancelled=cancelled)


# --- setup ------------------------------------------------------------------------------------
def _setup(context: JobContext, config: ExperimentConfig, job: Job, accelerator) -> Setup:
    """Data, features, model, optimizer, epoch plan and augmentation feed, ready for the loop."""
    run_dir, events = context.run_dir, context.events
    manifest = read_manifest(run_dir, job.labels)
    events.write("phase", phase="features", clips=len(manifest))
    config = _fit_features(run_dir, config, manifest, events, save=accelerator.is_main_process)
    cache, manifest = _cached_features(manifest, config, job, accelerator, events)
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    val = manifest[(manifest["split"] == "val") & ~_quarantined(manifest)].reset_index(drop=True)
    if train.empty or val.empty:
        raise ValueError(f"need training and validation clips; the manifest has {len(train)} train and {len(val)} val")
    norm_stats = compute_norm_stats(cache.array, rows=train["row"].to_numpy()) if config.features.normalize else {}

    model, initialised = _build_model(config, job, events)
    own_loss = config.model.name == "speech_llm"
    recipe = (config.train.loss, config.train.class_weights, config.train.label_smoothing)
    if own_loss and recipe != ("ce", "none", 0.0):
        events.write("warning", message=f"train.loss, class_weights and label_smoothing {recipe} do not apply to the "
                                        "audio LLM: it trains on its language-model loss at the answer token")
    tc = config.train
    backbone_lr = tc.backbone_lr if tc.backbone_lr is not None else tc.lr
    groups = model.parameter_groups(backbone_lr=backbone_lr, head_lr=tc.lr, weight_decay=tc.weight_decay)
    aux, log_rates = _auxiliary_heads(config, job, model, train, accelerator, events)
    if aux is not None:
        groups.append({"name": "aux_heads", "params": list(aux.parameters()), "lr": tc.lr, "weight_decay": tc.weight_decay})
    optimizer = torch.optim.AdamW(groups)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    class_counts = np.bincount(train["y"].to_numpy(), minlength=len(job.labels))
    loss_fn = build_loss(tc, class_counts=class_counts.tolist())
    if aux is not None:
        model, aux, optimizer = accelerator.prepare(model, aux, optimizer)
    else:
        model, optimizer = accelerator.prepare(model, optimizer)

    plan = EpochPlan(train, tc, labels=job.labels, world_size=accelerator.num_processes)
    feed = AugmentFeed(train, config, cache=cache, norm_stats=norm_stats,
                       stages=[plan.stage(e) for e in range(plan.n_epochs)], workers=job.workers)
    run = Setup(config=config, job=job, accelerator=accelerator, manifest=manifest, train=train, val=val, cache=cache,
                norm_stats=norm_stats, model=model, optimizer=optimizer, base_lrs=base_lrs, loss_fn=loss_fn, plan=plan,
                feed=feed, total_steps=0, decision=None, initialised=initialised, own_loss=own_loss, aux=aux,
                log_rates=log_rates)
    run.decision = _prepare_augmentation(run, run_dir, events)
    # Each process steps through its share of every epoch's batches (a multiple of the world size).
    run.total_steps = sum(math.ceil(len(plan.batches(e, samples=feed.sample_ids(e))) / accelerator.num_processes
                                    / tc.grad_accum_steps) for e in range(plan.n_epochs))
    return run


def read_manifest(run_dir: Path, labels: list[str]) -> pd.DataFrame:
    """The frozen manifest with each clip's class id y (the job's label order)."""
    manifest = pd.read_parquet(run_dir / MANIFEST_FILE)
    label_index = {label: i for i, label in enumerate(labels)}
    manifest = manifest.assign(y=manifest["label"].map(label_index))
    if manifest["y"].isna().any():
        raise ValueError(f"manifest labels outside the job's label list: {sorted(set(manifest.label) - set(label_index))}")
    manifest["y"] = manifest["y"].astype(int)
    return manifest


def _cached_features(manifest: pd.DataFrame, config: ExperimentConfig, job: Job, accelerator,
                     events: EventLog) -> tuple[FeatureCache, pd.DataFrame]:
    """The feature cache, built once per (clip, feature config) by the main process while the
    others wait, and the manifest without unreadable clips, with each clip's cache row."""
    cache = FeatureCache(job.cache_dir, config.features)
    with accelerator.main_process_first():
        report = cache.build(manifest["path"].tolist(), workers=job.workers, progress=False)
    return cache, readable_rows(cache, manifest, report, events)


def readable_rows(cache: FeatureCache, manifest: pd.DataFrame, report: Any, events: EventLog) -> pd.DataFrame:
    """The manifest without the clips the cache build could not read (a warning names them),
    with each clip's cache row."""
    if report.failed:
        bad = set(report.failed)
        events.write("warning", message=f"{len(bad)} clips could not be read and are left out", clips=sorted(bad)[:20])
        manifest = manifest[~manifest["path"].isin(bad)].reset_index(drop=True)
    manifest["row"] = cache.rows(manifest["path"].tolist())
    return manifest


def _build_model(config: ExperimentConfig, job: Job, events: EventLog) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The preset's model, started from job.init_checkpoint when there is one; the record of
    how many tensors that copied."""
    model = build_model(config.model, feature_cfg=config.features, labels=job.labels)
    if not job.init_checkpoint:
        return model, {}
    transfer = init_from_checkpoint(model, job.init_checkpoint)
    initialised = {"init": {"checkpoint": job.init_checkpoint, "copied": len(transfer.copied), "total": transfer.total,
                            "kept_fresh": transfer.kept_fresh}}
    events.write("info", message=f"initialised from {job.init_checkpoint}: {transfer}", **initialised)
    return model, initialised


def _auxiliary_heads(config: ExperimentConfig, job: Job, model: AudioClassifier, train: pd.DataFrame, accelerator,
                     events: EventLog) -> tuple[AuxiliaryHeads | None, np.ndarray | None]:
    """The preset's auxiliary heads (None when none is on) and, for the envelope head, each
    training row's log-rate target (nan = none)."""
    heads = config.heads
    if not heads.any:
        return None, None
    aux = AuxiliaryHeads(embedding_dim=model.embedding_dim, heads=heads, labels=job.labels)
    log_rates = _envelope_targets(config, job, train, accelerator, events) if heads.envelope.enabled else None
    if log_rates is not None and not np.isnan(log_rates).all():
        aux.start_envelope_at(float(np.nanmean(log_rates)))
    return aux, log_rates


def _envelope_targets(config: ExperimentConfig, job: Job, train: pd.DataFrame, accelerator,
                      events: EventLog) -> np.ndarray:
    """Each training row's envelope-rate target in log Hz, measured once per clip into the
    envelope cache (core/envelope.py); what was measured is logged as an 'info' event."""
    settings = config.heads.envelope
    cache = EnvelopeRateCache(job.cache_dir, config.features, settings)
    with accelerator.main_process_first():
        report = cache.build(train["path"].tolist(), workers=job.workers, progress=False)
    measured = ~train["path"].isin(set(report.failed)).to_numpy()
    rows = np.full((len(train), 2), np.nan, dtype=np.float32)
    rows[measured] = cache.take(cache.rows(train["path"][measured].tolist()))
    log_rates = log_rate_targets(rows, settings)
    known = ~np.isnan(log_rates)
    if not known.any():
        events.write("warning", message=f"envelope rate: no training clip has a measurable envelope (silent, or too "
                                        f"short for {settings.min_hz:g}-{settings.max_hz:g} Hz): the envelope head learns nothing")
        return log_rates
    steady = known & (rows[:, 1] < settings.min_depth)
    modulated = known & ~steady
    median = f"{np.exp(np.median(log_rates[modulated])):.2f} Hz" if modulated.any() else "-"
    events.write("info", message=f"envelope rate: {int(known.sum())} of {len(train)} training clips measured "
                                 f"({report.computed} computed, {report.reused} from the cache); {int(steady.sum())} "
                                 f"without modulation deeper than {settings.min_depth:g} (target {settings.min_hz:g} Hz); "
                                 f"median rate of the others {median}; {int((~known).sum())} silent or too short, left out",
                 envelope={"measured": int(known.sum()), "unmodulated": int(steady.sum())})
    return log_rates


def _prepare_augmentation(run: Setup, run_dir: Path, events: EventLog) -> AugmentDecision | None:
    """Which samples each epoch holds (augmented copies join the clean clips) and whether
    waveform steps run on the fly or are rendered once first: measured against a model step,
    then logged. None when the preset augments nothing."""
    feed, plan, accelerator = run.feed, run.plan, run.accelerator
    if not (feed.active or feed.derived.any()):
        return None
    events.write("phase", phase="augment")
    y_train = run.y_train
    with accelerator.main_process_first():
        epochs = {e: plan.batches(e, samples=feed.sample_ids(e)) for e in range(plan.n_epochs)}
        return feed.prepare(run_dir, decide=accelerator.is_main_process, batches=epochs, time_model_step=lambda x, rows: (
            time_model_step(accelerator.unwrap_model(run.model), x, torch.from_numpy(y_train[rows]), loss_fn=run.loss_fn,
                            device=accelerator.device)))


# --- the loop ---------------------------------------------------------------------------------
def _restore(run: Setup, state: TrainState, context: JobContext) -> None:
    """Continue from the folder's resume point when it has one: weights, optimizer, every
    process's RNG and the TrainState as they were after the last finished epoch. The setup
    before it drew from the same seeds, so what follows is what an uninterrupted run does next."""
    saved = context.run_dir / STATE_DIR
    if not saved.is_dir():
        return
    run.accelerator.load_state(str(saved))
    context.events.write("info", message=f"resuming after epoch {state.epochs_done} of {run.plan.n_epochs} "
                                         f"(step {state.step}, best epoch {state.best_epoch})",
                         resumed={"epochs_done": state.epochs_done, "step": state.step})


def _fit(run: Setup, state: TrainState, context: JobContext) -> None:
    """The epochs left to run; raises Cancelled at the first step after a stop was asked for."""
    tc = run.config.train
    clock = (time.time(), state.step)  # for the ETA: steps this process ran, not those before a resume
    for epoch in _epochs_left(run, state):
        train_loss, aux_losses = _train_epoch(run, state, epoch, context, clock=clock)
        row = {**_validate(run, state, epoch, train_loss=train_loss), **aux_losses}
        improved = state.record(row, _watched(row, tc))
        if improved and run.accelerator.is_main_process:
            _save(context.run_dir, run, best_epoch=epoch + 1)
        _save_state(run, state, context.run_dir)  # before the epoch event: once seen, the epoch is resumable
        context.events.write("epoch", **row, best_epoch=state.best_epoch, improved=improved)
        if state.out_of_patience(tc):
            context.events.write("info", message=f"early stop: no {tc.early_stopping_metric} gain for "
                                                 f"{state.stale_epochs} epochs")
            break


def _epochs_left(run: Setup, state: TrainState) -> range:
    """From the first unfinished epoch; none when a resumed run had already stopped early."""
    if state.out_of_patience(run.config.train):
        return range(0)
    return range(state.epochs_done, run.plan.n_epochs)


def _train_epoch(run: Setup, state: TrainState, epoch: int, context: JobContext, *,
                 clock: tuple[float, int]) -> tuple[float, dict[str, float | None]]:
    """This process's share of the epoch's batches; returns the mean classification loss per
    sample and each auxiliary term's mean per sample over the batches that had it (history keys
    of core.aux_heads.TERMS; None when MixUp mixed every batch)."""
    accelerator, tc = run.accelerator, run.config.train
    run.model.train()
    aux_sums: dict[str, list[float]] = {}
    batches = run.plan.batches(epoch, samples=run.feed.sample_ids(epoch))[accelerator.process_index::accelerator.num_processes]
    stage_lrs = [lr * run.plan.lr_scale(epoch) for lr in run.base_lrs]  # a curriculum stage may set its own rate
    total_loss, items = 0.0, 0
    for number, batch_ids in enumerate(batches):
        context.check_stop()
        multiplier = lr_multiplier(state.step, total_steps=run.total_steps, warmup_steps=tc.warmup_steps, schedule=tc.schedule)
        apply_lr(run.optimizer, base_lrs=stage_lrs, multiplier=multiplier)
        # The batch's place in the full list keeps augmentation draws the same on every rank.
        loss, terms = _step(run, state, batch_ids, epoch=epoch,
                            batch_index=accelerator.process_index + number * accelerator.num_processes)
        total_loss += loss * len(batch_ids)
        items += len(batch_ids)
        for name, value in terms.items():
            total = aux_sums.setdefault(name, [0.0, 0])
            total[0] += value * len(batch_ids)
            total[1] += len(batch_ids)
        if accelerator.sync_gradients:  # with gradient accumulation, one optimizer step per several batches
            state.step += 1
            started, first_step = clock
            context.events.write("step", step=state.step, total_steps=run.total_steps,
                                 epoch=epoch + (number + 1) / len(batches), loss=round(loss, 5),
                                 lr=run.optimizer.param_groups[-1]["lr"],
                                 eta_s=round((time.time() - started) / (state.step - first_step) * (run.total_steps - state.step), 1))
    enabled = [name for name in TERMS if run.aux is not None and getattr(run.config.heads, name).enabled]
    aux_means = {TERMS[name]: aux_sums[name][0] / aux_sums[name][1] if name in aux_sums else None for name in enabled}
    return total_loss / max(items, 1), aux_means


def _step(run: Setup, state: TrainState, batch_ids: np.ndarray, *, epoch: int,
          batch_index: int) -> tuple[float, dict[str, float]]:
    """Forward, backward and optimizer step on one batch (MixUp'd when configured); its
    classification loss and, on an unmixed batch with heads on, each auxiliary term (unweighted)."""
    config, accelerator = run.config, run.accelerator
    features = run.feed.features(batch_ids, epoch=epoch, batch_index=batch_index)
    rows = run.feed.rows_of(batch_ids)
    classes = targets = torch.from_numpy(run.y_train[rows])
    mixed = False
    if config.mixup_p > 0:
        features, targets, mixed = mixup(features, targets, num_classes=len(run.job.labels), alpha=config.mixup_alpha,
                                         p=config.mixup_p, generator=state.mixup_rng)
    features, targets = features.to(accelerator.device), targets.to(accelerator.device)
    terms: dict[str, torch.Tensor] = {}
    with accelerator.accumulate(run.model):
        if run.own_loss:  # the audio LLM: its LM loss on the answer token alone (B1's loss masking)
            loss = classification = run.model(features, answer_targets=targets)
        elif run.aux is not None and not mixed:
            logits, embedding = run.model(features, return_embedding=True)
            classification = run.loss_fn(logits, targets)
            terms = run.aux(embedding, classes.to(accelerator.device), _log_rates(run, batch_ids, rows, epoch=epoch,
                                                                                   batch_index=batch_index))
            loss = classification + accelerator.unwrap_model(run.aux).weighted(terms)
        else:
            loss = classification = run.loss_fn(run.model(features), targets)
        accelerator.backward(loss)
        run.optimizer.step()
        run.optimizer.zero_grad()
    return float(classification.detach()), {name: float(value.detach()) for name, value in terms.items()}


def _log_rates(run: Setup, batch_ids: np.ndarray, rows: np.ndarray, *, epoch: int, batch_index: int) -> torch.Tensor | None:
    """The batch's envelope targets in log Hz (nan = none), each shifted by the log of the
    time_stretch rate the feed applied to that sample: a clip played r times faster modulates
    r times faster. None without the envelope head."""
    if run.log_rates is None:
        return None
    scales = run.feed.time_scales(batch_ids, epoch=epoch, batch_index=batch_index)
    return torch.from_numpy((run.log_rates[rows] + np.log(scales)).astype(np.float32)).to(run.accelerator.device)


def _validate(run: Setup, state: TrainState, epoch: int, *, train_loss: float) -> dict[str, Any]:
    """The epoch's history row: training loss; validation loss, accuracy and F1 (and accuracy
    against the true labels where the manifest knows them); the LR; the curriculum stage."""
    val, labels = run.val, run.job.labels
    probs = predict_sharded(run.accelerator, run.model, run.cache, val["row"].to_numpy(), run.norm_stats)
    report = classification_report(y_true=val["y"].to_numpy(), probs=probs, labels=labels)
    val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-9)),
                                                  torch.from_numpy(val["y"].to_numpy().copy())))
    row = {"epoch": epoch + 1, "step": state.step, "train_loss": train_loss, "val_loss": val_loss,
           "val_accuracy": report["accuracy"], "val_f1_macro": report["f1_macro"],
           "val_balanced_accuracy": report["balanced_accuracy"],
           "lr": run.optimizer.param_groups[-1]["lr"], **run.plan.stage_info(epoch)}
    known = val["true_label"].notna().to_numpy() if "true_label" in val else np.zeros(len(val), bool)
    if known.any():
        true_y = val["true_label"][known].map({label: i for i, label in enumerate(labels)}).to_numpy()
        row["val_accuracy_true"] = float((probs[known].argmax(1) == true_y).mean())
    return row


def _save_state(run: Setup, state: TrainState, run_dir: Path) -> None:
    """Write the resume point with Accelerate's save_state into a fresh folder swapped in whole:
    a run killed while saving still has the previous epoch's point."""
    accelerator = run.accelerator
    partial = run_dir / f"{STATE_DIR}.partial"
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()  # every process has written its RNG state
    if accelerator.is_main_process:
        write_json(partial / PROGRESS_FILE, {"epochs_done": state.epochs_done, "epochs": run.plan.n_epochs,
                                             "step": state.step, "best_epoch": state.best_epoch})
        shutil.rmtree(run_dir / STATE_DIR, ignore_errors=True)
        partial.rename(run_dir / STATE_DIR)


def _resume_point_keeps_trainable_only(accelerator, net: AudioClassifier) -> None:
    """Accelerate's save_state writes the whole model: for a 7B frozen base under small adapters
    (the audio LLM) that is gigabytes per epoch of weights that never change. These hooks keep only
    the trainable tensors in the resume point and load them back; the base comes from its source."""
    trainable = net.trainable_names()

    def before_save(models: list, weights: list[dict], output_dir: str) -> None:
        for i in range(len(weights)):
            weights[i] = {k: v for k, v in weights[i].items() if k.removeprefix("module.") in trainable}

    def before_load(models: list, input_dir: str) -> None:
        from safetensors.torch import load_file

        path = Path(input_dir) / "model.safetensors"
        net.load_trainable({k.removeprefix("module."): v for k, v in load_file(str(path)).items()}, source=str(path))
        models.clear()  # loaded here: Accelerate must not load the partial file strictly

    accelerator.register_save_state_pre_hook(before_save)
    accelerator.register_load_state_pre_hook(before_load)


def saved_progress(run_dir: str | Path) -> dict[str, Any] | None:
    """Where a run's resume point is (epochs_done, epochs, step, best_epoch), or None when it
    has none (it stopped before its first epoch ended): what the writer checks before a resume."""
    path = Path(run_dir) / STATE_DIR / PROGRESS_FILE
    return json.loads(path.read_text()) if path.is_file() else None


# --- the result -------------------------------------------------------------------------------
def _outcome(run: Setup, state: TrainState, context: JobContext, *, cancelled: bool) -> dict[str, Any]:
    """result.json's content. A cancel stops at once: evaluating every split can take minutes,
    so a cancelled run keeps its best checkpoint and curves unevaluated (an audit evaluates it)."""
    main_process = run.accelerator.is_main_process
    extra = {**({"augmentation": run.decision.to_dict()} if run.decision is not None else {}), **run.initialised}
    if state.best_epoch is None:
        return {"status": "cancelled" if cancelled else "failed", "error": "stopped before the first epoch finished: no checkpoint",
                "seconds": context.seconds(), **extra}
    summary: dict[str, Any] = {}
    if cancelled:
        if main_process:
            _training_record(context.run_dir, run.job, state.history)
        summary = {"evaluated": False, "message": f"cancelled after {len(state.history)} epoch(s); the best checkpoint "
                                                  f"(epoch {state.best_epoch}) is kept unevaluated: audit the run to evaluate it"}
    elif main_process:
        summary = _final_outputs(context.run_dir, run.manifest, state.history, run.job, run.cache, context.events,
                                 best_epoch=state.best_epoch, evaluation=run.config.evaluation)
    loss_watched = run.config.train.early_stopping_metric == "loss"
    return {"status": "cancelled" if cancelled else "succeeded", "best_epoch": state.best_epoch,
            "best_metric": -state.best_metric[0] if loss_watched else state.best_metric[0],
            "epochs_run": len(state.history), "steps": state.step, "seconds": context.seconds(), **extra, **summary}


# --- helpers ------------------------------------------------------------------------------------
def _fit_features(run_dir: Path, config: ExperimentConfig, manifest: pd.DataFrame, events: EventLog, *,
                  save: bool) -> ExperimentConfig:
    """Fix the preset's 'auto' feature fields from the training clips, log what and why (and what
    does not fit them), and save the concrete config: the checkpoint, the model card and audits
    then all use the same numbers. Augmented copies are left out: written at the feature rate,
    they would hide their sources' rate."""
    originals = manifest["parent_clip_id"].isna() if "parent_clip_id" in manifest else True
    fit = fit_to_clips(config.features, manifest[(manifest["split"] == "train") & originals])
    for line in fit.info:
        events.write("info", message=line, features={k: getattr(fit.features, k) for k in AUTO_FIELDS})
    for line in fit.warnings:
        events.write("warning", message=line)
    config = dataclasses.replace(config, features=fit.features)
    if save:
        config.save(run_dir / CONFIG_FILE)
    return config


def predict_probs(model, cache: FeatureCache, rows: np.ndarray, norm_stats: dict, *,
                  device: torch.device | str = "cpu") -> np.ndarray:
    """Class probabilities (len(rows), C) for cached clips, in one process."""
    model.eval()
    outputs = []
    with torch.no_grad():
        for start in range(0, len(rows), EVAL_BATCH):
            features = torch.from_numpy(cache.take(rows[start:start + EVAL_BATCH]))
            features = normalize(features, norm_stats) if norm_stats else features
            outputs.append(torch.softmax(model(features.to(device)).float(), dim=-1).cpu())
    return torch.cat(outputs).numpy() if outputs else np.zeros((0, len(model.labels)), dtype=np.float32)


def predict_sharded(accelerator, model, cache: FeatureCache, rows: np.ndarray, norm_stats: dict) -> np.ndarray:
    """predict_probs split across processes and gathered back into row order.

    The prepared loader hands each process whole batches (padding the last round so every rank
    takes part in each gather); gather_for_metrics drops that padding again.
    """
    net = accelerator.unwrap_model(model)
    if accelerator.num_processes == 1:
        return predict_probs(net, cache, rows, norm_stats, device=accelerator.device)
    loader = prepare_data_loader(DataLoader(torch.arange(len(rows)), batch_size=EVAL_BATCH),
                                 num_processes=accelerator.num_processes, process_index=accelerator.process_index,
                                 put_on_device=False)
    outputs = []
    for batch in loader:
        local = torch.from_numpy(predict_probs(net, cache, rows[batch.numpy()], norm_stats, device=accelerator.device))
        outputs.append(accelerator.gather_for_metrics(local.to(accelerator.device)).cpu())
    return torch.cat(outputs).numpy()


def _mixed_precision(tc: TrainConfig) -> str:
    """Accelerate's mixed_precision for train.mixed_precision: auto = bf16 where a GPU supports it."""
    if tc.mixed_precision == "auto":
        return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if tc.mixed_precision == "bf16" and not torch.cuda.is_available():
        return "no"  # CPU bf16 autocast is slower than float32 on most CPUs
    return tc.mixed_precision


def _watched(row: dict[str, Any], tc: TrainConfig) -> tuple[float, float]:
    """The early-stopping metric, oriented so that higher is better; ties go to the lower
    validation loss (accuracy saturates on easy data while the model still improves)."""
    if tc.early_stopping_metric == "loss":
        return (-row["val_loss"], 0.0)
    value = row[f"val_{tc.early_stopping_metric}"]
    return (-math.inf if value is None else value, -row["val_loss"])


def _save(run_dir: Path, run: Setup, *, best_epoch: int) -> None:
    """Replace the run's checkpoint with this epoch's model (it is the best so far)."""
    config, job = run.config, run.job
    save_checkpoint(checkpoint_dir(run_dir), model=run.accelerator.unwrap_model(run.model), model_cfg=config.model,
                    feature_cfg=config.features, labels=job.labels, norm_stats=run.norm_stats,
                    extra={"run_id": job.run_id, "best_epoch": best_epoch, "frozen_at_decision": job.frozen_at_decision,
                           "preset": config.name})


def _final_outputs(run_dir: Path, manifest: pd.DataFrame, history: list[dict], job: Job, cache: FeatureCache,
                   events: EventLog, *, best_epoch: int, evaluation: EvaluationConfig) -> dict[str, Any]:
    """Predict every split with the best checkpoint; write predictions, metrics (with metadata
    breakdowns), plots, model card."""
    events.write("phase", phase="evaluate")
    loaded = load_checkpoint(checkpoint_dir(run_dir))
    probs = predict_probs(loaded.model, cache, manifest["row"].to_numpy(), loaded.norm_stats)
    metrics = evaluate_splits(run_dir, manifest, probs, job.labels, evaluation=evaluation)
    metrics["history"] = history
    plot_training_curves(run_dir / PLOTS_DIR / "training_curves.png", history=history)
    if loaded.model_cfg.name == "speech_llm":
        metrics["answer_card"] = _answer_card(run_dir, loaded, manifest, probs)
    write_json(run_dir / METRICS_FILE, metrics)
    _write_model_card(run_dir, job, metrics, epochs_run=len(history), best_epoch=best_epoch)
    return done_summary(metrics, events)


def evaluate_splits(run_dir: Path, manifest: pd.DataFrame, probs: np.ndarray, labels: list[str], *,
                    evaluation: EvaluationConfig) -> dict[str, Any]:
    """A finished model's evaluation of its frozen manifest (column y: class ids in labels' order):
    predictions.parquet, per-split metrics against the given labels with metadata breakdowns, and
    their plots. Returns the metrics (metrics.json's content, without history)."""
    predicted = probs.argmax(1)
    predictions_frame(manifest, probs, labels).to_parquet(run_dir / PREDICTIONS_FILE)
    plan = plan_breakdowns(manifest, evaluation)
    metrics: dict[str, Any] = {"labels": labels, "splits": {}, "counts": {}, "history": [], "breakdowns": {},
                               "breakdowns_skipped": plan.skipped}
    for split, part in manifest.groupby("split"):
        idx = part.index.to_numpy()
        entry = split_reports(y=part["y"].to_numpy(), probs=probs[idx], labels=labels,
                              quarantined=_quarantined(part).to_numpy(),
                              true_labels=part["true_label"] if "true_label" in part else None)
        breakdowns = plan.report(idx, y_true=part["y"].to_numpy(), y_pred=predicted[idx], labels=labels)
        metrics["splits"][split] = entry
        metrics["counts"][split] = {"clips": len(part), **quarantine_counts(_quarantined(part).to_numpy())}
        if breakdowns:
            metrics["breakdowns"][split] = breakdowns
        plot_split(run_dir / PLOTS_DIR, split, entry["given"], breakdowns, labels,
                   confusion_title=f"{split} (given labels)",
                   breakdowns_title=f"{split}: accuracy by clip metadata (given labels)")
    return metrics


def done_summary(metrics: dict[str, Any], events: EventLog) -> dict[str, dict[str, float]]:
    """The headline figures per split ({accuracy: {val: .., test: ..}, ...}), also sent as the 'done' event."""
    summary: dict[str, dict[str, float]] = {}
    for split, entry in metrics["splits"].items():
        for name, value in headline_accuracy(entry).items():
            summary.setdefault(name, {})[split] = value
    events.write("phase", phase="done", **summary)
    return summary


def _answer_card(run_dir: Path, loaded: Any, manifest: pd.DataFrame, probs: np.ndarray) -> dict[str, Any]:
    """The audio LLM's card: base model, prompt, letter ids and the p(speech) threshold chosen on
    val for balanced accuracy (B5), also written into the checkpoint beside its adapters."""
    model = loaded.model
    card = model.architecture()
    val = (manifest["split"] == "val").to_numpy()
    speech = manifest["y"].to_numpy() == model.speech_column
    card["threshold"] = None
    if val.any() and 0 < speech[val].sum() < val.sum():
        chosen = calibrate_threshold(scores=probs[val, model.speech_column], y_true_binary=speech[val])
        card["threshold"], card["threshold_objective"] = chosen["threshold"], chosen["objective"]
    update_extra(checkpoint_dir(run_dir), answer_card=card)
    return card


def _training_record(run_dir: Path, job: Job, history: list[dict]) -> None:
    """What a cancelled run keeps without evaluating: its history and training curves."""
    plot_training_curves(run_dir / PLOTS_DIR / "training_curves.png", history=history)
    write_json(run_dir / METRICS_FILE, {"labels": job.labels, "splits": {}, "counts": {}, "history": history,
                                        "breakdowns": {}})


def _quarantined(manifest: pd.DataFrame) -> pd.Series:
    """Which rows were in open quarantine at the freeze (manifests without the column: none)."""
    if "quarantined" not in manifest:
        return pd.Series(False, index=manifest.index)
    return manifest["quarantined"].fillna(False).astype(bool)


def _write_model_card(run_dir: Path, job: Job, metrics: dict[str, Any], *, epochs_run: int, best_epoch: int) -> None:
    config_text = (run_dir / CONFIG_FILE).read_text()
    lines = [f"# Model card: run {job.run_id}", "",
             f"Classes ({len(job.labels)}): {', '.join(job.labels)}",
             f"Training data: the session's labels as of decision {job.frozen_at_decision} (manifest.parquet in the run folder).",
             f"Initialised from: {job.init_checkpoint or 'scratch / the preset'}",
             f"Epochs run: {epochs_run}; kept: epoch {best_epoch} (best on validation)",
             "", "## Metrics (against the labels as given; every clip, open quarantine included)", "",
             "| split | accuracy | F1 macro | mAP | accuracy without quarantined | in quarantine |", "|---|---|---|---|---|---|"]
    for split, entry in sorted(metrics["splits"].items()):
        r, counts = entry["given"], metrics["counts"][split]
        apart = _fmt(entry[UNQUARANTINED]["accuracy"]) if UNQUARANTINED in entry else "-"
        lines.append(f"| {split} | {r['accuracy']:.4f} | {_fmt(r['f1_macro'])} | {_fmt(r['mAP'])} | {apart} | "
                     f"{counts['quarantined']} ({counts['quarantined_share']:.1%}) |")
    for split, columns in sorted(metrics["breakdowns"].items()):
        lines += ["", f"## Accuracy by clip metadata ({split}, given labels)", ""]
        lines += [f"- {describe(column, entry)}" for column, entry in columns.items()]
    if "answer_card" in metrics:
        card = metrics["answer_card"]
        threshold = "-" if card["threshold"] is None else f"{card['threshold']:.4f} (p(speech), best balanced accuracy on val)"
        lines += ["", "## Audio LLM answer card", "", f"- base model: {card['base']}",
                  f"- answer letters: {card['answer_token_ids']} (token ids); {card['speech_answer']} means {card['speech_label']}",
                  f"- threshold: {threshold}", "- prompt:", "", "```text", card["prompt"], "```",
                  "", "The checkpoint holds the LoRA adapters only: the base model must be readable where it is loaded."]
    lines += ["", "## Configuration", "", "```yaml", config_text.rstrip(), "```", ""]
    (checkpoint_dir(run_dir) / "README.md").write_text("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.train", run=run_training, ok=("succeeded", "cancelled"))


if __name__ == "__main__":
    sys.exit(main())
