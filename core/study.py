"""Studies that are honest about variance (B3, B4): what a grid file asks for, which seeds, and
how the trials' numbers are summarised and ranked.

A study trains one run per (config, seed), or per (fold, seed) for cross-validation. One seed's
number is one draw: the summary of a config is the mean over its seeds with the sample standard
deviation and a 95% Student-t interval for the mean, so two configs whose intervals overlap are
not told apart by the table. Pure: no store, no training; pipelines/study.py runs the trials.

A grid file is YAML (or JSON) in one of two forms, with optional `fixed` overrides for all:

    grid:                          # full factorial: 3 x 2 = 6 configs
      train.lr: [5e-4, 1e-3, 2e-3]
      train.schedule: [cosine, linear]

    configs:                       # a named list (plan B3's six)
      - {name: r8-lr1e-4, set: {model.lora.rank: 8, train.lr: 1e-4}}
      - {name: r16-lr1e-4, set: {model.lora.rank: 16, train.lr: 1e-4}}

A mapping without these sections is read as the `grid` section itself. Keys are the dotted
preset keys `--set` takes; the pipeline checks every config against the preset before any trains.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from core.config import ConfigError, read_mapping

DEFAULT_SEEDS = (42, 123, 456)  # the plans' seeds
STUDY_METRICS = ("f1_macro", "accuracy", "balanced_accuracy")  # higher is better for each
EVAL_SPLITS = ("val", "test")  # configs are selected on val; test is reported beside it, never selected on
METRIC_COLUMNS = tuple(f"{split}_{name}" for split in EVAL_SPLITS for name in STUDY_METRICS)  # val_f1_macro, ...
SEED_KEY = "train.seed"
GRID_SECTIONS = ("grid", "configs", "fixed")
PRESET_CONFIG = "preset"  # the name of the one config of a study without a grid


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """One config of a study: a name and the dotted preset overrides that make it."""
    name: str
    overrides: dict[str, Any]

    def assignments(self) -> list[str]:
        """The overrides as `--set` items (values as JSON, which YAML reads back unchanged)."""
        return [f"{key}={json.dumps(value)}" for key, value in self.overrides.items()]


@dataclasses.dataclass(frozen=True)
class Grid:
    """The configs a study trains, in file order."""
    configs: tuple[StudyConfig, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"configs": [{"name": c.name, "set": c.overrides} for c in self.configs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Grid:
        """Read back what to_dict wrote (a study's saved config)."""
        return cls(tuple(StudyConfig(name=c["name"], overrides=dict(c["set"])) for c in data["configs"]))


def preset_only() -> Grid:
    """A study of the preset alone: seeds are its only variation (`earmark grid` without --grid)."""
    return Grid((StudyConfig(name=PRESET_CONFIG, overrides={}),))


def read_grid(path: str | Path) -> Grid:
    """The grid file at path (see the module docstring); ConfigError in one line naming what is wrong."""
    return parse_grid(read_mapping(path), source=str(path))


def parse_grid(data: Mapping[str, Any], *, source: str = "grid") -> Grid:
    """A grid from its parsed mapping. Refuses an empty list, a key given twice, two configs of
    one name and a named config without a `set` mapping; whether each key and value fits the
    preset is checked where the preset is known (pipelines/study.py)."""
    if not isinstance(data, Mapping) or not data:
        raise ConfigError(f"{source}: expected a mapping with a 'grid' or 'configs' section")
    sections = set(data) & set(GRID_SECTIONS)
    if not sections:
        data = {"grid": dict(data)}
    elif set(data) - set(GRID_SECTIONS):
        extra = sorted(set(data) - set(GRID_SECTIONS))[0]
        raise ConfigError(f"{source}: unknown section '{extra}'; allowed: {', '.join(GRID_SECTIONS)}")
    if ("grid" in data) == ("configs" in data):
        raise ConfigError(f"{source}: give either a 'grid' section (full factorial) or a 'configs' list (named configs), "
                          "not both or neither")
    fixed = _mapping(data.get("fixed") or {}, f"{source}: fixed")
    configs = _factorial(data["grid"], source) if "grid" in data else _named(data["configs"], source)
    for config in configs:
        twice = sorted(set(config.overrides) & set(fixed))
        if twice:
            raise ConfigError(f"{source}: key '{twice[0]}' is both fixed and varied; keep it in one place")
    return Grid(tuple(StudyConfig(name=c.name, overrides={**fixed, **c.overrides}) for c in configs))


def _factorial(section: Any, source: str) -> list[StudyConfig]:
    section = _mapping(section, f"{source}: grid")
    if not section:
        raise ConfigError(f"{source}: grid: needs at least one key with a list of values")
    for key, values in section.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{source}: grid key '{key}': expected a non-empty list of values, got {values!r}")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise ConfigError(f"{source}: grid key '{key}': a value is listed twice in {values!r}")
    keys = list(section)
    return [StudyConfig(name=" ".join(f"{k}={_shown(v)}" for k, v in zip(keys, combo)), overrides=dict(zip(keys, combo)))
            for combo in itertools.product(*(section[k] for k in keys))]


def _named(section: Any, source: str) -> list[StudyConfig]:
    if not isinstance(section, list) or not section:
        raise ConfigError(f"{source}: configs: expected a non-empty list of {{name, set}} entries")
    configs = []
    for i, entry in enumerate(section):
        entry = _mapping(entry, f"{source}: configs[{i}]")
        unknown = sorted(set(entry) - {"name", "set"})
        if unknown:
            raise ConfigError(f"{source}: configs[{i}]: unknown key '{unknown[0]}'; allowed: name, set "
                              "(put preset keys under set)")
        name = entry.get("name")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{source}: configs[{i}]: needs a name")
        configs.append(StudyConfig(name=name.strip(), overrides=_mapping(entry.get("set") or {}, f"{source}: {name}: set")))
    names = [c.name for c in configs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"{source}: configs: the name {twice[0]!r} is used twice")
    return configs


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: expected a mapping of dotted preset keys, got {value!r}")
    return {str(k): v for k, v in value.items()}


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def parse_seeds(seeds: str | Iterable[int]) -> list[int]:
    """Seeds from "42,123,456" or a list of ints: distinct whole numbers >= 0, at least one."""
    items = [s.strip() for s in seeds.split(",") if s.strip()] if isinstance(seeds, str) else list(seeds)
    values = []
    for item in items:
        whole = item.isdigit() if isinstance(item, str) else isinstance(item, int) and not isinstance(item, bool) and item >= 0
        if not whole:
            raise ConfigError(f"seeds: {item!r} is not a whole number >= 0; give comma-separated seeds, e.g. 42,123,456")
        values.append(int(item))
    if not values:
        raise ConfigError("seeds: give at least one seed, e.g. 42,123,456")
    if len(set(values)) != len(values):
        raise ConfigError(f"seeds: {values} repeats a seed; each seed trains once per config")
    return values


def check_seeds_not_in_grid(grid: Grid) -> None:
    """Seeds are the study's own axis: a config that sets train.seed would make two trials one run."""
    for config in grid.configs:
        if SEED_KEY in config.overrides:
            raise ConfigError(f"grid config {config.name!r}: sets {SEED_KEY}; seeds are given with --seeds, not in the grid")


def check_metric(metric: str) -> str:
    if metric not in STUDY_METRICS:
        raise ConfigError(f"metric: {metric!r} is not one of {', '.join(STUDY_METRICS)}")
    return metric


# --- summaries over seeds --------------------------------------------------------------------------

def spread(values: Sequence[float | None], *, bounds: tuple[float, float] = (0.0, 1.0)) -> dict[str, float | int | None]:
    """n, mean, std (sample, ddof 1) and the 95% Student-t interval of the mean of the values
    that are numbers; std and interval are None with fewer than 2, everything but n with none.
    The interval is cut to bounds (every study metric is a fraction: a mean cannot leave [0, 1])."""
    numbers = np.array([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    n = len(numbers)
    if n == 0:
        return {"n": 0, "mean": None, "std": None, "ci95_low": None, "ci95_high": None}
    mean = float(numbers.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": None, "ci95_low": None, "ci95_high": None}
    std = float(numbers.std(ddof=1))
    half = float(stats.t.ppf(0.975, n - 1) * std / math.sqrt(n))
    low, high = bounds
    return {"n": n, "mean": mean, "std": std, "ci95_low": max(mean - half, low), "ci95_high": min(mean + half, high)}


def summarise(trials: pd.DataFrame, *, by: str, columns: Sequence[str]) -> pd.DataFrame:
    """One row per value of `by` (in first-seen order): `trials` (how many), `succeeded`, and for
    each metric column its spread over the succeeded trials as <column>_mean, _std, _ci95_low,
    _ci95_high. trials needs `by`, `status` and the columns (None/NaN where a trial has no number)."""
    rows = []
    for key, part in trials.groupby(by, sort=False):
        done = part[part["status"] == "succeeded"]
        row: dict[str, Any] = {by: key, "trials": len(part), "succeeded": len(done)}
        for column in columns:
            summary = spread(done[column].tolist())
            row.update({f"{column}_{name}": summary[name] for name in ("mean", "std", "ci95_low", "ci95_high")})
        rows.append(row)
    return pd.DataFrame(rows)


def rank(summary: pd.DataFrame, *, column: str) -> pd.DataFrame:
    """summary sorted by column, highest first (every study metric is higher = better); rows
    without a number (every trial failed) last, in their order. Adds `rank` (1 = best, None = none)."""
    ordered = summary.assign(_missing=summary[column].isna()).sort_values(
        ["_missing", column], ascending=[True, False], kind="stable").drop(columns="_missing").reset_index(drop=True)
    ranks = [None if pd.isna(v) else i + 1 for i, v in enumerate(ordered[column])]
    ordered.insert(0, "rank", pd.Series(ranks, dtype=object))
    return ordered


def difference(baseline: Sequence[float | None], candidate: Sequence[float | None]) -> dict[str, float | None]:
    """candidate mean - baseline mean over their seeds, with the 95% Welch t-interval of that
    difference (the two sides' seeds are independent draws; their spreads may differ).
    within_noise: the interval holds 0 (None when a side has fewer than 2 numbers: one seed
    cannot tell a difference from seed noise)."""
    b, c = spread(baseline, bounds=(-math.inf, math.inf)), spread(candidate, bounds=(-math.inf, math.inf))
    if b["mean"] is None or c["mean"] is None:
        return {"delta": None, "ci95_low": None, "ci95_high": None, "within_noise": None}
    delta = c["mean"] - b["mean"]
    if b["std"] is None or c["std"] is None:
        return {"delta": delta, "ci95_low": None, "ci95_high": None, "within_noise": None}
    var_b, var_c = b["std"] ** 2 / b["n"], c["std"] ** 2 / c["n"]
    if var_b + var_c == 0:  # every seed gave the same number on both sides
        half = 0.0
    else:
        df = (var_b + var_c) ** 2 / (var_b ** 2 / (b["n"] - 1) + var_c ** 2 / (c["n"] - 1))
        half = float(stats.t.ppf(0.975, df) * math.sqrt(var_b + var_c))
    low, high = delta - half, delta + half
    return {"delta": delta, "ci95_low": low, "ci95_high": high, "within_noise": bool(low <= 0 <= high)}
