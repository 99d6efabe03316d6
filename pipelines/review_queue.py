"""The clips worth a listen, as one table the Review tab (and the CLI) can filter and page.

Sources: the quarantine queue (sorted by audit score), clips a run misclassifies against their
current labels (most confident first), clips a run is unsure about (least confident first), and
the inbox's uncertain queue (unlabelled clips by rank, pipelines/inbox.py; its class filter
is the predicted class). Predictions come from the chosen run, by default production, else the
newest run; the uncertain queue's from the scoring that ranked it.
"""
from __future__ import annotations

from typing import Literal

import pandas as pd

from core.store import Store
from pipelines.inbox import uncertain_queue

SOURCES = ("quarantine", "misclassified", "low_confidence", "uncertain")
STATUSES = ("open", "resolved", "all")
QUEUE_COLUMNS = ["clip_id", "file", "given", "label", "predicted", "confidence", "reason", "score", "status", "last_annotator"]
LOW_CONFIDENCE = 0.6


def default_run(store: Store) -> str | None:
    """Production if promoted, else the newest run that has predictions."""
    production = store.production_run()
    if production:
        return production
    runs = store.runs()
    runs = runs[runs.status.isin(["succeeded", "cancelled"])]
    for run_id in runs.id:
        if not store.predictions(run_id).empty:
            return run_id
    return None


def build_queue(store: Store, *, source: Literal["quarantine", "misclassified", "low_confidence", "uncertain"] = "quarantine",
                run_id: str | None = None, label: str | None = None, reason: str | None = None,
                status: Literal["open", "resolved", "all"] = "open", annotator: str | None = None,
                split: str | None = None) -> pd.DataFrame:
    """The queue with QUEUE_COLUMNS, filtered; empty (with the columns) when nothing matches."""
    if source not in SOURCES:
        raise ValueError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    if source == "uncertain":
        queue = uncertain_queue(store)
        return _filtered(queue[queue.predicted == label] if label else queue, reason=reason, status=status,
                         annotator=annotator, split=split)
    predictions = _predictions(store, run_id)
    if source == "quarantine":
        queue = store.quarantine_queue(include_resolved=True)
        queue = queue.assign(file=queue.path, given=queue.original_label,
                             status=queue.quarantined.map({True: "open", False: "resolved"}))
        queue = queue.merge(predictions, on="clip_id", how="left")
    else:
        state = store.labels()
        state = state[(state.status == "ok") & ~state.excluded]
        queue = state.merge(predictions, on="clip_id", how="inner")
        if source == "misclassified":
            queue = queue[queue.predicted != queue.label].sort_values("confidence", ascending=False)
            queue["reason"] = "predicted " + queue.predicted + " (" + queue.confidence.round(2).astype(str) + ")"
        else:
            queue = queue[queue.confidence < LOW_CONFIDENCE].sort_values("confidence")
            queue["reason"] = "low confidence " + queue.confidence.round(2).astype(str)
        decided = store.decisions()
        decided = decided[(decided.annotator != "audit") & ~decided.undone & (decided.action != "undo")]
        last = decided.groupby("clip_id").annotator.first()
        queue = queue.assign(file=queue.path, given=queue.original_label, score=queue.confidence,
                             last_annotator=queue.clip_id.map(last),
                             status=queue.clip_id.isin(last.index).map({True: "resolved", False: "open"}))
    if label:
        queue = queue[(queue.label == label) | (queue.given == label)]
    return _filtered(queue, reason=reason, status=status, annotator=annotator, split=split)


def _filtered(queue: pd.DataFrame, *, reason: str | None, status: str, annotator: str | None,
              split: str | None) -> pd.DataFrame:
    """The filters every source shares, then QUEUE_COLUMNS."""
    if reason:
        queue = queue[queue.reason.astype(str).str.contains(reason, case=False, regex=False)]
    if status != "all":
        queue = queue[queue.status == status]
    if annotator:
        queue = queue[queue.last_annotator == annotator]
    if split:
        queue = queue[queue.split == split]
    return queue.reindex(columns=QUEUE_COLUMNS).reset_index(drop=True)


def _predictions(store: Store, run_id: str | None) -> pd.DataFrame:
    run_id = run_id or default_run(store)
    if run_id is None:
        return pd.DataFrame(columns=["clip_id", "predicted", "confidence"])
    return store.predictions(run_id)[["clip_id", "predicted", "confidence"]]


def review_counts(store: Store) -> dict[str, int]:
    """Reviewed = quarantined clips a human has decided; remaining = still open."""
    queue = store.quarantine_queue(include_resolved=True)
    return {"open": int(queue.quarantined.sum()), "reviewed": int((queue.human_decisions.fillna(0) > 0).sum()),
            "total": len(queue)}


def decided_since(store: Store, clip_ids: list[int], *, since_id: int, viewer: str | None = None) -> int:
    """How many of clip_ids a person decided after decision since_id (e.g. since a queue was
    loaded), by a decision that still stands, or the viewer answered blind (others' blind answers
    stay unseen): undone ones, undos, notes and quarantine requests do not count, nor do the
    audit's proposals."""
    log = store.decisions(since_id=since_id)
    decided = log[(log.annotator != "audit") & ~log.undone & ~log.action.isin(["undo", "note", "quarantine"])]
    answered = store.annotations(annotator=viewer) if viewer else store.annotations().head(0)
    answered = answered[(answered.id > since_id) & ~answered.withdrawn]
    return int(pd.Index(clip_ids, dtype="int64").isin(set(decided.clip_id) | set(answered.clip_id)).sum())
