"""Named clip sets (B4): clips evaluated together beside the train / val / test splits.

A split is where a clip belongs; a clip set is a named selection read next to the splits (the
expanded test set: many source groups x a few clips per class, none heard in training). A clip
keeps its split and may be in sets as well, so an audit's manifest lists, per clip, the audited
sets it is in (`clip_sets`), and every per-split number (metrics, breakdowns, gates) is computed
for a set by its name. Pure: the store records the sets (core/store.py), pipelines build them.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

SPLIT_NAMES = ("train", "val", "test")
CLIP_SETS_COLUMN = "clip_sets"  # an audit manifest's column: the audited sets each clip is in
_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def check_clip_set_name(name: str) -> str:
    """A clip set's name: lower-case letters, digits, _ and -, starting with a letter, at most 64
    characters, and not a split's name. ValueError in one line otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"clip set name {name!r}: use lower-case letters, digits, _ and -, starting with a letter "
                         "(at most 64 characters), e.g. test_expanded")
    if name in SPLIT_NAMES:
        raise ValueError(f"clip set name {name!r} is a split's name; choose another, e.g. {name}_expanded")
    return name


def members(frame: pd.DataFrame, name: str) -> np.ndarray:
    """Boolean mask of the rows in the split `name`, or in the clip set `name` (as the frame's
    clip_sets column lists them; no such column: no row is in a set)."""
    if name in SPLIT_NAMES:
        return (frame["split"] == name).to_numpy()
    if CLIP_SETS_COLUMN not in frame:
        return np.zeros(len(frame), dtype=bool)
    return np.array([name in list(names) for names in frame[CLIP_SETS_COLUMN]], dtype=bool)
