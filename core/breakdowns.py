"""Metrics broken down by clip metadata: SNR, duration bin, source, any column a dataset brings.

A model can look fine on average and still fail on quiet clips, short clips or one recorder;
a breakdown shows where. A run's manifest carries each clip's `duration_s`, its `dataset`, and
every metadata key its dataset brought as a `meta.<key>` column (pipelines/finetune.py leaves
out answer keys such as the demo's true labels). This module decides how each column groups
the clips, once over the whole manifest so every split uses the same groups:

- a numeric column named in `EvaluationConfig.breakdown_bins` is cut at its cut points
  (duration in s and SNR in dB by default);
- another numeric column is grouped by value when it has few values; with many, whole numbers
  are taken for an identifier (UrbanSound8K's fsID) and skipped, other numbers are cut at their
  quartiles (rounded to two significant digits, so the bin names read well);
- a text column is grouped by value unless it has more than `breakdown_max_groups` values
  (a recording id per clip says nothing per group);
- a clip without a value is in the group "(none)" (the demo's clips without background have
  no SNR).
A column that puts every clip in one group, or that mirrors the label one to one (ESC-50's
class id: the per-class metrics already say it), is skipped; `skipped` gives the reason.

`breakdown_report` then scores any subset of the rows (one split) with `core.evaluate.breakdown`.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.config import EvaluationConfig
from core.evaluate import bin_names, bin_values, breakdown

METADATA_PREFIX = "meta."
BUILT_IN_COLUMNS = ("duration_s", "dataset")
MISSING_GROUP = "(none)"
QUARTILES = (0.25, 0.5, 0.75)


@dataclasses.dataclass(frozen=True)
class Grouping:
    """How one metadata column groups the manifest's clips."""
    column: str
    unit: str
    how: str                # "bins" (configured cuts), "quartiles" or "values"
    groups: np.ndarray      # one group name per manifest row
    order: list[str]        # every group name, in reading order


@dataclasses.dataclass(frozen=True)
class BreakdownPlan:
    groupings: list[Grouping]
    skipped: dict[str, str]  # column -> why it is not broken down

    def report(self, rows: np.ndarray, *, y_true: np.ndarray, y_pred: np.ndarray,
               labels: Sequence[str]) -> dict[str, dict[str, Any]]:
        """{column: {unit, how, groups: {group: {n, accuracy, f1_macro}}}} for the manifest rows
        `rows` (positions), whose true and predicted class ids are y_true / y_pred."""
        return {g.column: {"unit": g.unit, "how": g.how,
                           "groups": breakdown(y_true=y_true, y_pred=y_pred, groups=g.groups[rows], labels=labels,
                                               order=g.order)}
                for g in self.groupings}


def describe(column: str, breakdown: dict[str, Any]) -> str:
    """One readable line: 'snr_db: 0-5 dB 0.333 (n=6), 5-10 dB 0.812 (n=16), ...'."""
    return f"{column}: " + ", ".join(f"{group} {values['accuracy']:.3f} (n={values['n']})"
                                     for group, values in breakdown["groups"].items())


def metadata_columns(manifest: pd.DataFrame) -> dict[str, str]:
    """Column name as people read it -> the manifest's column holding it."""
    columns = {name: name for name in BUILT_IN_COLUMNS if name in manifest.columns}
    for column in manifest.columns:
        if column.startswith(METADATA_PREFIX):
            columns.setdefault(column[len(METADATA_PREFIX):], column)
    return columns


def plan_breakdowns(manifest: pd.DataFrame, config: EvaluationConfig) -> BreakdownPlan:
    """Decide the groups of every wanted column over the whole manifest."""
    available = metadata_columns(manifest)
    bins = {b.column: b for b in config.breakdown_bins}
    groupings, skipped = [], {}
    for name in config.breakdown_columns or list(available):
        if name not in available:
            skipped[name] = "no such metadata column on these clips"
            continue
        grouping = _grouping(name, manifest[available[name]], bins.get(name), config.breakdown_max_groups)
        if not isinstance(grouping, str) and "label" in manifest.columns and _mirrors(grouping.groups, manifest["label"]):
            grouping = "mirrors the label one to one (the per-class metrics already show it)"
        if isinstance(grouping, str):
            skipped[name] = grouping
        else:
            groupings.append(grouping)
    return BreakdownPlan(groupings, skipped)


def _grouping(name: str, values: pd.Series, bins, max_groups: int) -> Grouping | str:
    present = values.notna().to_numpy()
    if not present.any():
        return "no clip has a value"
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    known = values[present]
    if numeric and bins is not None:
        how, unit, edges = "bins", bins.unit, [-math.inf, *bins.cuts, math.inf]
    elif numeric and known.nunique() > max_groups:
        if np.all(np.mod(known.to_numpy(dtype=float), 1) == 0):
            return (f"{known.nunique()} distinct whole numbers: looks like an identifier (give it cuts in "
                    "evaluation.breakdown_bins to bin it)")
        how, unit, edges = "quartiles", "", _quartile_edges(known.to_numpy(dtype=float))
    else:
        how, unit, edges = "values", "", None
    if edges is not None:
        names, order = bin_values(known.to_numpy(dtype=float), edges=edges, unit=unit), bin_names(edges=edges, unit=unit)
    else:
        if known.nunique() > max_groups:
            return f"{known.nunique()} distinct values, more than evaluation.breakdown_max_groups ({max_groups})"
        distinct = sorted(known.unique()) if numeric else sorted(map(str, known.unique()))
        text = _value_names(known) if numeric else known.astype(str)
        names, order = list(text), (_value_names(pd.Series(distinct)) if numeric else distinct)
    groups = np.full(len(values), MISSING_GROUP, dtype=object)
    groups[present] = names
    order = [g for g in order if g in set(names)] + ([MISSING_GROUP] if not present.all() else [])
    if len(order) < 2:
        return f"every clip is in one group ({order[0]})"
    return Grouping(column=name, unit=unit, how=how, groups=groups, order=order)


def _mirrors(groups: np.ndarray, labels: pd.Series) -> bool:
    pairs = pd.DataFrame({"group": groups, "label": labels.to_numpy()})
    return bool(pairs.groupby("group").label.nunique().eq(1).all() and pairs.groupby("label").group.nunique().eq(1).all())


def _quartile_edges(values: np.ndarray) -> list[float]:
    cuts = sorted({float(f"{q:.2g}") for q in np.quantile(values, QUARTILES)})
    return [-math.inf, *cuts, math.inf]


def _value_names(values: pd.Series) -> list[str]:
    return [f"{v:g}" for v in values.astype(float)]
