"""How precisely a set of clips measures accuracy (B4): the 95% interval of one model's accuracy.

Two views of the same number, reported side by side:
- Wilson: the Wilson score interval of k right out of n (scipy), which treats every clip as an
  independent draw;
- by group: a percentile bootstrap that resamples whole source groups (speakers, recordings).
  Clips of one speaker tend to be right or wrong together, so many clips from few speakers say
  less than their count suggests; with many groups the two intervals agree, with few the group
  one is the honest width. This is why an expanded test set asks for many groups, not many clips.
Widths are in accuracy units (0.10 = ten points); narrower = the set tells models apart better.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import binomtest

CONFIDENCE = 0.95
BOOTSTRAP_DRAWS = 2000


def accuracy_interval(correct: Sequence[bool], groups: Sequence[str], *, draws: int = BOOTSTRAP_DRAWS,
                      seed: int = 0) -> dict[str, Any]:
    """correct: one bool per clip (prediction == label); groups: each clip's source group.
    Returns n, groups, accuracy, wilson [low, high], wilson_width, by_group [low, high] and
    by_group_width (None with fewer than 2 groups). ValueError for no clips or unequal lengths."""
    correct = np.asarray(correct, dtype=bool)
    if len(correct) == 0:
        raise ValueError("correct: needs at least one clip")
    if len(groups) != len(correct):
        raise ValueError(f"groups: expected one per clip ({len(correct)}), got {len(groups)}")
    if draws < 1:
        raise ValueError(f"draws: {draws} must be at least 1")
    n, k = len(correct), int(correct.sum())
    wilson = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    per_group = pd.DataFrame({"group": list(groups), "correct": correct}).groupby("group")["correct"].agg(["sum", "count"])
    by_group = None
    if len(per_group) >= 2:
        picks = np.random.default_rng(seed).integers(0, len(per_group), size=(draws, len(per_group)))
        right, clips = per_group["sum"].to_numpy()[picks].sum(1), per_group["count"].to_numpy()[picks].sum(1)
        tail = (1 - CONFIDENCE) / 2 * 100
        by_group = [float(v) for v in np.percentile(right / clips, [tail, 100 - tail])]
    return {"n": n, "groups": len(per_group), "accuracy": k / n, "wilson": [float(wilson.low), float(wilson.high)],
            "wilson_width": float(wilson.high - wilson.low), "by_group": by_group,
            "by_group_width": None if by_group is None else by_group[1] - by_group[0]}
