"""One split's metrics on every clip, and apart on the clips not in quarantine (A1).

Training runs and audits both report a split this way. The headline ("given") counts every
clip with its current label, open quarantine included, so quarantining a model's errors can
never raise the number a gate reads; the quarantine-free view ("unquarantined") is reported
beside it until the queue is reviewed, with the share of the split in quarantine.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from core.evaluate import classification_report

UNQUARANTINED = "unquarantined"  # the basis name of the quarantine-free report


def split_reports(*, y: np.ndarray, probs: np.ndarray, labels: Sequence[str], quarantined: np.ndarray,
                  true_labels: pd.Series | None = None) -> dict[str, Any]:
    """{"given": every clip, "true": every clip whose true label is known (synthetic data only,
    never shown to annotators), "unquarantined": the clips not in quarantine (absent when all
    are)}; y are class indices into labels, quarantined a boolean mask of the same rows."""
    labels = list(labels)
    quarantined = np.asarray(quarantined, dtype=bool)
    entry = {"given": classification_report(y_true=y, probs=probs, labels=labels)}
    if true_labels is not None:
        true_y = pd.Series(np.asarray(true_labels, dtype=object)).map({l: i for i, l in enumerate(labels)})
        known = true_y.notna().to_numpy()
        if known.any():
            entry["true"] = classification_report(y_true=true_y[known].astype(int).to_numpy(), probs=probs[known],
                                                  labels=labels)
    if (~quarantined).any():
        entry[UNQUARANTINED] = classification_report(y_true=y[~quarantined], probs=probs[~quarantined], labels=labels)
    return entry


def quarantine_counts(quarantined: np.ndarray) -> dict[str, Any]:
    """How many of a split's scored clips are in open quarantine, and their share."""
    quarantined = np.asarray(quarantined, dtype=bool)
    return {"quarantined": int(quarantined.sum()),
            "quarantined_share": float(quarantined.mean()) if len(quarantined) else 0.0}


def headline_accuracy(entry: dict[str, Any]) -> dict[str, float]:
    """A split's accuracies for summaries: every clip (given labels), the true labels where
    known, and without the quarantined clips."""
    names = {"given": "accuracy", "true": "accuracy_true", UNQUARANTINED: "accuracy_unquarantined"}
    return {name: entry[basis]["accuracy"] for basis, name in names.items() if basis in entry}
