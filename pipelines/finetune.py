"""Fine-tune jobs, writer side: freeze a manifest, launch the trainer as a child, follow it, ingest.

The session's writer (the CLI process, or the workbench server) calls these; the child
(`python -m core.train RUN_DIR`, or `accelerate launch ... -m core.train RUN_DIR` for several
processes) never opens the store. A crashed or cancelled child leaves the session intact; its
run is marked failed/cancelled with the reason, and `resume` continues it in the same run folder
from its last finished epoch (`earmark train --resume RUN`).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import secrets
from collections.abc import Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core import train as trainer
from core.checkpoint import checkpoint_dir, has_checkpoint, read_configs
from core.config import AUTO, ConfigError, ExperimentConfig, load_preset
from core.models import ASSEMBLED_MODELS, available_models
from core.models.speech_llm import check_base
from core.store import UNLABELLED_SPLIT, Store, StoreError
from core.run_folder import (CANCEL_FILE, CONFIG_FILE, EVENTS_FILE, LOG_FILE, MANIFEST_FILE, METRICS_FILE,
                             PREDICTIONS_FILE, RESULT_FILE)
from core.aux_heads import describe_terms
from core.breakdowns import METADATA_PREFIX
from pipelines.augment_copies import AUGMENT_METADATA_KEY, applied_names
from pipelines.demo_synth import ANSWER_KEY_COLUMNS
from pipelines.child_process import cancel, follow, launch
from pipelines.searched_prompt import with_searched_prompt

@dataclasses.dataclass
class PreparedRun:
    run_id: str
    run_dir: Path
    config: ExperimentConfig
    job: trainer.Job
    manifest: pd.DataFrame
    start: str | None = None     # what the weights start from ("production run X"); None = the preset's own start
    inherited: list[str] = dataclasses.field(default_factory=list)  # "key preset value -> start model value"
    resumed: dict[str, Any] | None = None  # a resumed run: where its saved state is (core.train.saved_progress)
    events_offset: int = 0       # where to follow events.jsonl from: a resumed run's earlier lines are history
    prompt_line: str | None = None  # the audio LLM: which prompt it asks with (pipelines/searched_prompt.py)

    def start_line(self) -> str:
        """One line for the person who launched it: where the weights come from, what was inherited."""
        if self.resumed is not None:
            return (f"continues run {self.run_id} from its saved state after epoch {self.resumed['epochs_done']} of "
                    f"{self.resumed['epochs']} (step {self.resumed['step']}), with the config and manifest it started with")
        prompt = f"; {self.prompt_line}" if self.prompt_line else ""
        if self.start is None:
            return f"starts from scratch (the preset's own start){prompt}"
        if not self.inherited:
            return f"starts from {self.start}, whose architecture and features match the preset{prompt}"
        return f"starts from {self.start} and keeps its architecture and features: {'; '.join(self.inherited)}{prompt}"


def new_run_id(kind: str) -> str:
    """Sortable and readable: 20261122-143005-train-3fa2."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{kind}-{secrets.token_hex(2)}"


# A training run never learns from a quarantined clip, but scores the held-out ones as labelled
# (core/split_report.py): quarantine must not flatter its numbers.
TRAINING_QUARANTINE_SPLITS = ("val", "test")


def freeze_manifest(store: Store, *, as_of: int | None = None,
                    quarantined_in: Collection[str] = TRAINING_QUARANTINE_SPLITS,
                    unsplit: Collection[int] = ()) -> tuple[pd.DataFrame, int]:
    """The training manifest as of a decision id: usable, non-excluded clips with their current
    labels, absolute paths, and whether each is a 'hard' example (A7: relabelled since import,
    or misclassified by the production model). Derived clips (augmented copies) come with their
    parent and applied augmentations, and only in the training split: they are never evaluated.
    Quarantined clips are kept only in the splits quarantined_in (audits pass every split), with
    the `quarantined` column saying which they are. Each clip's duration, dataset and metadata
    columns (`meta.<key>`) come along for breakdowns (core/breakdowns.py); duration and source
    sample rate also fix 'auto' features (core/feature_fit.py). unsplit: clip ids kept even
    without a split (split None; an audited clip set's held-out members), quarantined or not.
    Inbox clips still in the unlabelled split never come, whatever their label."""
    as_of = store.last_decision_id() if as_of is None else as_of
    state = store.labels(as_of=as_of)
    unsplit_kept = state.split.isna() & state.clip_id.isin(list(unsplit))
    keep_quarantined = state.split.isin(list(quarantined_in)) | unsplit_kept
    usable = state[(state.status == "ok") & ~state.excluded & (keep_quarantined | ~state.quarantined)
                   & state.label.notna() & (state.split.notna() | unsplit_kept) & (state.split != UNLABELLED_SPLIT)
                   & (state.parent_clip_id.isna() | (state.split == "train"))]
    clips = store.clips().set_index("id")
    roots = store.dataset_roots()
    source_clip = usable.parent_clip_id.fillna(usable.clip_id).astype("int64")  # a copy counts as its parent's dataset
    manifest = pd.DataFrame({
        "clip_id": usable.clip_id.astype("int64"),
        "path": [str(roots[d] / p) for d, p in zip(usable.dataset_id, usable.path)],
        "label": usable.label.astype(str),
        "original_label": usable.original_label.astype(str),
        "split": [split if isinstance(split, str) else None for split in usable.split],
        "source_group": usable.source_group.astype(str),
        "true_label": [_true_label(clips.at[c, "metadata"]) for c in usable.clip_id],
        "parent_clip_id": usable.parent_clip_id.astype("Int64"),
        "augmentations": [applied_names(clips.at[c, "metadata"]) for c in usable.clip_id],
        "duration_s": clips.loc[usable.clip_id, "duration_s"].astype(float).to_numpy(),
        "sample_rate_hz": clips.loc[usable.clip_id, "sample_rate_hz"].astype(float).to_numpy(),  # the source's (auto f_max)
        "dataset": clips.loc[source_clip, "dataset"].astype(str).to_numpy(),
    }).reset_index(drop=True)
    manifest = pd.concat([manifest, metadata_frame(clips.loc[usable.clip_id, "metadata"])], axis=1)
    hard = manifest.label != manifest.original_label
    production = store.production_run()
    if production:
        previous = store.predictions(production).set_index("clip_id")["predicted"]
        hard |= manifest.clip_id.map(previous).fillna(manifest.label).ne(manifest.label).to_numpy()
    manifest["hard"] = hard.to_numpy()
    manifest["quarantined"] = usable.quarantined.astype(bool).to_numpy()
    return manifest, as_of


# Metadata that is not about the sound: an answer key (scoring only) and a copy's augmentation record.
WITHHELD_METADATA = frozenset({*ANSWER_KEY_COLUMNS, AUGMENT_METADATA_KEY})


def metadata_frame(metadata: pd.Series) -> pd.DataFrame:
    """Clip metadata (JSON text per clip) as `meta.<key>` columns: numeric where every value is
    a number, text otherwise; withheld keys left out."""
    records = [json.loads(m) if isinstance(m, str) else {} for m in metadata]
    keys = sorted({k for r in records for k in r} - WITHHELD_METADATA)
    columns = {}
    for key in keys:
        values = [r.get(key) for r in records]
        present = [v for v in values if v is not None]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in present):
            columns[METADATA_PREFIX + key] = np.array([np.nan if v is None else float(v) for v in values])
        else:
            columns[METADATA_PREFIX + key] = [None if v is None else str(v) for v in values]
    return pd.DataFrame(columns, index=range(len(records)))


def _true_label(metadata: Any) -> str | None:
    """Synthetic data (the demo) carries its true label for scoring; it is never shown in the UI."""
    if not isinstance(metadata, str):
        return None
    value = json.loads(metadata).get("true_label")
    return value if isinstance(value, str) and value else None


@dataclasses.dataclass
class FinetunePlan:
    """A fine-tune checked against the session but not yet written: what prepare_finetune
    registers. A study plans every trial first, so a bad one is refused before any trains."""
    config: ExperimentConfig
    labels: list[str]
    init_checkpoint: str | None
    start: str | None
    inherited: list[str]
    prompt_line: str | None


def plan_finetune(store: Store, *, preset: str, overrides: list[str] | None, init_from: str | None,
                  manifest: pd.DataFrame) -> FinetunePlan:
    """Resolve the preset against the session and a frozen manifest, refusing (ConfigError, one
    line naming the key) whatever could not train: no train or val clips, one class, classes the
    recipe names that the session lacks, a start model of another architecture, an audio-LLM
    base that is not there. Writes nothing. A relative noise_bank is a folder of this session."""
    config = load_preset(preset, overrides, session_dir=store.session_dir)
    splits = set(manifest.split)
    if not {"train", "val"} <= splits:
        raise ConfigError(f"the session needs usable clips in both train and val splits to fine-tune; it has {sorted(splits) or 'none'}")
    labels = sorted(manifest.label.unique())
    if len(labels) < 2:
        raise ConfigError(f"need at least 2 classes to train, the session has {labels}")
    for key in ("batch_composition", "oversample"):
        unknown = sorted(set(getattr(config.train, key) or {}) - set(labels))
        if unknown:
            raise ConfigError(f"train.{key}: classes {unknown} are not in the session's labels {labels}")
    contrastive = config.heads.contrastive
    unknown = [name for name in contrastive.classes() if name not in labels]
    if contrastive.enabled and unknown:
        raise ConfigError(f"heads.contrastive.pairs: class {unknown[0]!r} is not in the session's labels {labels}")
    if config.model.name not in available_models():
        raise ConfigError(f"model.name: {config.model.name!r} is not a registered model; available: "
                          f"{', '.join(available_models())}")
    init_checkpoint, start = resolve_init(store, init_from)
    inherited: list[str] = []
    if init_checkpoint is not None:
        config, inherited = inherit_architecture(config, init_checkpoint, start=start, explicit=overrides or [])
    if config.model.name == "speech_llm":
        try:
            check_base(config.model.pretrained)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    config, prompt_line = with_searched_prompt(store, config)
    return FinetunePlan(config=config, labels=labels, init_checkpoint=init_checkpoint, start=start,
                        inherited=inherited, prompt_line=prompt_line)


SPLITS = ("train", "val", "test")


def resplit_manifest(manifest: pd.DataFrame, splits: pd.Series) -> pd.DataFrame:
    """manifest (frozen with quarantined clips in every split) with each clip's split taken
    from `splits` (clip id -> "train", "val" or "test"; every original clip needs one). The
    training rules hold for the new splits: a quarantined clip never trains, and an augmented
    copy follows its parent and is kept only when that parent trains."""
    if not isinstance(splits, pd.Series):
        raise ValueError(f"splits: expected a pandas Series of split names indexed by clip id, got {type(splits).__name__}")
    unknown = sorted(set(splits.dropna()) - set(SPLITS))
    if unknown:
        raise ValueError(f"splits: {unknown[0]!r} is not a split; allowed: {', '.join(SPLITS)}")
    originals = manifest["parent_clip_id"].isna()
    missing = ~manifest.loc[originals, "clip_id"].isin(splits.dropna().index)
    if missing.any():
        raise ValueError(f"splits: {int(missing.sum())} of the manifest's clips have no split "
                         f"(e.g. clip {int(manifest.loc[originals, 'clip_id'][missing].iloc[0])})")
    owner = manifest["parent_clip_id"].fillna(manifest["clip_id"]).astype("int64")
    split = owner.map(splits).astype(str)
    keep = (split != "train") | ~manifest["quarantined"]
    keep &= originals | (split == "train")
    return manifest.assign(split=split.to_numpy())[keep.to_numpy()].reset_index(drop=True)


def prepare_finetune(store: Store, *, preset: str, overrides: list[str] | None = None,
                     init_from: str | None = "production", workers: int = 2, as_of: int | None = None,
                     splits: pd.Series | None = None) -> PreparedRun:
    """Resolve the preset, freeze the manifest and write the run folder; register the run.

    init_from: "production" (default: the production model, if any), "none" (the preset's
    own start), a run id, or a checkpoint folder. as_of: the decision id to freeze the labels
    at (default: now; a study freezes every trial at its start). splits: clip id -> split for
    this run instead of the session's (a cross-validation fold; see resplit_manifest). A
    relative noise_bank is a folder of this session; the run's config holds it absolute, and a
    missing bank is refused before anything is written.
    """
    if splits is None:
        manifest, as_of = freeze_manifest(store, as_of=as_of)
    else:  # quarantined clips frozen in every split: resplit_manifest keeps the ones that do not train
        manifest, as_of = freeze_manifest(store, as_of=as_of, quarantined_in=SPLITS)
        manifest = resplit_manifest(manifest, splits)
    plan = plan_finetune(store, preset=preset, overrides=overrides, init_from=init_from, manifest=manifest)
    run_id = new_run_id("train")
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    plan.config.save(run_dir / CONFIG_FILE)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    job = trainer.Job(run_id=run_id, labels=plan.labels, cache_dir=str(Path(store.session_dir) / "cache"),
                      init_checkpoint=plan.init_checkpoint, frozen_at_decision=as_of, workers=workers)
    job.save(run_dir)
    store.create_run(run_id, kind="train", preset=plan.config.name, config=plan.config.to_dict(),
                     parent_run_id=_run_of_checkpoint(plan.init_checkpoint), manifest_decision_id=as_of, run_dir=run_dir)
    return PreparedRun(run_id=run_id, run_dir=run_dir, config=plan.config, job=job, manifest=manifest, start=plan.start,
                       inherited=plan.inherited, prompt_line=plan.prompt_line)


def resolve_init(store: Store, init_from: str | None) -> tuple[str | None, str | None]:
    """The checkpoint folder to start from and how to name it to a person; (None, None) = scratch."""
    if init_from in (None, "none", ""):
        return None, None
    if init_from == "production":
        production = store.production_run()
        if production is None:
            return None, None
        candidate, start = checkpoint_dir(store.run(production)["run_dir"]), f"production run {production}"
    elif Path(init_from).is_dir():
        candidate, start = Path(init_from), f"checkpoint {init_from}"
    else:
        try:
            candidate, start = checkpoint_dir(store.run(init_from)["run_dir"]), f"run {init_from}"
        except StoreError:
            raise ConfigError(f"init_from: {init_from!r} is neither a checkpoint folder nor a run id of this session") from None
    if not has_checkpoint(candidate):
        raise ConfigError(f"init_from: {start} holds no checkpoint (none complete in {candidate})")
    return str(candidate), start


# A regulariser, not part of the weights' shapes or the input: a fine-tune may set its own.
NOT_ARCHITECTURE = frozenset({"model.head_dropout"})


def inherit_architecture(config: ExperimentConfig, checkpoint: str | Path, *, start: str,
                         explicit: list[str]) -> tuple[ExperimentConfig, list[str]]:
    """A fine-tune inherits the model it starts from: the checkpoint's model section and the
    features it was trained on (other features would be another input). Returns the config to
    run and one "key preset value -> start model value" line per inherited setting; a feature the
    preset leaves 'auto' takes the start model's value without a line (a fine-tune's clips fix nothing).

    Why refuse instead of copying what fits: a narrower CNN keeps a third of the start model's
    tensors and trains the rest from random, which is not a fine-tune. Raises ConfigError for
    another model family, or for a setting in `explicit` (dotted key=value overrides, e.g. the
    advanced YAML's) that contradicts the checkpoint.
    """
    saved_model, saved_features = read_configs(checkpoint)
    if saved_model.name in ASSEMBLED_MODELS:
        raise ConfigError(f"init_from: {start} is an {saved_model.name} of finished runs, which is never trained itself; "
                          f"start from one of its members (init_from RUN_ID, listed on its model card) or from scratch "
                          f"(init_from none, 'scratch' in the Train tab)")
    if saved_model.name != config.model.name:
        raise ConfigError(f"init_from: preset {config.name!r} builds model.name {config.model.name!r}, but {start} is "
                          f"model.name {saved_model.name!r}, so its weights cannot start this fine-tune; start from scratch "
                          f"(init_from none, 'scratch' in the Train tab) or choose a preset whose model.name is "
                          f"{saved_model.name!r}")
    ours = _leaves({"model": config.model.to_dict(), "features": config.features.to_dict()})
    theirs = _leaves({"model": saved_model.to_dict(), "features": saved_features.to_dict()})
    differing = [key for key in ours if key not in NOT_ARCHITECTURE and ours[key] != theirs[key]]
    changed = [key for key in differing if ours[key] != AUTO]
    set_keys = [item.split("=", 1)[0].strip() for item in explicit]
    conflicts = [key for key in changed if any(key == s or key.startswith(f"{s}.") for s in set_keys)]
    if conflicts:
        asked = ", ".join(f"{key}={json.dumps(ours[key])}" for key in conflicts)
        trained = ", ".join(f"{key}={json.dumps(theirs[key])}" for key in conflicts)
        raise ConfigError(f"init_from: this fine-tune sets {asked}, but {start} was trained with {trained}; a fine-tune "
                          f"keeps the architecture and features of the model it starts from. Leave "
                          f"{', '.join(conflicts)} unset to inherit them, or start from scratch (init_from none)")
    fine_tune = config.with_overrides({key: theirs[key] for key in differing})
    return fine_tune, [f"{key} {json.dumps(ours[key])} -> {json.dumps(theirs[key])}" for key in changed]


def _leaves(sections: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config dicts as dotted key -> value (lists stay values)."""
    out: dict[str, Any] = {}
    for key, value in sections.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def describe_transfer(start: str, init: dict[str, Any]) -> str:
    """'started from production run X: 26 of 26 tensors copied', from the trainer's init record."""
    fresh = init.get("kept_fresh") or []
    names = ", ".join(fresh[:4]) + (", ..." if len(fresh) > 4 else "")
    return (f"started from {start}: {init['copied']} of {init['total']} tensors copied"
            + (f"; {len(fresh)} freshly initialised ({names})" if fresh else ""))


def _run_of_checkpoint(folder: str | None) -> str | None:
    return None if folder is None else Path(folder).parent.name


def ingest(store: Store, run_id: str, *, exit_code: int | None = None) -> dict[str, Any]:
    """Read what the child left in the run folder into the store; mark the run's final status."""
    run_dir = Path(store.run(run_id)["run_dir"])
    result_file = run_dir / RESULT_FILE
    if not result_file.exists():
        log_tail = _tail(run_dir / LOG_FILE)
        result = {"status": "failed", "error": f"the training process ended (exit code {exit_code}) without a result; "
                                                f"last log lines: {log_tail}"}
    else:
        result = json.loads(result_file.read_text())
    metrics_file, predictions_file = run_dir / METRICS_FILE, run_dir / PREDICTIONS_FILE
    if metrics_file.exists():  # a cancelled run has its history but no evaluation (no predictions)
        metrics = json.loads(metrics_file.read_text())
        predictions = None
        if predictions_file.exists():
            predictions = pd.read_parquet(predictions_file)
            predictions["probs"] = predictions["probs"].map(lambda p: np.asarray(p, dtype=np.float32).tolist())
        store.ingest_run_results(run_id, history=_history_rows(metrics["history"]), metrics=metric_rows(metrics),
                                 predictions=predictions, breakdowns=breakdown_rows(metrics))
    store.set_run_status(run_id, result["status"], error=result.get("error"), summary=result)
    return result


def _history_rows(history: list[dict[str, Any]]) -> pd.DataFrame:
    rows = [{"step": int(r["step"]), "epoch": float(r["epoch"]), "name": k, "value": float(v)}
            for r in history for k, v in r.items() if k not in ("step", "epoch") and isinstance(v, (int, float)) and v is not None]
    return pd.DataFrame(rows, columns=["step", "epoch", "name", "value"])


def breakdown_rows(metrics: dict[str, Any]) -> pd.DataFrame:
    """metrics.json -> (split, column_name, group_name, position, n, accuracy, f1_macro)."""
    rows = [(split, column, group, position, values["n"], values["accuracy"], values["f1_macro"])
            for split, columns in metrics.get("breakdowns", {}).items()
            for column, breakdown in columns.items()
            for position, (group, values) in enumerate(breakdown["groups"].items())]
    return pd.DataFrame(rows, columns=["split", "column_name", "group_name", "position", "n", "accuracy", "f1_macro"])


def metric_rows(metrics: dict[str, Any]) -> pd.DataFrame:
    """metrics.json -> (split, name, class_label, value); names against true labels get 'true_',
    those without the quarantined clips 'unquarantined_'; a split's counts come as they are."""
    rows = [(split, name, None, value) for split, counts in metrics.get("counts", {}).items()
            for name, value in counts.items()]
    for split, entry in metrics["splits"].items():
        for basis, report in entry.items():
            prefix = "" if basis == "given" else f"{basis}_"
            for name in ("accuracy", "f1_macro", "f1_weighted", "mAP"):
                rows.append((split, prefix + name, None, report[name]))
            for name in ("ece", "mce"):
                rows.append((split, prefix + name, None, report["calibration"][name]))
            for k, value in report["top_k_accuracy"].items():
                rows.append((split, f"{prefix}top_{k}_accuracy", None, value))
            for label, per in report["per_class"].items():
                for name, value in per.items():
                    rows.append((split, prefix + name, label, value))
    frame = pd.DataFrame(rows, columns=["split", "name", "class_label", "value"])
    frame["value"] = pd.to_numeric(frame["value"], errors="coerce")
    return frame


def _tail(path: Path, lines: int = 5) -> str:
    if not path.exists():
        return "(no log)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


@dataclasses.dataclass
class FinetuneResult:
    run_id: str
    run_dir: Path
    result: dict[str, Any]

    @property
    def status(self) -> str:
        return self.result["status"]


def finetune(store: Store, *, preset: str, overrides: list[str] | None = None, init_from: str | None = "production",
             processes: int = 1, progress: bool = True) -> FinetuneResult:
    """The CLI's fine-tune: prepare, run the child with a progress bar, ingest. Ctrl-C cancels cleanly."""
    prepared = prepare_finetune(store, preset=preset, overrides=overrides, init_from=init_from)
    return train_and_ingest(store, prepared, processes=processes, progress=progress)


# A succeeded run has nothing left to do; a running or queued one is still followed by its writer.
RESUMABLE = ("cancelled", "failed")


def prepare_resume(store: Store, run_id: str) -> PreparedRun:
    """Check that run_id can continue and ready its folder: a cancelled or crashed training run
    with a saved state (at least one finished epoch). Raises StoreError, in one line saying why,
    for any other run. The run keeps its config, manifest and job; its stale result and cancel
    request are removed so the child starts clean."""
    run = store.run(run_id)
    if run["kind"] != "train":
        raise StoreError(f"run {run_id} is a {run['kind']} run; only a training run can be resumed")
    if run["status"] == "succeeded":
        raise StoreError(f"run {run_id} succeeded: there is nothing to resume (audit or promote it instead)")
    if run["status"] not in RESUMABLE:
        raise StoreError(f"run {run_id} is {run['status']}; only a cancelled or failed run can be resumed")
    run_dir = Path(run["run_dir"])
    progress = trainer.saved_progress(run_dir)
    if progress is None:
        raise StoreError(f"run {run_id} has no saved state to resume from (it stopped before its first epoch "
                         f"ended); start a new run with 'earmark train --preset {run['preset']}'")
    for stale in (RESULT_FILE, CANCEL_FILE):
        (run_dir / stale).unlink(missing_ok=True)
    events = run_dir / EVENTS_FILE
    return PreparedRun(run_id=run_id, run_dir=run_dir, config=ExperimentConfig.load(run_dir / CONFIG_FILE),
                       job=trainer.Job.load(run_dir), manifest=pd.read_parquet(run_dir / MANIFEST_FILE),
                       resumed=progress, events_offset=events.stat().st_size if events.exists() else 0)


def resume(store: Store, run_id: str, *, processes: int = 1, progress: bool = True) -> FinetuneResult:
    """Continue a cancelled or crashed run from its last finished epoch in its own folder, then
    ingest it like any run; it ends with the metrics an uninterrupted run of the same seed has.
    Ctrl-C cancels it cleanly again (and it can be resumed again)."""
    prepared = prepare_resume(store, run_id)
    return train_and_ingest(store, prepared, processes=processes, progress=progress)


def train_and_ingest(store: Store, prepared: PreparedRun, *, processes: int, progress: bool) -> FinetuneResult:
    """Run the trainer child on a prepared folder with a progress bar, then ingest what it left."""
    store.set_run_status(prepared.run_id, "running")
    process = launch(prepared.run_dir, module="core.train", processes=processes)
    bar = tqdm(total=None, desc=f"{prepared.run_id}", unit="step", disable=not progress)
    bar.write(prepared.start_line())

    def show(event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "start":
            bar.reset(total=event["total_steps"])
        elif kind == "step":
            bar.n = event["step"]
            bar.set_postfix(epoch=f"{event['epoch']:.2f}", loss=f"{event['loss']:.3f}", refresh=False)
            bar.refresh()
        elif kind == "epoch":
            bar.write(f"epoch {event['epoch']}: train loss {event['train_loss']:.4f}  val loss {event['val_loss']:.4f}  "
                      f"val acc {event['val_accuracy']:.4f}  val F1 {event['val_f1_macro'] or 0:.4f}"
                      + (f"  (true labels {event['val_accuracy_true']:.4f})" if "val_accuracy_true" in event else "")
                      + describe_terms(event) + ("  *best*" if event.get("improved") else ""))
        elif kind in ("warning", "info"):
            bar.write(f"{kind}: {event['message']}")
        elif kind == "error":
            bar.write(f"error: {event['message']}")

    follow_events = functools.partial(follow, prepared.run_dir, process, on_event=show, offset=prepared.events_offset)
    try:
        exit_code = follow_events()
    except KeyboardInterrupt:
        bar.write("cancelling: the run stops after its current step ...")
        cancel(prepared.run_dir, process)
        exit_code = follow_events()
    finally:
        bar.close()
    result = ingest(store, prepared.run_id, exit_code=exit_code)
    return FinetuneResult(run_id=prepared.run_id, run_dir=prepared.run_dir, result=result)
