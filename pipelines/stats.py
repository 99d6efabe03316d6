"""Session statistics for `earmark stats` and the Data tab: what is in the session right now."""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

from core.store import Store

DURATION_EDGES_S = (0, 1, 2, 3, 5, 7.5, 10, 15, 30, 60, np.inf)


@dataclasses.dataclass
class SessionStats:
    datasets: list[str]
    clips: int
    usable: int
    unreadable: pd.DataFrame          # dataset, path, reason
    per_class_split: pd.DataFrame     # current label x split counts (usable clips)
    duration_histogram: pd.Series     # bin name -> clips
    decisions: int
    excluded: int
    quarantined: int
    relabelled: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "datasets": self.datasets, "clips": self.clips, "usable": self.usable,
            "unreadable": self.unreadable.to_dict(orient="records"),
            "per_class_split": {label: {k: int(v) for k, v in row.items()} for label, row in self.per_class_split.iterrows()},
            "duration_histogram": {k: int(v) for k, v in self.duration_histogram.items()},
            "decisions": self.decisions, "excluded": self.excluded, "quarantined": self.quarantined,
            "relabelled": self.relabelled,
        }

    def lines(self, *, unreadable: bool = False) -> list[str]:
        out = [f"datasets: {', '.join(self.datasets) or 'none'}",
               f"clips: {self.clips} ({self.usable} usable, {len(self.unreadable)} unreadable)",
               f"decisions: {self.decisions}   relabelled: {self.relabelled}   excluded: {self.excluded}   "
               f"quarantined: {self.quarantined}", "", "clips per class and split (current labels):"]
        out += ["  " + line for line in self.per_class_split.to_string().splitlines()] if not self.per_class_split.empty else ["  (none)"]
        out += ["", "durations:"] + [f"  {name:>10}: {n}" for name, n in self.duration_histogram.items() if n]
        if len(self.unreadable):
            shown = self.unreadable if unreadable else self.unreadable.head(5)
            out += ["", "unreadable files:"] + [f"  {r.dataset}/{r.path}: {r.reason}" for r in shown.itertuples()]
            if len(shown) < len(self.unreadable):
                out.append(f"  ... {len(self.unreadable) - len(shown)} more (--unreadable lists all)")
        return out


def duration_bin_names(edges: tuple[float, ...] = DURATION_EDGES_S) -> list[str]:
    return [f"{lo:g}-{hi:g} s" if np.isfinite(hi) else f">= {lo:g} s" for lo, hi in zip(edges[:-1], edges[1:])]


def session_stats(store: Store) -> SessionStats:
    labels = store.labels()
    datasets = store.datasets()
    names = dict(zip(datasets.id, datasets.name))
    usable = labels[labels.status == "ok"]
    per_class_split = (usable.groupby(["label", "split"]).size().unstack(fill_value=0)
                       .reindex(columns=[c for c in ("train", "val", "test") if c in set(usable.split)]))
    if not per_class_split.empty:
        per_class_split["total"] = per_class_split.sum(axis=1)
    bins = pd.cut(usable.duration_s.astype(float), bins=list(DURATION_EDGES_S), labels=duration_bin_names(), right=False)
    bad = labels[labels.status != "ok"]
    clips = store.clips(status="unreadable")[["dataset", "path", "reason"]] if len(bad) else pd.DataFrame(columns=["dataset", "path", "reason"])
    return SessionStats(
        datasets=[names[i] for i in sorted(names)], clips=len(labels), usable=len(usable), unreadable=clips,
        per_class_split=per_class_split, duration_histogram=bins.value_counts(sort=False),
        decisions=store.decision_count(),
        excluded=int(usable.excluded.sum()), quarantined=int(usable.quarantined.sum()),
        relabelled=int((usable.label != usable.original_label).sum()),
    )
