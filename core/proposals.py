"""The quarantine-proposal frame every proposer returns (extreme-off, label issues): one row per
clip with a readable reason, so the queue and the review tab read them alike."""
from __future__ import annotations

import numpy as np
import pandas as pd

PROPOSAL_COLUMNS = ["clip_id", "method", "reason", "score", "rank"]


def proposal_frame(order: np.ndarray, clip_ids: np.ndarray, labels: np.ndarray, pred_probs: np.ndarray,
                   classes: list[str], *, method: str, why: str | list[str], score: np.ndarray) -> pd.DataFrame:
    """PROPOSAL_COLUMNS for the clips at `order` (rows of labels/pred_probs), rank 1 first;
    why: one reason prefix for all, or one per clip."""
    top = pred_probs[order].argmax(axis=1)
    whys = [why] * len(order) if isinstance(why, str) else why
    reasons = [f"{w}: labelled {classes[labels[i]]} (p {pred_probs[i, labels[i]]:.2f}), "
               f"model says {classes[t]} (p {pred_probs[i, t]:.2f})" for w, i, t in zip(whys, order, top)]
    return pd.DataFrame({"clip_id": clip_ids[order].astype("int64"), "method": method, "reason": reasons,
                         "score": np.asarray(score, dtype=float), "rank": np.arange(1, len(order) + 1)},
                        columns=PROPOSAL_COLUMNS)

