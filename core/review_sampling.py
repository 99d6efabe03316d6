"""What a reviewer gets from a detector: precision and recall within a listening budget (to
measure a proposer on planted errors) and the random spot-check of relabelled clips (A8 step 3).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd


def review_curve(*, is_error_in_order: Sequence[bool], n_errors: int, budgets: Sequence[int]) -> list[dict[str, Any]]:
    """Precision and recall when a reviewer listens to the first `budget` proposals.

    is_error_in_order: for each proposal in review order, whether it really is a label error
    (known for planted errors). n_errors: how many errors exist in the pool (recall's
    denominator). A list shorter than the budget is reviewed whole. Returns one dict per
    budget: {budget, reviewed, found, precision, recall}; precision = found / reviewed (None
    when nothing was reviewed), recall = found / n_errors; higher is better for both.
    """
    hits = np.asarray(is_error_in_order, dtype=bool)
    if hits.ndim != 1:
        raise ValueError(f"is_error_in_order: expected a 1-D sequence of booleans, got shape {hits.shape}")
    if not isinstance(n_errors, (int, np.integer)) or n_errors < max(int(hits.sum()), 1):
        raise ValueError(f"n_errors: {n_errors!r} must be a whole number >= 1 and >= the errors in the list ({int(hits.sum())})")
    budgets = list(budgets)
    if not budgets or not all(isinstance(b, (int, np.integer)) and b >= 1 for b in budgets):
        raise ValueError(f"budgets: {budgets!r} must be whole numbers >= 1")
    found_by = np.concatenate([[0], np.cumsum(hits)])
    curve = []
    for budget in budgets:
        reviewed = min(int(budget), len(hits))
        found = int(found_by[reviewed])
        curve.append({"budget": int(budget), "reviewed": reviewed, "found": found,
                      "precision": found / reviewed if reviewed else None, "recall": found / int(n_errors)})
    return curve


def sample_spot_check(*, relabelled: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """n clips drawn without replacement from `relabelled` (one row per relabelled clip), in a
    random order, for a second listen; all of them when there are fewer. Seeded by `rng`."""
    if not isinstance(relabelled, pd.DataFrame) or "clip_id" not in relabelled.columns:
        raise ValueError("relabelled: expected a DataFrame with a clip_id column, one row per relabelled clip")
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n: {n!r} must be a whole number >= 1")
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng: expected a numpy Generator (np.random.default_rng(seed)), got {type(rng).__name__}")
    picked = rng.choice(len(relabelled), size=min(int(n), len(relabelled)), replace=False)
    return relabelled.iloc[picked].reset_index(drop=True)

