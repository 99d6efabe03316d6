"""K-fold cross-validated probabilities for the label-issue ranking (writer side).

Each fold is an ordinary training run folder (config.yaml, manifest.parquet, job.json) trained
by the one training loop, `python -m core.train`, as a child process: the clips of fold k are
held out (split "test"), fold k+1 (mod K) validates (early stopping, best epoch) and the rest
train. Folds are drawn per source group and stratified by label, so no recording is both
trained on and held out. Every fold model starts from the recipe, never from a session
checkpoint: a model that has seen a clip has memorised the very label the ranking questions.
The fold folders stay under the audit's run folder, so what each fold saw is on record.
Each fold model is calibrated before its held-out probabilities are used: a temperature fitted
on its own validation fold (core.model_trust.held_out_calibration).
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from core import train as trainer
from core.config import MIN_FOLDS, ConfigError, ExperimentConfig
from core.evaluate import apply_temperature
from core.feature_fit import fit_to_clips
from core.model_trust import held_out_calibration
from core.run_folder import CONFIG_FILE, MANIFEST_FILE, RESULT_FILE
from pipelines.child_process import cancel, follow, launch

FOLDS_DIR = "folds"


class CrossvalCancelled(Exception):
    """The person running the cross-validation stopped it."""


@dataclasses.dataclass
class CrossvalResult:
    """Out-of-fold probabilities (N, C) of the pool clips that could be read (clip_ids, in pool
    order), calibrated per fold, the fold that held each one out, each fold's result.json and
    its calibration (held_out_calibration's record)."""
    clip_ids: np.ndarray
    probs: np.ndarray
    folds: np.ndarray
    fold_results: list[dict[str, Any]]
    calibration: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def assign_folds(*, labels: Sequence[str], groups: Sequence[str], n_folds: int, seed: int) -> np.ndarray:
    """Fold number (0..n_folds-1) of each clip: whole source groups per fold, label shares kept
    as even as the groups allow (scikit-learn's StratifiedGroupKFold, shuffled by `seed`)."""
    labels, groups = np.asarray(labels, dtype=object), np.asarray(groups, dtype=object)
    if labels.shape != groups.shape or labels.ndim != 1:
        raise ValueError(f"labels and groups: expected two 1-D sequences of equal length, got {labels.shape} and {groups.shape}")
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or n_folds < MIN_FOLDS:
        raise ConfigError(f"folds: {n_folds!r} must be a whole number >= {MIN_FOLDS} (held-out, validation and training folds)")
    n_groups = len(set(groups))
    if n_groups < n_folds:
        raise ConfigError(f"folds: {n_folds} folds need at least {n_folds} source groups; the pool has {n_groups}")
    folds = np.empty(len(labels), dtype=np.int64)
    splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    for k, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
        folds[held_out] = k
    return folds


def cross_validate(pool: pd.DataFrame, *, folder: Path, config: ExperimentConfig, labels: list[str], cache_dir: str,
                   run_id: str, n_folds: int, seed: int, frozen_at_decision: int | None = None, workers: int = 2,
                   calibrate: bool = True, on_event: Callable[[int, dict[str, Any]], None] | None = None) -> CrossvalResult:
    """Train one model per fold on `pool` (clip_id, path, label, source_group, true_label,
    duration_s, sample_rate_hz) and return every clip's probabilities from the model that did not see it.

    calibrate: scale each fold's held-out probabilities by a temperature fitted on its
    validation fold. on_event(fold, event) receives each fold's training events (for progress). Ctrl-C cancels
    the running fold cleanly and raises CrossvalCancelled; a failed fold raises RuntimeError
    with its reason.
    """
    folds = assign_folds(labels=pool["label"].tolist(), groups=clip_groups(pool), n_folds=n_folds, seed=seed)
    # 'auto' features are fixed once from the whole pool (every clip trains in some fold): one
    # length for all folds, so they share one feature cache.
    config = dataclasses.replace(config, features=fit_to_clips(config.features, pool).features)
    fold_dirs = [_write_fold(pool, folds, k, n_folds=n_folds, folder=Path(folder), config=config, labels=labels,
                             cache_dir=cache_dir, run_id=run_id, frozen_at_decision=frozen_at_decision, workers=workers)
                 for k in range(n_folds)]
    probs = np.full((len(pool), len(labels)), np.nan, dtype=np.float32)
    position = pd.Series(np.arange(len(pool)), index=pool["clip_id"].to_numpy())
    results, calibration = [], []
    for k, fold_dir in enumerate(fold_dirs):
        result = _train_fold(fold_dir, lambda event, k=k: on_event(k, event) if on_event else None)
        if result["status"] != "succeeded":
            raise RuntimeError(f"cross-validation fold {k + 1} of {n_folds} {result['status']}: {result.get('error')}")
        predictions = pd.read_parquet(fold_dir / trainer.PREDICTIONS_FILE)
        held_out, val = predictions[predictions["split"] == "test"], predictions[predictions["split"] == "val"]
        calibration.append(held_out_calibration(labels=val["label"].map(labels.index).to_numpy(dtype=np.int64),
                                                pred_probs=_stacked(val, len(labels)), enabled=calibrate))
        probs[position[held_out["clip_id"]].to_numpy()] = apply_temperature(
            probs=_stacked(held_out, len(labels)), temperature=calibration[-1]["temperature"])
        results.append(result)
    kept = ~np.isnan(probs).any(axis=1)  # unreadable clips are left out of training and prediction alike
    return CrossvalResult(clip_ids=pool["clip_id"].to_numpy()[kept], probs=probs[kept], folds=folds[kept],
                          fold_results=results, calibration=calibration)


def _stacked(predictions: pd.DataFrame, n_classes: int) -> np.ndarray:
    """(N, C) probabilities of a predictions frame (N may be 0)."""
    return np.stack(predictions["probs"].to_numpy()) if len(predictions) else np.zeros((0, n_classes))


def clip_groups(pool: pd.DataFrame) -> list[str]:
    """A clip without a source group is a group of its own."""
    return [g if isinstance(g, str) and g not in ("", "None", "nan") else f"clip-{c}"
            for g, c in zip(pool["source_group"], pool["clip_id"])]


def _write_fold(pool: pd.DataFrame, folds: np.ndarray, k: int, *, n_folds: int, folder: Path, config: ExperimentConfig,
                labels: list[str], cache_dir: str, run_id: str, frozen_at_decision: int | None, workers: int) -> Path:
    fold_dir = folder / FOLDS_DIR / f"fold-{k + 1}"
    fold_dir.mkdir(parents=True, exist_ok=True)
    split = np.where(folds == k, "test", np.where(folds == (k + 1) % n_folds, "val", "train"))
    manifest = pool.assign(split=split, hard=False).reindex(columns=list(trainer.MANIFEST_COLUMNS))
    manifest.to_parquet(fold_dir / MANIFEST_FILE)
    config.save(fold_dir / CONFIG_FILE)
    trainer.Job(run_id=f"{run_id}-fold{k + 1}", labels=labels, cache_dir=cache_dir, init_checkpoint=None,
                frozen_at_decision=frozen_at_decision, workers=workers).save(fold_dir)
    return fold_dir


def _train_fold(fold_dir: Path, on_event: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    process = launch(fold_dir, module="core.train")
    try:
        exit_code = follow(fold_dir, process, on_event=on_event)
    except KeyboardInterrupt:
        cancel(fold_dir, process)
        follow(fold_dir, process, on_event=on_event)
        raise CrossvalCancelled("cross-validation cancelled") from None
    result_file = fold_dir / RESULT_FILE
    if not result_file.exists():
        return {"status": "failed", "error": f"the fold's training process ended (exit code {exit_code}) without a result"}
    return json.loads(result_file.read_text())
