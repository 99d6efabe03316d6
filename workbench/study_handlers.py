"""The Train tab's "Run a study" handlers: plain values in, the outputs' new values out.

A study varies the Train form: the preset and the settings the form changed are every trial's
base (train_handlers.resolve), the grid or the folds vary around it. Queueing checks the whole
study first (workbench/study_form.py, then the pipeline's plan): a bad key or value, too few
source groups for the folds, or a leave one group out of one group is refused in one line
beside the button, and nothing is queued or written.
"""
from __future__ import annotations

from typing import Any

import gradio as gr
import pandas as pd

from core.config import ConfigError
from pipelines.study_crossval import pool_groups
from workbench import study_form
from workbench.common import message_html
from workbench.context import Workbench, require_annotator
from workbench.study_form import GRID, StudyForm
from workbench.train_handlers import ahead, resolve

STUDY_FIELDS = 8  # design, grid from YAML, grid table, grid YAML, seeds, metric, folds, leave one group out


def form_of(design: str, use_yaml: bool, table: pd.DataFrame | None, yaml_text: str, seeds: str, metric: str,
            folds: float | None, leave_one_group_out: bool) -> StudyForm:
    """The study fields (STUDY_FIELDS of them, in the order the tab lists them) as a StudyForm."""
    return StudyForm(design=design, use_yaml=bool(use_yaml), table=table, yaml_text=yaml_text or "", seeds=seeds or "",
                     metric=metric, folds=folds, leave_one_group_out=bool(leave_one_group_out))


def design_view(design: str) -> list[Any]:
    """[grid box, metric, folds, leave one group out]: a grid shows its keys and the metric that
    ranks its configs; a cross-validation its folds (it reports test accuracy per fold)."""
    grid = design == GRID
    return [gr.Column(visible=grid), gr.Dropdown(visible=grid), gr.Number(visible=not grid),
            gr.Checkbox(visible=not grid)]


def folds_view(wb: Workbench) -> gr.Number:
    """The folds field with K derived from the session's source groups (study_form.default_folds)."""
    groups = pool_groups(wb.store)
    return gr.Number(value=study_form.default_folds(groups),
                     info=f"the session's usable clips have {groups} source group(s); K of them are held out in turn")


def preview(*study: Any) -> str:
    """The study line while the person types: its size, or the first thing wrong with it."""
    try:
        return message_html(study_form.check(form_of(*study)))
    except ConfigError as exc:
        return message_html(str(exc), error=True)


def start_study(wb: Workbench, request: gr.Request | None, name: str | None, preset_name: str, start_from: str,
                yaml_mode: bool, yaml_text: str, *values: Any) -> list[Any]:
    """Run a study: [the job to show (None: follow the running one), the study's message]. The
    values are the STUDY_FIELDS study fields, then the Train form (train_handlers.resolve)."""
    who = require_annotator(name, request)
    study, form = form_of(*values[:STUDY_FIELDS]), values[STUDY_FIELDS:]
    try:
        _, overrides = resolve(preset_name, yaml_mode, yaml_text, *form, session_dir=wb.store.session_dir)
        init_from = start_from if study.design == GRID else "none"
        job = wb.jobs.submit_study(study_form.plan(study, preset=preset_name, overrides=overrides, init_from=init_from),
                                   submitted_by=who)
    except ConfigError as exc:
        gr.Warning(f"Study not started: {exc}")
        return [gr.skip(), message_html(f"Study not started: {exc}", error=True)]
    return [None, message_html(f"study {job.run_id} queued{ahead(wb, job.run_id)}: {job.trials_total} trials, every "
                               f"trial from {_start(wb, init_from)}; labels frozen at decision {job.frozen_at_decision}. "
                               "Its progress shows below; when it ends, open it in the Runs tab.")]


def _start(wb: Workbench, init_from: str) -> str:
    """Where the trials' weights start, in words (production named, or its absence)."""
    if init_from == "production":
        production = wb.store.production_run()
        return f"the production model (run {production})" if production else "the preset's own start (no production model yet)"
    return "the preset's own start" if init_from == "none" else f"run {init_from}"
