"""Resolving a near-duplicate candidate (issue 17), as decisions in the append-only log.

A candidate is a held-out clip queued with reason `near_duplicate` beside its partner, the most
similar clip of another split that the latest search found (store.duplicate_pairs). Three ways
out, each one decision on the candidate clip that also resolves its quarantine entry:
- move it to its partner's split and source group (a 'move' decision), so the two recordings
  sit together and no longer leak;
- exclude it (core.review.exclude);
- mark the pair "not a duplicate": a 'release' decision tagged not_duplicate whose note names
  the partner. A later search does not raise the same pair again while the decision stands
  (undo it and the pair comes back).
"""
from __future__ import annotations

import re
from typing import Any

from core.review import _check_fresh, exclude
from core.store import Store, StoreError

__all__ = ["NOT_DUPLICATE_TAG", "REASON", "exclude", "move_to_partner", "not_duplicate", "not_duplicate_pairs",
           "partner"]

REASON = "near_duplicate"
NOT_DUPLICATE_TAG = "not_duplicate"
_PARTNER_NOTE = "not a duplicate of clip {partner}"
_PARTNER_PATTERN = re.compile(r"not a duplicate of clip (\d+)")


def partner(store: Store, clip_id: int) -> dict[str, Any] | None:
    """The clip's partner in the latest search that paired it across splits: partner_id,
    similarity, run_id, and the partner's split and source group as they stand now; None when
    no search paired it with a clip of another split."""
    pairs = store.duplicate_pairs(clip_id=clip_id)
    pairs = pairs[pairs["split_a"] != pairs["split_b"]]
    if pairs.empty:
        return None
    latest = pairs[pairs["run_id"] == pairs["run_id"].max()].iloc[0]  # run ids sort by time; most similar first
    other = int(latest["clip_b"] if int(latest["clip_a"]) == clip_id else latest["clip_a"])
    state = store.clip_state(other)
    return {"partner_id": other, "similarity": float(latest["similarity"]), "run_id": latest["run_id"],
            "split": state["split"], "source_group": state["source_group"]}


def _required_partner(store: Store, clip_id: int) -> dict[str, Any]:
    found = partner(store, clip_id)
    if found is None:
        raise StoreError(f"clip {clip_id} has no near-duplicate partner in another split; run 'earmark duplicates' first")
    return found


def move_to_partner(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
                    seen_decision_id: int | None = None) -> int:
    """Move the clip into its partner's split and source group, and resolve its quarantine entry."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    found = _required_partner(store, clip_id)
    text = f"near-duplicate of clip {found['partner_id']}: moved to {found['split']} / {found['source_group']}"
    return store.record_decision(clip_id, annotator=annotator, action="move", set_split=found["split"],
                                 set_group=found["source_group"], set_quarantined=False,
                                 note=f"{text}; {note}" if note else text)


def not_duplicate(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
                  seen_decision_id: int | None = None) -> int:
    """Record that the clip and its partner are different recordings; resolves its quarantine entry."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    found = _required_partner(store, clip_id)
    text = _PARTNER_NOTE.format(partner=found["partner_id"])
    return store.record_decision(clip_id, annotator=annotator, action="release", tag=NOT_DUPLICATE_TAG,
                                 set_quarantined=False, note=f"{text}; {note}" if note else text)


def not_duplicate_pairs(store: Store) -> set[frozenset[int]]:
    """The pairs a person judged not duplicates, by decisions that still stand."""
    log = store.decisions()
    verdicts = log[(log["tag"] == NOT_DUPLICATE_TAG) & (log["action"] == "release") & ~log["undone"]]
    pairs = set()
    for clip_id, note in zip(verdicts["clip_id"], verdicts["note"].fillna("")):
        match = _PARTNER_PATTERN.search(note)
        if match:
            pairs.add(frozenset((int(clip_id), int(match.group(1)))))
    return pairs

