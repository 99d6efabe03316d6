"""The Train tab's "Run a study" form as data: what a person typed -> a plan the job queue runs.

A grid is given as a small table (a dotted preset key per row, its values comma-separated) or
as YAML in the format `earmark grid --grid` reads (core/study.py); both end in core.study's
parse_grid, so a malformed grid is refused with the CLI's words. Seeds, the metric and the
folds go through the core's checks too, and every key and value is checked against the preset
by the pipeline's plan (pipelines/study.py, study_crossval.py) before anything is queued: this
module only turns form values into those calls. No Gradio here.
"""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import yaml

from core.config import MIN_FOLDS, ConfigError
from core.store import Store
from core.study import DEFAULT_SEEDS, Grid, check_metric, check_seeds_not_in_grid, parse_grid, parse_seeds, preset_only
from pipelines.study import Study, plan_grid
from pipelines.study_crossval import plan_crossval

GRID, CROSSVAL = "grid", "crossval"
DESIGNS = {GRID: "grid over preset keys (every combination, at every seed)",
           CROSSVAL: "cross-validation by source group (every fold, at every seed)"}
GRID_COLUMNS = ["dotted preset key", "values (comma-separated)"]
GRID_ROWS = 3  # empty rows the table starts with (more can be added)
DEFAULT_FOLDS = 5  # at most; fewer when the session has fewer source groups (default_folds)
SEEDS_TEXT = ", ".join(map(str, DEFAULT_SEEDS))
YAML_EXAMPLE = """\
grid:                    # every combination: 2 x 2 = 4 configs
  train.lr: [0.001, 0.002]
  train.schedule: [cosine, linear]
fixed:                   # the same in every config
  train.epochs: 10
"""


@dataclasses.dataclass(frozen=True)
class StudyForm:
    """The study form's values as Gradio hands them over."""
    design: str                   # GRID or CROSSVAL
    use_yaml: bool                # the grid from the YAML box, not the table
    table: pd.DataFrame | None    # GRID_COLUMNS; empty keys are unused rows
    yaml_text: str
    seeds: str
    metric: str
    folds: float | None           # cross-validation: K
    leave_one_group_out: bool


def empty_table() -> pd.DataFrame:
    return pd.DataFrame([["", ""]] * GRID_ROWS, columns=GRID_COLUMNS)


def default_folds(groups: int) -> int:
    """K for a session with this many source groups: DEFAULT_FOLDS, or every group as a fold
    when there are fewer (never under MIN_FOLDS: fewer groups are refused when queued)."""
    return max(MIN_FOLDS, min(DEFAULT_FOLDS, groups))


def grid_from_table(table: pd.DataFrame | None) -> Grid:
    """The table's rows as a grid (a key per row, values as a YAML flow list: '0.001, 0.002',
    'cosine, linear', '[8, 16], [16, 32]'); no key at all is the preset alone (seeds only)."""
    section: dict[str, Any] = {}
    rows = [] if table is None else table.fillna("").astype(str).itertuples(index=False)
    for key, values in rows:
        key, values = key.strip(), values.strip()
        if not key and not values:
            continue
        if not key:
            raise ConfigError(f"grid table: the values {values!r} have no dotted preset key beside them")
        if key in section:
            raise ConfigError(f"grid table: key '{key}' is on two rows; give all its values on one")
        section[key] = _values(key, values)
    return parse_grid({"grid": section}, source="grid table") if section else preset_only()


def _values(key: str, text: str) -> list[Any]:
    if not text:
        raise ConfigError(f"grid key '{key}': give its values, comma-separated (e.g. 0.001, 0.002)")
    try:
        values = yaml.safe_load(f"[{text}]")
    except yaml.YAMLError:
        raise ConfigError(f"grid key '{key}': {text!r} is not a comma-separated list of values "
                          "(quote a value that holds a comma)") from None
    return values


def grid_from_yaml(text: str) -> Grid:
    """The YAML box as a grid file (core.study's format); one line for YAML that does not parse."""
    try:
        data = yaml.safe_load(text) if text and text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"grid YAML: not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if data is None:
        raise ConfigError("grid YAML: empty; give a 'grid' section (or 'configs'), e.g. grid: {train.lr: [0.001, 0.002]}")
    return parse_grid(data, source="grid YAML")


def grid_of(form: StudyForm) -> Grid:
    grid = grid_from_yaml(form.yaml_text) if form.use_yaml else grid_from_table(form.table)
    check_seeds_not_in_grid(grid)
    return grid


def folds_of(form: StudyForm) -> int | float | None:
    """K as the form gives it (None for leave one group out); whether K is allowed for the
    session (a whole number >= 3, no more than its groups) is the pipeline's check."""
    if form.leave_one_group_out:
        return None
    if form.folds is None:
        raise ConfigError("folds: give a number of folds (K), or choose leave one group out")
    return int(form.folds) if float(form.folds).is_integer() else form.folds


def check(form: StudyForm) -> str:
    """What the form asks for in one line ('2 configs x 3 seeds = 6 trials'), with the checks
    that need no session: the grid's shape, seeds, metric, K. ConfigError in one line."""
    seeds = parse_seeds(form.seeds)
    if form.design == GRID:
        grid, metric = grid_of(form), check_metric(form.metric)
        return (f"{_count(len(grid.configs), 'config')} x {_count(len(seeds), 'seed')} = "
                f"{_count(len(grid.configs) * len(seeds), 'trial')}, ranked by val {metric}")
    if form.design != CROSSVAL:
        raise ConfigError(f"study: {form.design!r} is not one of {', '.join(DESIGNS)}")
    folds = folds_of(form)
    how = "one fold per source group (leave one group out)" if folds is None else f"{folds} folds"
    return f"{how} x {_count(len(seeds), 'seed')}, each fold model from the preset's own start"


def plan(form: StudyForm, *, preset: str, overrides: Sequence[str], init_from: str) -> Callable[[Store], Study]:
    """plan(store) checks the whole study against the preset and the session and writes it
    (JobManager.submit_study calls it); the checks that need no session run here first."""
    check(form)
    seeds = parse_seeds(form.seeds)
    if form.design == GRID:
        return functools.partial(plan_grid, preset=preset, grid=grid_of(form), seeds=seeds, overrides=list(overrides),
                                 init_from=init_from, metric=form.metric)
    return functools.partial(plan_crossval, preset=preset, folds=folds_of(form),
                             leave_one_group_out=form.leave_one_group_out, seeds=seeds, overrides=list(overrides))


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"
