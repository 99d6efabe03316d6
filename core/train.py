"""One training loop on Hugging Face Accelerate: one CPU, one GPU, or many via `accelerate launch`.

It runs as the child job of DESIGN.md's one-writer rule: it reads only its run folder
(config.yaml, manifest.parquet, job.json) and writes only there (events.jsonl, checkpoint/,
predictions.parquet, metrics.json, plots/, result.json). It never opens the session store.

    python -m core.train RUN_DIR
    accelerate launch --num_processes 2 --cpu -m core.train RUN_DIR

The loop keeps nanoGPT's order: learning rate for this step, forward/backward/step, log, stop
check; at the end of each epoch: validate, keep the best checkpoint, early-stop. Batches come
from core.augment.AugmentFeed: cached log-mel rows, plus augmented samples when the preset
lists augmentations (on the fly, or rendered once before the first epoch when on the fly would
cost more than the model step; the choice is logged as an 'info' event and in result.json).

Cancel with SIGTERM/SIGINT or by creating RUN_DIR/cancel: the run stops after the current step
and leaves a consistent folder (the best checkpoint so far, predictions from it, result.json
"cancelled").
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate.data_loader import prepare_data_loader
from torch.utils.data import DataLoader

from core.augment import AugmentFeed
from core.augment.cost import time_model_step
from core.checkpoint import init_from_checkpoint, load_checkpoint, save_checkpoint
from core.breakdowns import describe, plan_breakdowns
from core.config import AUTO_FIELDS, EvaluationConfig, ExperimentConfig, TrainConfig
from core.evaluate import classification_report
from core.feature_fit import fit_to_clips
from core.features import FeatureCache, compute_norm_stats, normalize
from core.run_folder import CONFIG_FILE, EVENTS_FILE, JOB_FILE, MANIFEST_FILE, RESULT_FILE, EventLog, StopFlag, json_default
from core.losses import build_loss
from core.mixup import mixup
from core.models import build_model
from core.plots import plot_breakdowns, plot_confusion, plot_reliability, plot_training_curves
from core.sampling import ComposedBatchSampler, curriculum_extra_indices, oversampled_indices, stage_for_epoch, total_epochs
from core.schedule import apply_lr, lr_multiplier
from core.split_report import UNQUARANTINED, headline_accuracy, quarantine_counts, split_reports

CHECKPOINT_DIR = "checkpoint"
PREDICTIONS_FILE = "predictions.parquet"
METRICS_FILE = "metrics.json"
PLOTS_DIR = "plots"
EVAL_BATCH = 64
MANIFEST_COLUMNS = ("clip_id", "path", "label", "split", "hard", "true_label", "duration_s", "sample_rate_hz")


class Cancelled(Exception):
    """The run was asked to stop."""


@dataclasses.dataclass
class Job:
    """What the writer froze for this run (job.json)."""
    run_id: str
    labels: list[str]
    cache_dir: str
    init_checkpoint: str | None = None
    frozen_at_decision: int | None = None
    workers: int = 2

    @classmethod
    def load(cls, run_dir: Path) -> "Job":
        return cls(**json.loads((run_dir / JOB_FILE).read_text()))

    def save(self, run_dir: Path) -> None:
        (run_dir / JOB_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def run_training(run_dir: str | Path) -> dict[str, Any]:
    """Train, evaluate and write every output of one run; returns result.json's content."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(run_dir)
    config = ExperimentConfig.load(run_dir / CONFIG_FILE)
    job = Job.load(run_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), gradient_accumulation_steps=config.train.grad_accum_steps)
    events = EventLog(run_dir / EVENTS_FILE, enabled=accelerator.is_main_process)
    stop = StopFlag(run_dir)
    set_seed(config.train.seed)
    started = time.time()
    try:
        result = _train_and_evaluate(run_dir, config, job, accelerator, events, stop, started)
    except Exception as exc:  # the writer reads result.json; the traceback goes to the log
        result = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "seconds": round(time.time() - started, 1)}
        events.write("error", message=result["error"], traceback=traceback.format_exc())
    if accelerator.is_main_process:
        (run_dir / RESULT_FILE).write_text(json.dumps(result, indent=2, default=json_default))
    accelerator.end_training()
    return result


def _train_and_evaluate(run_dir: Path, config: ExperimentConfig, job: Job, accelerator, events: EventLog,
                        stop: StopFlag, started: float) -> dict[str, Any]:
    manifest = pd.read_parquet(run_dir / MANIFEST_FILE)
    label_index = {label: i for i, label in enumerate(job.labels)}
    manifest = manifest.assign(y=manifest["label"].map(label_index))
    if manifest["y"].isna().any():
        raise ValueError(f"manifest labels outside the job's label list: {sorted(set(manifest.label) - set(label_index))}")
    manifest["y"] = manifest["y"].astype(int)

    # Features: fitted to the training clips, built once per (clip, feature config); the main
    # process builds, the others wait.
    events.write("phase", phase="features", clips=len(manifest))
    config = _fit_features(run_dir, config, manifest, events, save=accelerator.is_main_process)
    cache = FeatureCache(job.cache_dir, config.features)
    with accelerator.main_process_first():
        report = cache.build(manifest["path"].tolist(), workers=job.workers, progress=False)
    if report.failed:
        bad = set(report.failed)
        events.write("warning", message=f"{len(bad)} clips could not be read and are left out", clips=sorted(bad)[:20])
        manifest = manifest[~manifest["path"].isin(bad)].reset_index(drop=True)
    manifest["row"] = cache.rows(manifest["path"].tolist())
    train = manifest[manifest["split"] == "train"].reset_index(drop=True)
    # Model selection never reads a quarantined clip's suspect label; the final report scores it.
    val = manifest[(manifest["split"] == "val") & ~_quarantined(manifest)].reset_index(drop=True)
    if train.empty or val.empty:
        raise ValueError(f"need training and validation clips; the manifest has {len(train)} train and {len(val)} val")
    norm_stats = compute_norm_stats(cache.array, rows=train["row"].to_numpy()) if config.features.normalize else {}

    model = build_model(config.model, feature_cfg=config.features, labels=job.labels)
    initialised = {}  # how much of the start model this run kept, for the job view and the verdict
    if job.init_checkpoint:
        transfer = init_from_checkpoint(model, job.init_checkpoint)
        initialised = {"init": {"checkpoint": job.init_checkpoint, "copied": len(transfer.copied), "total": transfer.total,
                                "kept_fresh": transfer.kept_fresh}}
        events.write("info", message=f"initialised from {job.init_checkpoint}: {transfer}", **initialised)
    tc = config.train
    head_lr = tc.lr
    backbone_lr = tc.backbone_lr if tc.backbone_lr is not None else tc.lr
    optimizer = torch.optim.AdamW(model.parameter_groups(backbone_lr=backbone_lr, head_lr=head_lr, weight_decay=tc.weight_decay))
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    class_counts = np.bincount(train["y"].to_numpy(), minlength=len(job.labels))
    loss_fn = build_loss(tc, class_counts=class_counts.tolist())
    model, optimizer = accelerator.prepare(model, optimizer)

    plan = EpochPlan(train, tc, labels=job.labels, world_size=accelerator.num_processes)
    n_epochs = plan.n_epochs
    # Augmentation: which samples each epoch holds (augmented copies join the clean clips) and
    # whether waveform steps run on the fly or are rendered once first (measured, then logged).
    feed = AugmentFeed(train, config, cache=cache, norm_stats=norm_stats, stages=[plan.stage(e) for e in range(n_epochs)],
                       workers=job.workers)
    y_train = train["y"].to_numpy()
    decision = None
    if feed.active or feed.derived.any():
        events.write("phase", phase="augment")
        with accelerator.main_process_first():
            epochs = {e: plan.batches(e, samples=feed.sample_ids(e)) for e in range(n_epochs)}
            decision = feed.prepare(run_dir, decide=accelerator.is_main_process, batches=epochs, time_model_step=lambda x, rows: (
                time_model_step(accelerator.unwrap_model(model), x, torch.from_numpy(y_train[rows]), loss_fn=loss_fn,
                                device=accelerator.device)))
    # Each process steps through its share of every epoch's batches (a multiple of the world size).
    steps_per_epoch = [math.ceil(len(plan.batches(e, samples=feed.sample_ids(e))) / accelerator.num_processes
                                 / tc.grad_accum_steps) for e in range(n_epochs)]
    total_steps = sum(steps_per_epoch)
    events.write("start", run_id=job.run_id, epochs=n_epochs, total_steps=total_steps, train_clips=len(train),
                 val_clips=len(val), labels=job.labels, processes=accelerator.num_processes, device=str(accelerator.device))
    if decision is not None:
        events.write("info", message=f"augmentation {decision.mode}: {decision.reason}", augmentation=decision.to_dict())
    generator = torch.Generator().manual_seed(tc.seed)
    best = {"metric": (-math.inf, -math.inf), "epoch": None}
    stale_epochs = 0
    history: list[dict[str, Any]] = []
    step = 0
    cancelled = False
    loop_started = time.time()
    try:
        for epoch in range(n_epochs):
            stage_lr_scale = plan.lr_scale(epoch)
            model.train()
            batches = plan.batches(epoch, samples=feed.sample_ids(epoch))[accelerator.process_index::accelerator.num_processes]
            epoch_loss, epoch_items = 0.0, 0
            for batch_number, batch_ids in enumerate(batches):
                if stop.raised:
                    raise Cancelled()
                # 1. learning rate for this step
                multiplier = lr_multiplier(step, total_steps=total_steps, warmup_steps=tc.warmup_steps, schedule=tc.schedule)
                apply_lr(optimizer, base_lrs=[lr * stage_lr_scale for lr in base_lrs], multiplier=multiplier)
                # 2. forward / backward / step
                batch_index = accelerator.process_index + batch_number * accelerator.num_processes  # in the full list
                features = feed.features(batch_ids, epoch=epoch, batch_index=batch_index)
                targets = torch.from_numpy(y_train[feed.rows_of(batch_ids)])
                features, soft_targets, _ = mixup(features, targets, num_classes=len(job.labels), alpha=config.mixup_alpha,
                                                  p=config.mixup_p, generator=generator) if config.mixup_p > 0 else (features, targets, False)
                features, soft_targets = features.to(accelerator.device), soft_targets.to(accelerator.device)
                with accelerator.accumulate(model):
                    loss = loss_fn(model(features), soft_targets)
                    accelerator.backward(loss)
                    optimizer.step()
                    optimizer.zero_grad()
                epoch_loss += float(loss.detach()) * len(batch_ids)
                epoch_items += len(batch_ids)
                # 3. log
                if accelerator.sync_gradients:
                    step += 1
                    elapsed = time.time() - loop_started
                    events.write("step", step=step, total_steps=total_steps, epoch=epoch + (batch_number + 1) / len(batches),
                                 loss=round(float(loss.detach()), 5), lr=optimizer.param_groups[-1]["lr"],
                                 eta_s=round(elapsed / step * (total_steps - step), 1))
            # 4. validate, keep the best, early-stop
            val_out = predict_sharded(accelerator, model, cache, val["row"].to_numpy(), norm_stats)
            val_report = classification_report(y_true=val["y"].to_numpy(), probs=val_out, labels=job.labels)
            val_loss = float(torch.nn.functional.nll_loss(torch.log(torch.from_numpy(val_out).clamp_min(1e-9)),
                                                          torch.from_numpy(val["y"].to_numpy().copy())))
            row = {"epoch": epoch + 1, "step": step, "train_loss": epoch_loss / max(epoch_items, 1), "val_loss": val_loss,
                   "val_accuracy": val_report["accuracy"], "val_f1_macro": val_report["f1_macro"],
                   "lr": optimizer.param_groups[-1]["lr"], **plan.stage_info(epoch)}
            known = val["true_label"].notna().to_numpy() if "true_label" in val else np.zeros(len(val), bool)
            if known.any():
                true_y = val["true_label"][known].map({l: i for i, l in enumerate(job.labels)}).to_numpy()
                row["val_accuracy_true"] = float((val_out[known].argmax(1) == true_y).mean())
            history.append(row)
            metric = _watched(row, tc)
            improved = metric > best["metric"]
            if improved:
                best = {"metric": metric, "epoch": epoch + 1}
                stale_epochs = 0
                if accelerator.is_main_process:
                    _save(run_dir, accelerator.unwrap_model(model), config, job, norm_stats, best_epoch=epoch + 1)
            else:
                stale_epochs += 1
            events.write("epoch", **row, best_epoch=best["epoch"], improved=improved)
            if tc.early_stopping_patience and stale_epochs >= tc.early_stopping_patience:
                events.write("info", message=f"early stop: no {tc.early_stopping_metric} gain for {stale_epochs} epochs")
                break
    except Cancelled:
        cancelled = True
        events.write("cancelled", step=step)
    accelerator.wait_for_everyone()
    feed.close(run_dir if accelerator.is_main_process else None)  # offline copies are scratch: the checkpoint holds what they taught
    augmentation = {"augmentation": decision.to_dict()} if decision is not None else {}

    if best["epoch"] is None:
        status = "cancelled" if cancelled else "failed"
        return {"status": status, "error": "stopped before the first epoch finished: no checkpoint",
                "seconds": round(time.time() - started, 1), **augmentation, **initialised}
    summary = {}
    if cancelled:
        # A cancel stops now: evaluating every split can take minutes. The best checkpoint is
        # kept; an audit of this run (an explicit action) evaluates it.
        if accelerator.is_main_process:
            _training_record(run_dir, job, history)
        summary = {"evaluated": False, "message": f"cancelled after {len(history)} epoch(s); the best checkpoint "
                                                  f"(epoch {best['epoch']}) is kept unevaluated: audit the run to evaluate it"}
    elif accelerator.is_main_process:
        summary = _final_outputs(run_dir, manifest, history, job, cache, events, best_epoch=best["epoch"],
                                 evaluation=config.evaluation)
    return {"status": "cancelled" if cancelled else "succeeded", "best_epoch": best["epoch"],
            "best_metric": best["metric"][0] if tc.early_stopping_metric != "loss" else -best["metric"][0], "epochs_run": len(history), "steps": step,
            "seconds": round(time.time() - started, 1), **augmentation, **initialised, **summary}


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


class EpochPlan:
    """Which training rows go into which batches, epoch by epoch (samplers + curriculum)."""

    def __init__(self, train: pd.DataFrame, tc: TrainConfig, *, labels: list[str], world_size: int) -> None:
        self.train, self.tc, self.labels, self.world_size = train, tc, labels, world_size
        self.y = train["y"].to_numpy()
        self.hard = np.flatnonzero(train["hard"].to_numpy()) if "hard" in train else np.array([], dtype=int)
        self.n_epochs = total_epochs(tc.curriculum) if tc.curriculum else tc.epochs

    def stage(self, epoch: int):
        return stage_for_epoch(self.tc.curriculum, epoch)[1] if self.tc.curriculum else None

    def stage_info(self, epoch: int) -> dict[str, Any]:
        return {"stage": stage_for_epoch(self.tc.curriculum, epoch)[0] + 1} if self.tc.curriculum else {}

    def lr_scale(self, epoch: int) -> float:
        stage = self.stage(epoch)
        return stage.lr / self.tc.lr if stage is not None and stage.lr is not None else 1.0

    def batches(self, epoch: int, *, samples: np.ndarray | None = None) -> list[np.ndarray]:
        """Sample-id lists (AugmentFeed ids: training rows, then augmented copies); a multiple of
        world_size so DDP ranks stay in step. samples: the epoch's ids (default: each row once)."""
        tc, seed = self.tc, self.tc.seed
        rng = np.random.default_rng([seed, epoch])
        samples = np.arange(len(self.y)) if samples is None else np.asarray(samples)
        y = self.y[samples % len(self.y)]
        if tc.batch_composition:
            composition = {self.labels.index(c): n for c, n in tc.batch_composition.items() if n > 0}
            sampler = ComposedBatchSampler(y, composition=composition, seed=seed)
            sampler.set_epoch(epoch)
            batches = [samples[np.asarray(b)] for b in sampler]
        else:
            factors = {self.labels.index(c): f for c, f in (tc.oversample or {}).items()}
            order = oversampled_indices(y, factors=factors, seed=seed, epoch=epoch) if factors else rng.permutation(len(y))
            batches = [samples[order[i:i + tc.batch_size]] for i in range(0, len(order), tc.batch_size)]
        stage = self.stage(epoch)
        if stage is not None and stage.hard_examples and len(self.hard):
            pool = self.hard
            if stage.hard_classes:
                wanted = {self.labels.index(c) for c in stage.hard_classes}
                pool = pool[np.isin(self.y[pool], list(wanted))]
            extra = curriculum_extra_indices(pool, repeat=stage.hard_repeat, fraction=stage.hard_fraction, seed=seed, epoch=epoch)
            extra = rng.permutation(extra)
            batches += [extra[i:i + tc.batch_size] for i in range(0, len(extra), tc.batch_size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size
        return [b for b in batches[:usable] if len(b)]


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


def _watched(row: dict[str, Any], tc: TrainConfig) -> tuple[float, float]:
    """The early-stopping metric, oriented so that higher is better; ties go to the lower
    validation loss (accuracy saturates on easy data while the model still improves)."""
    if tc.early_stopping_metric == "loss":
        return (-row["val_loss"], 0.0)
    value = row[f"val_{tc.early_stopping_metric}"]
    return (-math.inf if value is None else value, -row["val_loss"])


def _save(run_dir: Path, model, config: ExperimentConfig, job: Job, norm_stats: dict, *, best_epoch: int) -> None:
    save_checkpoint(run_dir / CHECKPOINT_DIR, model=model, model_cfg=config.model, feature_cfg=config.features,
                    labels=job.labels, norm_stats=norm_stats,
                    extra={"run_id": job.run_id, "best_epoch": best_epoch, "frozen_at_decision": job.frozen_at_decision,
                           "preset": config.name})


def _final_outputs(run_dir: Path, manifest: pd.DataFrame, history: list[dict], job: Job, cache: FeatureCache,
                   events: EventLog, *, best_epoch: int, evaluation: EvaluationConfig) -> dict[str, Any]:
    """Predict every split with the best checkpoint; write predictions, metrics (with metadata
    breakdowns), plots, model card."""
    events.write("phase", phase="evaluate")
    loaded = load_checkpoint(run_dir / CHECKPOINT_DIR)
    probs = predict_probs(loaded.model, cache, manifest["row"].to_numpy(), loaded.norm_stats)
    predicted = probs.argmax(1)
    predictions = pd.DataFrame({
        "clip_id": manifest["clip_id"], "split": manifest["split"], "label": manifest["label"],
        "predicted": [job.labels[i] for i in predicted], "confidence": probs.max(1).astype(float),
        "probs": list(probs.astype(np.float32)),
    })
    predictions.to_parquet(run_dir / PREDICTIONS_FILE)
    plan = plan_breakdowns(manifest, evaluation)
    metrics: dict[str, Any] = {"labels": job.labels, "splits": {}, "counts": {}, "history": history, "breakdowns": {},
                               "breakdowns_skipped": plan.skipped}
    plots = run_dir / PLOTS_DIR
    for split, part in manifest.groupby("split"):
        idx = part.index.to_numpy()
        entry = split_reports(y=part["y"].to_numpy(), probs=probs[idx], labels=job.labels,
                              quarantined=_quarantined(part).to_numpy(),
                              true_labels=part["true_label"] if "true_label" in part else None)
        report = entry["given"]
        breakdowns = plan.report(idx, y_true=part["y"].to_numpy(), y_pred=predicted[idx], labels=job.labels)
        metrics["splits"][split] = entry
        metrics["counts"][split] = {"clips": len(part), **quarantine_counts(_quarantined(part).to_numpy())}
        plot_confusion(plots / f"confusion_{split}.png", matrix=np.array(report["confusion"]["counts"]), labels=job.labels,
                       normalized=False, title=f"{split} (given labels)")
        plot_reliability(plots / f"reliability_{split}.png", bins=report["calibration"]["bins"], ece=report["calibration"]["ece"])
        if breakdowns:
            metrics["breakdowns"][split] = breakdowns
            plot_breakdowns(plots / f"breakdowns_{split}.png", breakdowns=breakdowns,
                            title=f"{split}: accuracy by clip metadata (given labels)")
    plot_training_curves(plots / "training_curves.png", history=history)
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=json_default))
    _write_model_card(run_dir, job, metrics, epochs_run=len(history), best_epoch=best_epoch)
    summary: dict[str, dict[str, float]] = {}
    for split, entry in metrics["splits"].items():
        for name, value in headline_accuracy(entry).items():
            summary.setdefault(name, {})[split] = value
    events.write("phase", phase="done", **summary)
    return summary


def _training_record(run_dir: Path, job: Job, history: list[dict]) -> None:
    """What a cancelled run keeps without evaluating: its history and training curves."""
    plot_training_curves(run_dir / PLOTS_DIR / "training_curves.png", history=history)
    metrics = {"labels": job.labels, "splits": {}, "counts": {}, "history": history, "breakdowns": {}}
    (run_dir / METRICS_FILE).write_text(json.dumps(metrics, indent=2, default=json_default))


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
    lines += ["", "## Configuration", "", "```yaml", config_text.rstrip(), "```", ""]
    (run_dir / CHECKPOINT_DIR / "README.md").write_text("\n".join(lines))


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m core.train RUN_DIR", file=sys.stderr)
        return 2
    result = run_training(argv[0])
    return 0 if result["status"] in ("succeeded", "cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
