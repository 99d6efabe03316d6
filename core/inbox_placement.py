"""Where a labelled inbox clip joins the data: its split, chosen so source groups stay whole.

An inbox clip (imported into the `unlabelled` split) that gets a label is moved by a 'move'
decision recorded with the label (core/review.py), so the move is in the log, audited and
undoable like the label. The split:
- the split its source group already has (another clip of the recording or speaker, labelled
  earlier or imported labelled): a group is never in two splits, so evaluation stays leak-free;
- otherwise the inbox's assignment, chosen when the folder was added (dataset option
  inbox.assign): "train" (default: the clips were picked because the model is unsure of them,
  so they belong where it learns; in val or test they would tilt the gated numbers towards hard
  clips) or "grouped" (a seeded 60/20/20 draw per source group, so a large labelled inbox also
  grows the held-out splits).
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from core.store import UNLABELLED_SPLIT, Store

ASSIGNMENTS = ("train", "grouped")
LABELLED_SPLITS = ("train", "val", "test")
GROUPED_SHARES = (("train", 0.6), ("val", 0.8), ("test", 1.0))  # cumulative: 60/20/20


def check_assignment(assign: str) -> str:
    if assign not in ASSIGNMENTS:
        raise ValueError(f"assign: {assign!r} is not a split assignment; choose one of {', '.join(ASSIGNMENTS)}")
    return assign


def placement(store: Store, clip_id: int) -> dict[str, Any] | None:
    """The move for an inbox clip still in the unlabelled split: {set_split, set_group, note};
    None for any other clip (imported labelled, or moved already)."""
    state = store.clip_state(clip_id)
    if state["split"] != UNLABELLED_SPLIT:
        return None
    group = state["source_group"]
    peers = store.labels()
    peers = peers[(peers.source_group == group) & peers.split.isin(LABELLED_SPLITS) & (peers.clip_id != clip_id)]
    if len(peers):
        split = peers.split.mode().iloc[0]
        why = f"inbox clip labelled: joins its source group {group!r} in {split}"
    else:
        assign, seed = _assignment(store, int(state["dataset_id"]))
        split = "train" if assign == "train" else grouped_split(group, seed=seed)
        why = f"inbox clip labelled: source group {group!r} new, assigned to {split} ({assign})"
    return {"set_split": split, "set_group": group, "note": why}


def grouped_split(group: str, *, seed: int) -> str:
    """A split for a source group drawn 60/20/20 from a hash of (seed, group): the same group
    always lands in the same split, whenever its clips are labelled."""
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    return next(split for split, upto in GROUPED_SHARES if draw < upto)


def _assignment(store: Store, dataset_id: int) -> tuple[str, int]:
    """(assignment, seed) kept on the inbox's dataset when it was added."""
    datasets = store.datasets().set_index("id")
    options = json.loads(datasets.at[dataset_id, "options"] or "{}")
    return options.get("inbox", {}).get("assign", "train"), int(options.get("seed") or 0)
