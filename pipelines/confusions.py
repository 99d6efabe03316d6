"""A run's confusion matrix with the clips behind each cell, and its per-class metrics against
production: what the Confusions tab shows, computed here so the UI stays a thin view.

Rows are the label each clip had when the run was trained (its frozen manifest), columns the
class the run predicted. A clip is "stale" when the decision log has moved on since the run:
its current label differs from the one the run saw, or it has been excluded since. A cell with
stale clips no longer describes the current labels, so the tab marks it.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from core.store import Store

SPLITS = ("test", "val", "train", "all")
# Per-class metrics shown, in order: (name in the store, column title). Higher is better for all.
CLASS_METRICS = (("precision", "precision"), ("recall", "recall"), ("f1", "F1"), ("average_precision", "AP"),
                 ("accuracy", "accuracy"), ("support", "support"))
OVERALL_METRICS = (("accuracy", "accuracy"), ("f1_macro", "F1 macro"), ("mAP", "mAP"))
CELL_COLUMNS = ["clip_id", "file", "label at run", "label now", "predicted", "confidence", "stale"]


@dataclasses.dataclass
class Confusion:
    run_id: str
    split: str
    labels: list[str]
    counts: pd.DataFrame         # C x C clips; index = true (label at run time), columns = predicted
    stale: pd.DataFrame          # C x C clips whose label changed (or that were excluded) since the run
    clips: pd.DataFrame          # one row per prediction: clip_id, path, label, current_label, predicted, confidence, stale

    @property
    def normalized(self) -> pd.DataFrame:
        """Share of each true class (rows sum to 1; an absent class is all 0)."""
        totals = self.counts.sum(axis=1).replace(0, np.nan)
        return self.counts.div(totals, axis=0).fillna(0.0)

    def cell(self, true_label: str, predicted: str) -> pd.DataFrame:
        """The clips in one cell (CELL_COLUMNS), most confident first."""
        for name, value in (("true_label", true_label), ("predicted", predicted)):
            if value not in self.labels:
                raise ValueError(f"{name}: {value!r} is not a class of run {self.run_id}; classes: {', '.join(self.labels)}")
        rows = self.clips[(self.clips.label == true_label) & (self.clips.predicted == predicted)]
        rows = rows.sort_values(["confidence", "clip_id"], ascending=[False, True])
        return pd.DataFrame({"clip_id": rows.clip_id.astype("int64"), "file": rows.path, "label at run": rows.label,
                             "label now": rows.current_label, "predicted": rows.predicted,
                             "confidence": rows.confidence.astype(float).round(3),
                             "stale": rows.stale.map({True: "relabelled since run", False: ""})},
                            columns=CELL_COLUMNS).reset_index(drop=True)


def confusion(store: Store, run_id: str, *, split: str = "test") -> Confusion:
    """The run's confusion over one split ("all" for every prediction), with stale marks from the log."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    predictions = store.predictions(run_id)
    if predictions.empty:
        raise ValueError(f"run {run_id} has no predictions (it failed, or has not finished); pick another run")
    labels = sorted(set(predictions.label.dropna()) | set(predictions.predicted.dropna()))
    rows = predictions if split == "all" else predictions[predictions.split == split]
    now = store.labels().set_index("clip_id")
    current = rows.clip_id.map(now["label"])
    excluded = rows.clip_id.map(now["excluded"]).fillna(False).astype(bool)
    stale = (current != rows.label).fillna(True).astype(bool) | excluded
    clips = pd.DataFrame({"clip_id": rows.clip_id.astype("int64"), "path": rows.clip_id.map(now["path"]),
                          "label": rows.label, "current_label": current.where(~excluded, "(excluded)"),
                          "predicted": rows.predicted, "confidence": rows.confidence, "stale": stale.to_numpy()})
    counts = pd.crosstab(clips.label, clips.predicted).reindex(index=labels, columns=labels, fill_value=0)
    stale_counts = (pd.crosstab(clips.label, clips.predicted, values=clips.stale.astype(int), aggfunc="sum")
                    .reindex(index=labels, columns=labels).fillna(0).astype(int)) if len(clips) else counts * 0
    for frame in (counts, stale_counts):
        frame.index.name, frame.columns.name = "true", "predicted"
    return Confusion(run_id=run_id, split=split, labels=labels, counts=counts.astype(int), stale=stale_counts,
                     clips=clips.reset_index(drop=True))


def class_metrics(store: Store, run_id: str, *, split: str, baseline_run_id: str | None) -> pd.DataFrame:
    """Per-class metrics of the run on a split (given labels), one row per class, with a
    'Δ <metric>' column per metric (run - baseline) when a different baseline run is given.
    Empty when the run recorded no metrics for the split (e.g. "all")."""
    run = _class_frame(store, run_id, split)
    if run.empty or not baseline_run_id or baseline_run_id == run_id:
        return run.reset_index()
    baseline = _class_frame(store, baseline_run_id, split).reindex(index=run.index)
    for _, title in CLASS_METRICS:
        if title != "support":
            run[f"Δ {title}"] = (run[title] - baseline[title]).round(3)
    ordered = [c for _, title in CLASS_METRICS for c in (title, f"Δ {title}") if c in run.columns]
    return run[ordered].reset_index()


def overall_metrics(store: Store, run_id: str, *, split: str,
                    baseline_run_id: str | None) -> dict[str, tuple[float | None, float | None]]:
    """{title: (value, delta against the baseline or None)} for accuracy, F1 macro and mAP."""
    def values(run: str) -> dict[str, float]:
        frame = store.run_metrics(run, split=split)
        frame = frame[frame.class_label.isna()]
        return dict(zip(frame.name, frame.value))
    mine = values(run_id)
    base = values(baseline_run_id) if baseline_run_id and baseline_run_id != run_id else {}
    out = {}
    for name, title in OVERALL_METRICS:
        value = mine.get(name)
        delta = None if value is None or base.get(name) is None else value - base[name]
        out[title] = (value, delta)
    return out


def _class_frame(store: Store, run_id: str, split: str) -> pd.DataFrame:
    frame = store.run_metrics(run_id, split=split)
    names = dict(CLASS_METRICS)
    frame = frame[frame.class_label.notna() & frame.name.isin(list(names))]
    if frame.empty:
        return pd.DataFrame(columns=[title for _, title in CLASS_METRICS], index=pd.Index([], name="class"))
    table = frame.pivot(index="class_label", columns="name", values="value").rename(columns=names)
    table.index.name, table.columns.name = "class", None
    table = table.reindex(columns=[title for _, title in CLASS_METRICS]).astype(float).round(3)
    table["support"] = table["support"].astype("Int64")
    return table
