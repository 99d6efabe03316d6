"""Grouped cross-validation (B4) as a study: how well a recipe does on source groups (speakers,
recordings) it never heard, with the spread over folds and seeds, and the group it does worst on.

The session's usable clips of every split are pooled and cut into folds of whole source groups
(a clip without a group is a group of its own): k folds with the class shares kept as even as
the groups allow, or one fold per group (leave one group out: the speaker, for speech). Fold k
holds its groups out as test; val, which early stopping and the best epoch read, comes from the
other groups (k-fold: the next fold; leave one group out: a label-stratified fifth of the other
groups); the rest train. Leave one speaker out on a speech / non-speech session names the class
whose groups are the speakers (group_class="SPEECH"): one fold per group of that class, and the
groups of the other classes (non-speech sources) dealt evenly over the folds, so each fold's test
holds one speaker and a share of the non-speech clips (a test of speech alone would reward a model
that calls everything speech), and the worst group reported is the worst speaker. Each (fold, seed) is an ordinary training run from the preset's own
start, never from a session checkpoint: a model that has seen a held-out clip is no judge of it.
The folds are drawn once (with split_seed) and kept in the study's splits.parquet, so every
seed, and a resume, trains on the same folds. The study machinery (pipelines/study.py) runs,
stops, resumes and reports it.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from core.config import ConfigError
from core.store import Store
from core.study import DEFAULT_SEEDS, parse_seeds
from pipelines.crossval import assign_folds, clip_groups
from pipelines.finetune import SPLITS, freeze_manifest, plan_finetune, resplit_manifest
from pipelines.study import Study, StudyOutcome, Trial, check_parallel, create_study, execute

MIN_GROUPS = 3          # a held-out group, one to validate on, one to train on
VAL_SHARE_FOLDS = 5     # leave one group out: val is one of this many stratified parts of the other groups


def fold_name(k: int) -> str:
    return f"fold-{k + 1}"


def fold_splits(pool: pd.DataFrame, *, folds: int | None = None, leave_one_group_out: bool = False,
                group_class: str | None = None, seed: int = 0) -> pd.DataFrame:
    """Each clip's split in each fold: clip_id, group, left_out (the group is a fold's own
    held-out group), and a column per fold (fold-1, ...) of "train", "val" or "test". pool:
    clip_id, label, source_group. Give folds (k >= 3) or leave_one_group_out, optionally with
    group_class (see the module docstring). ConfigError in one line for fewer groups than folds,
    a leave one group out with fewer than 3 groups, or a group_class that is no label."""
    if leave_one_group_out == (folds is not None):
        raise ConfigError("folds: give a number of folds or leave_one_group_out, not both or neither")
    if group_class is not None and not leave_one_group_out:
        raise ConfigError("group_class: applies to leave_one_group_out only")
    groups = np.asarray(clip_groups(pool), dtype=object)
    labels = pool["label"].to_numpy()
    table = pd.DataFrame({"clip_id": pool["clip_id"].to_numpy(), "group": groups})
    if leave_one_group_out:
        names, dealt = _left_out_groups(labels, groups, group_class=group_class, seed=seed)
        table["left_out"] = np.isin(groups, names)
        for k, name in enumerate(names):
            held = (groups == name) | (dealt == k)
            val = _validation(labels, groups, among=~held, seed=seed + k)
            table[fold_name(k)] = np.where(held, "test", np.where(val, "val", "train"))
        return table
    table["left_out"] = True
    fold_of = assign_folds(labels=labels.tolist(), groups=groups.tolist(), n_folds=folds, seed=seed)
    for k in range(folds):
        table[fold_name(k)] = np.where(fold_of == k, "test", np.where(fold_of == (k + 1) % folds, "val", "train"))
    return table


def _left_out_groups(labels: np.ndarray, groups: np.ndarray, *, group_class: str | None,
                     seed: int) -> tuple[list[str], np.ndarray]:
    """The groups left out one per fold (all, or those whose clips are mostly group_class), and
    for every clip the fold its group is dealt to as extra test clips (-1: none): the other
    groups, shuffled by seed within each majority label and dealt round the folds."""
    if group_class is not None and group_class not in set(labels):
        raise ConfigError(f"group_class: {group_class!r} is not a label of the usable clips; allowed: "
                          f"{', '.join(sorted(set(labels)))}")
    majority = pd.DataFrame({"group": groups, "label": labels}).groupby("group")["label"].agg(lambda s: s.mode().iloc[0])
    names = sorted(majority.index if group_class is None else majority.index[majority == group_class])
    if len(names) < MIN_GROUPS:
        whose = "" if group_class is None else f" of class {group_class!r}"
        raise ConfigError(f"leave_one_group_out: needs at least {MIN_GROUPS} source groups{whose} (one held out, one to "
                          f"validate on, one to train on); the session's usable clips have {len(names)}")
    rng = np.random.default_rng(seed)
    others = majority.drop(names)
    order = [g for label in sorted(set(others)) for g in rng.permutation(sorted(others.index[others == label]))]
    fold_of = {group: i % len(names) for i, group in enumerate(order)}
    return names, np.array([fold_of.get(g, -1) for g in groups])


def _validation(labels: np.ndarray, groups: np.ndarray, *, among: np.ndarray, seed: int) -> np.ndarray:
    """A mask of the clips (of `among`) whose groups validate: one label-stratified part of
    min(VAL_SHARE_FOLDS, groups) of the groups among, at least one group."""
    rows = np.flatnonzero(among)
    parts = min(VAL_SHARE_FOLDS, len(set(groups[rows])))
    splitter = StratifiedGroupKFold(n_splits=parts, shuffle=True, random_state=seed)
    with warnings.catch_warnings():  # a class with fewer clips than parts only makes the shares uneven
        warnings.simplefilter("ignore", UserWarning)
        _, picked = next(splitter.split(np.zeros(len(rows)), labels[rows], groups[rows]))
    mask = np.zeros(len(labels), dtype=bool)
    mask[rows[picked]] = True
    return mask


def run_crossval(store: Store, *, preset: str, folds: int | None = None, leave_one_group_out: bool = False,
                 group_class: str | None = None, seeds: Sequence[int] | str = DEFAULT_SEEDS,
                 overrides: Sequence[str] | None = None, split_seed: int = 0, parallel: int = 1, keep_models: bool = True, progress: bool = True,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> StudyOutcome:
    """Cross-validate the preset by source group: one run per (fold, seed), then per-fold and
    over-fold accuracy, balanced accuracy and F1-macro on the held-out groups, and the worst
    group. Every fold is checked against the preset before any run exists (ConfigError, one
    line). keep_models=False deletes the fold models' checkpoints when the study ends."""
    parallel = check_parallel(parallel)
    study = plan_crossval(store, preset=preset, folds=folds, leave_one_group_out=leave_one_group_out,
                          group_class=group_class, seeds=seeds, overrides=overrides, split_seed=split_seed)
    return execute(store, study, parallel=parallel, keep_models=keep_models, progress=progress, on_event=on_event)


def plan_crossval(store: Store, *, preset: str, folds: int | None = None, leave_one_group_out: bool = False,
                  group_class: str | None = None, seeds: Sequence[int] | str = DEFAULT_SEEDS, overrides: Sequence[str] | None = None,
                  split_seed: int = 0) -> Study:
    """Cut the folds, check each against the preset, then write the study's folder and register
    its run (status queued), every trial pending; nothing trains yet (execute does). ConfigError
    in one line (fewer groups than folds, a leave one group out of too few groups, a bad key or
    value) before anything exists."""
    seeds = parse_seeds(seeds)
    overrides = list(overrides or [])
    manifest, as_of = freeze_manifest(store, quarantined_in=SPLITS)
    pool = manifest[manifest["parent_clip_id"].isna()]
    if pool.empty:
        raise ConfigError("the session has no usable labelled clips to cross-validate")
    table = fold_splits(pool, folds=folds, leave_one_group_out=leave_one_group_out, group_class=group_class,
                        seed=split_seed)
    names = [c for c in table.columns if c.startswith("fold-")]
    for name in names:
        try:
            plan_finetune(store, preset=preset, overrides=overrides, init_from="none",
                          manifest=resplit_manifest(manifest, table.set_index("clip_id")[name]))
        except ConfigError as exc:
            raise ConfigError(f"{name}: {exc}") from None
    trials = [Trial(name=name, seed=seed, overrides=[], fold=name) for name in names for seed in seeds]
    settings = {"folds": len(names), "leave_one_group_out": leave_one_group_out, "group_class": group_class,
                "groups": int(table["group"].nunique()), "split_seed": split_seed}
    return create_study(store, study="crossval", preset=preset, overrides=overrides, init_from="none",
                        metric="accuracy", seeds=seeds, as_of=as_of, trials=trials, settings=settings, splits=table)


def pool_groups(store: Store) -> int:
    """How many source groups the clips a cross-validation would pool hold now (the Train tab's
    default number of folds follows it)."""
    manifest, _ = freeze_manifest(store, quarantined_in=SPLITS)
    return len(set(clip_groups(manifest[manifest["parent_clip_id"].isna()])))
