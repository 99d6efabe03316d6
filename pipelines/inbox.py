"""The inbox (A10 active learning): unlabelled audio in, the clips the model is least sure about out.

1. `add_to_inbox` registers a folder of unlabelled audio ("live traffic" recordings) as clips
   without a label in the `unlabelled` split. Files are probed like any import
   (pipelines/importing.py): an unreadable, empty, silent or odd-rate file (sampled below the
   session's labelled clips) is recorded with its reason, never half-made.
2. `score_inbox` has a model (default: production) predict every inbox clip still without a
   label, as a child job (core/inbox_child.py), then ranks them (core/uncertainty.py) on
   probabilities calibrated with a temperature fitted on the model's own validation clips. The
   top K form the uncertain queue, kept in the scoring run's summary.
3. A person labels queued clips in the Review tab (source "uncertain"); the label moves the clip
   to a split that keeps its source group whole (core/inbox_placement.py), so it trains from the
   next fine-tune on. Clips without a label never train and are never evaluated.
4. After a fine-tune, `rescore_after_training` ranks what is left with the new model
   (pipelines/finetune_audit_gates.py), so the next round asks about what it still doubts.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.checkpoint import checkpoint_dir, checkpoint_labels
from core.config import ConfigError
from core.evaluate import apply_temperature
from core.inbox_child import ScoreJob
from core.inbox_placement import check_assignment
from core.model_trust import held_out_calibration
from core.run_folder import MANIFEST_FILE, PREDICTIONS_FILE
from core.store import UNLABELLED_SPLIT, Store, StoreError
from core.uncertainty import InboxConfig, queue_size, rank_uncertain
from pipelines.audit import resolve_model_run
from pipelines.child_process import run_child
from pipelines.finetune import new_run_id
from pipelines.importing import UNLABELLED_LAYOUT, ImportSummary, discover_dataset, import_discovered

KIND = "inbox"           # the kind of a scoring run
MODULE = "core.inbox_child"
NO_LABEL = "(no label)"  # what the queue shows as an inbox clip's given label


# --- 1. adding ---------------------------------------------------------------------------------
def add_to_inbox(store: Store, folder: str | Path, *, name: str | None = None, group_pattern: str | None = None,
                 assign: str = "train", seed: int = 0, workers: int = 4, progress: bool = True) -> ImportSummary:
    """Register every audio file under folder as an unlabelled clip; idempotent (a file added
    before is counted, not added again). assign: where labelled clips of a new source group go
    (core/inbox_placement.py). Raises DatasetImportError or StoreError in one line before
    anything is written: no such folder, no audio in it, a labelled dataset of that name."""
    check_assignment(assign)
    folder = Path(folder).expanduser()
    found = discover_dataset(folder, layout=UNLABELLED_LAYOUT, name=name or f"inbox-{folder.resolve().name}",
                             group_pattern=group_pattern)
    same_name = store.datasets().query("name == @found.name")
    if len(same_name) and same_name.layout.iloc[0] != UNLABELLED_LAYOUT:
        raise StoreError(f"dataset {found.name!r} holds labelled clips; add the inbox under another name (--name)")
    return import_discovered(store, found, seed=seed, probe_mode="full", workers=workers, progress=progress,
                             split=UNLABELLED_SPLIT, min_sample_rate_hz=_lowest_labelled_rate(store),
                             options={"inbox": {"assign": assign}})


def _lowest_labelled_rate(store: Store) -> int | None:
    """The lowest source sample rate among the session's usable labelled clips (None: none yet)."""
    clips = store.clips(status="ok")
    rates = clips.loc[clips.split != UNLABELLED_SPLIT, "sample_rate_hz"].dropna()
    return int(rates.min()) if len(rates) else None


def inbox_clips(store: Store) -> pd.DataFrame:
    """Every inbox clip's current state (store.labels columns) plus `open`: readable, still
    without a label and not excluded, i.e. waiting to be scored and labelled."""
    imported = store.clips()
    inbox_ids = imported.loc[imported.split == UNLABELLED_SPLIT, "id"]
    state = store.labels()
    state = state[state.clip_id.isin(inbox_ids)].reset_index(drop=True)
    return state.assign(open=(state.status == "ok") & state.label.isna() & ~state.excluded.astype(bool))


# --- 2. scoring ----------------------------------------------------------------------------
@dataclasses.dataclass
class ScoreOutcome:
    """What one scoring did, for the CLI and the UI."""
    run_id: str
    model_run_id: str
    status: str
    error: str | None = None
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    scored: int = 0
    failed: int = 0
    k: int = 0
    k_reason: str = ""
    temperature: float = 1.0
    queue: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    def lines(self) -> list[str]:
        head = f"inbox scoring {self.run_id} with run {self.model_run_id}: {self.status}"
        if self.status != "succeeded":
            return [head + (f": {self.error}" if self.error else "")]
        interest = self.settings.get("class_of_interest")
        lines = [head, f"  {self.scored} unlabelled clips scored" + (f", {self.failed} unreadable" if self.failed else "")
                 + f"; ranked by {self.settings['method']}" + (f" among clips predicted {interest}" if interest else "")
                 + f" on probabilities calibrated at temperature {self.temperature:.2f}",
                 f"  uncertain queue: {self.k} clips ({self.k_reason})"]
        lines += [f"    {r.rank:>3}. clip {r.clip_id}: predicted {r.predicted} ({r.confidence:.2f}), score {r.score:.3f}"
                  for r in self.queue.head(5).itertuples()]
        if self.k > 5:
            lines.append(f"    ... and {self.k - 5} more: label them in the Review tab (queue 'uncertain')")
        return lines


def prepare_scoring(store: Store, *, run_id: str | None = None, settings: InboxConfig | None = None,
                    **options: Any) -> tuple[str, Path]:
    """Freeze the open inbox clips for a model (default: production) into a new run folder and
    register the run; returns (its id, its folder). options: InboxConfig fields (method, k,
    budget, class_of_interest), validated there. Refused in one line before anything is
    written: no model, no open clip, a class of interest the model does not know."""
    settings = InboxConfig.from_dict({**(settings or InboxConfig()).to_dict(), **options}, prefix="inbox.")
    model_run_id = resolve_model_run(store, run_id)
    model_dir = Path(store.run(model_run_id)["run_dir"])
    classes = checkpoint_labels(checkpoint_dir(model_dir))
    if settings.class_of_interest is not None and settings.class_of_interest not in classes:
        raise ConfigError(f"inbox.class_of_interest: {settings.class_of_interest!r} is not a class of run "
                          f"{model_run_id}; choose one of {', '.join(classes)}")
    as_of = store.last_decision_id()
    waiting = inbox_clips(store).query("open")
    if waiting.empty:
        raise StoreError("no unlabelled clips wait in the inbox: add a folder first ('earmark inbox add', or the "
                         "Data tab's inbox form)")
    roots = store.dataset_roots()
    manifest = pd.DataFrame({"clip_id": waiting.clip_id.astype("int64").to_numpy(),
                             "path": [str(roots[d] / p) for d, p in zip(waiting.dataset_id, waiting.path)],
                             "label": pd.Series([None] * len(waiting), dtype="string"),
                             "split": UNLABELLED_SPLIT})
    score_id = new_run_id(KIND)
    run_dir = Path(store.session_dir) / "runs" / score_id
    run_dir.mkdir(parents=True)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    job = ScoreJob(run_id=score_id, model_run_id=model_run_id, checkpoint=str(checkpoint_dir(model_dir)),
                   cache_dir=str(Path(store.session_dir) / "cache"), frozen_at_decision=as_of)
    job.save(run_dir)
    store.create_run(score_id, kind=KIND, preset=None, config={**dataclasses.asdict(job), "inbox": settings.to_dict()},
                     parent_run_id=model_run_id, manifest_decision_id=as_of, run_dir=run_dir)
    return score_id, run_dir


def ingest_scoring(store: Store, run_id: str, result: dict[str, Any]) -> ScoreOutcome:
    """Store the child's predictions, rank them, keep the top K as the queue (the run's
    summary), and mark the run's final status."""
    run = store.run(run_id)
    settings = InboxConfig.from_dict(run["config"]["inbox"], prefix="inbox.")
    outcome = ScoreOutcome(run_id=run_id, model_run_id=run["parent_run_id"], status=result["status"],
                           error=result.get("error"), settings=settings.to_dict())
    if result["status"] != "succeeded":
        store.set_run_status(run_id, result["status"], error=result.get("error"), summary=result)
        return outcome
    predictions = pd.read_parquet(Path(run["run_dir"]) / PREDICTIONS_FILE)
    classes = list(result["labels"])
    probs = np.stack(predictions["probs"].to_numpy()) if len(predictions) else np.zeros((0, len(classes)))
    outcome.temperature = _temperature(store, outcome.model_run_id, classes)
    calibrated = apply_temperature(probs=probs, temperature=outcome.temperature) if len(probs) else probs
    ranking = rank_uncertain(calibrated, classes=classes, method=settings.method,
                             class_of_interest=settings.class_of_interest)
    outcome.k, outcome.k_reason = queue_size(calibrated[ranking.position.to_numpy()], k=settings.k,
                                             budget=settings.budget)
    queue = ranking.head(outcome.k).assign(clip_id=lambda q: predictions.clip_id.to_numpy()[q.position])
    outcome.queue = queue.assign(confidence=probs[queue.position.to_numpy()].max(axis=1) if len(queue) else [])
    outcome.scored, outcome.failed = len(predictions), len(result.get("failed", []))
    predictions["probs"] = predictions["probs"].map(lambda p: np.asarray(p, dtype=np.float32).tolist())
    store.ingest_run_results(run_id, predictions=predictions)
    summary = {**result, "k": outcome.k, "k_reason": outcome.k_reason, "temperature": outcome.temperature,
               "scored": outcome.scored,
               "queue": [{"clip_id": int(r.clip_id), "rank": int(r.rank), "score": float(r.score)}
                         for r in outcome.queue.itertuples()]}
    store.set_run_status(run_id, "succeeded", summary=summary)
    return outcome


def _temperature(store: Store, model_run_id: str, classes: list[str]) -> float:
    """The temperature that calibrates the model on its own validation predictions (1.0 when
    it has too few: core.model_trust.held_out_calibration)."""
    val = store.predictions(model_run_id, split="val")
    index = {label: i for i, label in enumerate(classes)}
    val = val[val.label.isin(index)]
    labels = val.label.map(index).to_numpy(dtype=int)
    probs = np.stack(val.probs.to_numpy()) if len(val) else np.zeros((0, len(classes)))
    return float(held_out_calibration(labels=labels, pred_probs=probs, source="val")["temperature"])


def score_inbox(store: Store, *, run_id: str | None = None, progress: bool = True,
                on_event: Callable[[dict[str, Any]], None] | None = None, **options: Any) -> ScoreOutcome:
    """The CLI's scoring: prepare, run the child with a progress bar, ingest. Ctrl-C cancels it."""
    score_id, run_dir = prepare_scoring(store, run_id=run_id, **options)
    store.set_run_status(score_id, "running")
    result = run_child(run_dir, module=MODULE, desc="inbox: scoring", progress=progress, on_event=on_event)
    return ingest_scoring(store, score_id, result)


# --- 3. the queue ------------------------------------------------------------------------------
def latest_scoring(store: Store) -> dict[str, Any] | None:
    """The newest succeeded scoring run (store.run's dict), or None before the first."""
    runs = store.runs(kind=KIND)
    done = runs[runs.status == "succeeded"]
    return None if done.empty else store.run(done.id.iloc[0])


def uncertain_queue(store: Store) -> pd.DataFrame:
    """The newest scoring's queue in rank order, every clip with its state now: clip_id, file,
    given, label, predicted, confidence, reason, score, status (open = still without a label,
    resolved = labelled or excluded since), last_annotator, split."""
    scoring = latest_scoring(store)
    columns = ["clip_id", "file", "given", "label", "predicted", "confidence", "reason", "score", "status",
               "last_annotator", "split"]
    if scoring is None:
        return pd.DataFrame(columns=columns)
    queue = pd.DataFrame(scoring["summary"]["queue"], columns=["clip_id", "rank", "score"])
    method = scoring["config"]["inbox"]["method"]
    state = inbox_clips(store).set_index("clip_id")
    predictions = store.predictions(scoring["id"]).set_index("clip_id")
    queue = queue[queue.clip_id.isin(state.index)]
    ids = queue.clip_id.to_numpy()
    decided = store.decisions()
    decided = decided[~decided.undone & ~decided.action.isin(["undo", "note", "move"])]
    last = decided.groupby("clip_id").annotator.first()
    return pd.DataFrame({
        "clip_id": ids, "file": state.loc[ids, "path"].to_numpy(), "given": NO_LABEL,
        "label": state.loc[ids, "label"].fillna(NO_LABEL).to_numpy(),
        "predicted": predictions.loc[ids, "predicted"].to_numpy(),
        "confidence": predictions.loc[ids, "confidence"].to_numpy(),
        "reason": [f"uncertain #{rank}: {method} {score:.3f}" for rank, score in zip(queue["rank"], queue.score)],
        "score": queue.score.to_numpy(),
        "status": np.where(state.loc[ids, "open"].to_numpy(dtype=bool), "open", "resolved"),
        "last_annotator": pd.Series(ids).map(last).to_numpy(), "split": state.loc[ids, "split"].to_numpy(),
    }, columns=columns)


# --- 4. after a fine-tune ------------------------------------------------------------------------
def waiting_for_rescore(store: Store) -> bool:
    """Whether a new model should rank the inbox again: it was scored before (a person uses it)
    and clips are still waiting for a label."""
    return latest_scoring(store) is not None and bool(inbox_clips(store).open.any())


def rescore_after_training(store: Store, *, run_id: str, progress: bool = False,
                           on_event: Callable[[dict[str, Any]], None] | None = None) -> ScoreOutcome:
    """Rank the inbox again with a freshly trained run, with the settings of the last scoring
    (the model that learned from the labelled clips decides what to ask next). Call it when
    waiting_for_rescore says so."""
    previous = latest_scoring(store)
    return score_inbox(store, run_id=run_id, progress=progress, on_event=on_event, **previous["config"]["inbox"])


def scoring_summary(store: Store) -> str:
    """One line on the inbox for the Data tab and `earmark inbox status`."""
    clips = inbox_clips(store)
    if clips.empty:
        return "the inbox is empty: add a folder of unlabelled audio"
    scoring = latest_scoring(store)
    queue = uncertain_queue(store)
    line = (f"inbox: {len(clips)} clips, {int(clips.open.sum())} waiting for a label, "
            f"{int((clips.status != 'ok').sum())} unreadable, {int(clips.label.notna().sum())} labelled")
    if scoring is None:
        return line + "; not scored yet"
    return (line + f"; last scored by run {scoring['parent_run_id']} ({scoring['id']}): "
            f"{int((queue.status == 'open').sum())} of {len(queue)} queued clips still open")


def queue_json(queue: pd.DataFrame) -> str:
    """The queue as JSON records (the CLI's --json)."""
    return json.dumps(queue.to_dict(orient="records"), default=str)
