"""Ensembles (plan D5): a run that averages two or more finished runs' calibrated probabilities.

`prepare_ensemble` checks the members, freezes the session's manifest into a new run folder and
registers a run of kind "train" (model.name ensemble), so that everything downstream (audit,
comparison, gates, promotion, rollback) treats it like any trained model; `assemble` runs its
child (core/ensemble_child.py) and ingests it. The members must be finished classifiers with
the same classes; the audio LLM (its checkpoint holds adapters only) and ensembles themselves
cannot be members.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint, read_configs
from core.config import ConfigError, ExperimentConfig
from core.ensemble_child import EnsembleJob
from core.models.ensemble import ENSEMBLE, Member, ensemble_features
from core.run_folder import CONFIG_FILE, MANIFEST_FILE
from core.store import Store, StoreError
from pipelines.child_process import run_child
from pipelines.finetune import FinetuneResult, freeze_manifest, ingest, new_run_id

CHILD_MODULE = "core.ensemble_child"
NOT_MEMBERS = ("speech_llm", ENSEMBLE)  # adapters-only checkpoints; nesting adds nothing a flat ensemble lacks


@dataclasses.dataclass
class PreparedEnsemble:
    run_id: str
    run_dir: Path
    job: EnsembleJob
    dropped: int  # frozen clips whose label is none of the members' classes (they cannot be scored)

    def start_line(self) -> str:
        members = ", ".join(m["run_id"] for m in self.job.members)
        left_out = f"; {self.dropped} clips with labels outside these classes are left out" if self.dropped else ""
        return f"ensemble {self.run_id} of {members}: each member calibrated on val, probabilities averaged{left_out}"


def parse_members(text: str) -> tuple[list[str], list[float] | None]:
    """'r1,r2' or 'r1:2,r2:1' (run ids with optional weights) -> ids and weights (None = equal)."""
    ids, weights = [], []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        run_id, _, weight = item.partition(":")
        ids.append(run_id.strip())
        try:
            weights.append(float(weight) if weight else 1.0)
        except ValueError:
            raise ConfigError(f"members: weight {weight!r} of {run_id} is not a number (write RUN:WEIGHT, e.g. r1:2)") from None
    return ids, (weights if any(":" in part for part in text.split(",")) else None)


def prepare_ensemble(store: Store, *, members: Sequence[str], weights: Sequence[float] | None = None,
                     workers: int = 2) -> PreparedEnsemble:
    """Check the members, freeze the manifest, write the run folder, register the run. Raises
    ConfigError or StoreError with one line naming what is wrong, before anything is written."""
    members = list(dict.fromkeys(members))
    weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
    if len(members) < 2:
        raise ConfigError(f"members: an ensemble needs at least two different runs, got {members or 'none'}")
    if len(weights) != len(members) or not all(w > 0 for w in weights):
        raise ConfigError(f"weights: need one weight > 0 per member, got {weights} for {len(members)} members")
    folders = [_member_checkpoint(store, run_id) for run_id in members]
    labels = checkpoint_labels(folders[0])
    for run_id, folder in zip(members[1:], folders[1:]):
        if sorted(checkpoint_labels(folder)) != sorted(labels):
            raise ConfigError(f"members: {run_id} predicts {sorted(checkpoint_labels(folder))}, {members[0]} predicts "
                              f"{sorted(labels)}; members must share their classes")
    manifest, as_of = freeze_manifest(store)
    scorable = manifest["label"].isin(labels)
    manifest = manifest[scorable].reset_index(drop=True)
    if not (manifest["split"] == "val").any():
        raise StoreError("the session has no val clips with the members' classes: the members cannot be calibrated")
    config = _run_config(store, members, folders)
    run_id = new_run_id("train")
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    config.save(run_dir / CONFIG_FILE)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    job = EnsembleJob(run_id=run_id, labels=labels, cache_dir=str(Path(store.session_dir) / "cache"),
                      members=[{"run_id": m, "checkpoint": str(f), "weight": w} for m, f, w in zip(members, folders, weights)],
                      frozen_at_decision=as_of, evaluation=config.evaluation.to_dict(), workers=workers)
    job.save(run_dir)
    store.create_run(run_id, kind="train", preset=ENSEMBLE, config=config.to_dict(), parent_run_id=None,
                     manifest_decision_id=as_of, run_dir=run_dir)
    return PreparedEnsemble(run_id=run_id, run_dir=run_dir, job=job, dropped=int((~scorable).sum()))


def assemble(store: Store, *, members: Sequence[str], weights: Sequence[float] | None = None, progress: bool = True,
             on_event: Callable[[dict[str, Any]], None] | None = None) -> FinetuneResult:
    """The CLI's ensemble: prepare, run the child with a progress bar, ingest."""
    prepared = prepare_ensemble(store, members=members, weights=weights)
    return run_prepared(store, prepared, progress=progress, on_event=on_event)


def run_prepared(store: Store, prepared: PreparedEnsemble, *, progress: bool = True,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> FinetuneResult:
    """Run a prepared ensemble's child to the end and ingest it like a training run."""
    store.set_run_status(prepared.run_id, "running")
    run_child(prepared.run_dir, module=CHILD_MODULE, desc="ensemble: predicting", progress=progress, on_event=on_event)
    return FinetuneResult(run_id=prepared.run_id, run_dir=prepared.run_dir, result=ingest(store, prepared.run_id))


def _member_checkpoint(store: Store, run_id: str) -> Path:
    """A member's checkpoint folder, or StoreError/ConfigError saying why the run cannot be one."""
    run = store.run(run_id)
    if run["kind"] != "train" or run["status"] != "succeeded":
        raise StoreError(f"members: run {run_id} is a {run['status']} {run['kind']} run; members are finished training runs")
    folder = checkpoint_dir(run["run_dir"])
    if not has_checkpoint(folder):
        raise StoreError(f"members: run {run_id} has no checkpoint in {folder}")
    model_name = read_configs(folder)[0].name
    if model_name in NOT_MEMBERS:
        raise ConfigError(f"members: run {run_id} is model.name {model_name!r}; members are CNN or AST classifiers (the "
                          "audio LLM's checkpoint holds adapters only; an ensemble's members can be listed directly)")
    return folder


def _run_config(store: Store, members: Sequence[str], folders: Sequence[Path]) -> ExperimentConfig:
    """The first member's run config, with the ensemble's model and waveform features: its
    evaluation and gate sections then judge the ensemble as they judged that member."""
    descriptions = [Member(run_id=m, description=_description(f)) for m, f in zip(members, folders)]
    base = dict(store.run(members[0])["config"] or {})
    base.update(name=ENSEMBLE, model={"name": ENSEMBLE}, features=ensemble_features(descriptions).to_dict())
    return ExperimentConfig.from_dict(base)


def _description(folder: Path) -> dict[str, Any]:
    model_cfg, feature_cfg = read_configs(folder)
    return {"model": model_cfg.to_dict(), "features": feature_cfg.to_dict()}
