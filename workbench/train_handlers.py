"""The Train tab's handlers: plain values in, the outputs' new values out; a refusal raises.

The form arrives as the fields' values (train_form.FORM_KEYS order: the scalar settings, then
the audio LLM's) followed by the composition, augmentation and curriculum tables; `resolve`
turns it (or the advanced YAML) into the config a job would run and its overrides against the
preset. The same form queues a fine-tune or, for the audio LLM, a prompt search. Lists skip the
gate panel's outputs (panel_size of them) while the run it reports on is unchanged: redrawing it
reads the store and would reset its players on every tick.
"""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import gradio as gr

from core.config import ConfigError, ExperimentConfig, load_preset
from core.models.speech_llm import check_base
from workbench import gate_panel, llm_views, train_form
from workbench.common import message_html, queue_place
from workbench.context import Workbench, require_annotator
from workbench.job_queue import Job
from workbench.train_progress import job_views, jobs_frame

EPOCHS_HELP = ExperimentConfig.field_help().get("train.epochs", "")


def resolve(preset_name: str, yaml_mode: bool, yaml_text: str, *form: Any,
            session_dir: str | Path | None = None) -> tuple[ExperimentConfig, list[str]]:
    """The config the job would run and its dotted overrides against the preset; ConfigError
    naming the dotted key for a bad value. With session_dir, also what only the session and this
    machine can answer is checked (a relative noise_bank is its folder: is a bank there? Its files
    are read when the job is queued, not on every keystroke; the audio LLM's base model: can its
    config be read here, without a download?); the config comes back as written, so the YAML view
    and the overrides keep the relative folder."""
    base = load_preset(preset_name)
    if yaml_mode:
        chosen = train_form.config_from_yaml(yaml_text)
    else:
        count = len(train_form.FORM_KEYS)
        chosen = train_form.config_from_form(base, dict(zip(train_form.FORM_KEYS, form[:count])), *form[count:])
    if session_dir is not None:
        chosen.for_session(session_dir, open_bank=False)
        if train_form.is_llm(chosen):
            try:
                check_base(chosen.model.pretrained)
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
    return chosen, train_form.overrides_between(base, chosen)


def preview(preset_name: str, yaml_mode: bool, yaml_text: str, *form: Any,
            session_dir: str | Path | None = None) -> list[Any]:
    """[YAML view, message, epochs field] while the person types: the YAML redrawn from the form
    and a wrong field named at once, beside the button (no popup while typing)."""
    try:
        chosen, overrides = resolve(preset_name, yaml_mode, yaml_text, *form, session_dir=session_dir)
    except ConfigError as exc:
        return [gr.skip(), message_html(f"{exc}", error=True), gr.skip()]
    note = f"changed from the preset: {', '.join(overrides)}" if overrides else "the preset as it is"
    return [gr.skip() if yaml_mode else train_form.to_yaml(chosen), message_html(note), _epochs_field(chosen)]


def llm_view(wb: Workbench, preset_name: str, yaml_mode: bool, yaml_text: str, *form: Any) -> list[Any]:
    """[the LLM fields' box, Search prompts, the base line, the prompt note]: shown while the form
    builds the audio LLM, with whether its base model can be read and which prompt a fine-tune
    asks with; hidden for other models. A form that does not resolve leaves them as they are
    (the preview names the wrong field)."""
    try:
        chosen, _ = resolve(preset_name, yaml_mode, yaml_text, *form)
    except ConfigError:
        return [gr.skip()] * 4
    if not train_form.is_llm(chosen):
        return [gr.Column(visible=False), gr.Button(visible=False), gr.skip(), gr.skip()]
    return [gr.Column(visible=True), gr.Button(visible=True), llm_views.base_html(chosen),
            llm_views.prompt_note_html(wb.store, chosen)]


def choose_preset(classes: list[str], preset_name: str) -> list[Any]:
    """The form filled from a preset: [description, *fields (FORM_KEYS), composition, augmentations,
    curriculum, YAML, use-YAML off, message]."""
    chosen = load_preset(preset_name)
    scalars = train_form.scalar_values(chosen)
    scalars["train.epochs"] = _epochs_field(chosen, value=scalars["train.epochs"])
    return [describe(chosen), *(scalars[key] for key in train_form.FORM_KEYS),
            train_form.composition_table(chosen, classes), train_form.augment_table(chosen),
            train_form.curriculum_table(chosen), train_form.to_yaml(chosen), False,
            message_html(f"preset {preset_name} loaded")]


def start_job(wb: Workbench, request: gr.Request | None, name: str | None, preset_name: str, start_from: str,
              yaml_mode: bool, yaml_text: str, *form: Any) -> list[Any]:
    """Fine-tune: freeze the manifest now and queue the job. [the job to show (None: follow the
    running one), message]: where it waits, the decision its labels were frozen at and what it
    starts from. A bad setting or start model is refused beside the button and as a notice."""
    who = require_annotator(name, request)
    try:
        _, overrides = resolve(preset_name, yaml_mode, yaml_text, *form, session_dir=wb.store.session_dir)
        job = wb.jobs.submit(preset=preset_name, overrides=overrides, submitted_by=who, init_from=start_from)
    except ConfigError as exc:
        gr.Warning(f"Not started: {exc}")
        return [gr.skip(), message_html(f"Not started: {exc}", error=True)]
    return [None, message_html(f"run {job.run_id} queued{ahead(wb, job.run_id)}. The manifest was frozen at decision "
                               f"{job.frozen_at_decision}. It {job.start_note}.")]


def start_prompt_search(wb: Workbench, request: gr.Request | None, name: str | None, preset_name: str,
                        yaml_mode: bool, yaml_text: str, *form: Any) -> list[Any]:
    """Search prompts: freeze the clips now and queue a prompt search of the form's base model
    (B8). [the job to show (None: follow the running one), message]; refused beside the button
    and as a notice like Fine-tune (a bad setting, an unreadable base, too few val or test clips)."""
    who = require_annotator(name, request)
    try:
        _, overrides = resolve(preset_name, yaml_mode, yaml_text, *form, session_dir=wb.store.session_dir)
        job = wb.jobs.submit_prompt_search(preset=preset_name, overrides=overrides, submitted_by=who)
    except ConfigError as exc:
        gr.Warning(f"Not started: {exc}")
        return [gr.skip(), message_html(f"Not started: {exc}", error=True)]
    return [None, message_html(f"prompt search {job.run_id} queued{ahead(wb, job.run_id)}. The clips were frozen at "
                               f"decision {job.frozen_at_decision}; it scores the base model alone, on the val clips.")]


def ahead(wb: Workbench, run_id: str) -> str:
    """'; 2 job(s) ahead of it' for a waiting job (the running one counts), else ''."""
    place = queue_place(wb.jobs, run_id)
    before = place - 1 + (wb.jobs.current() is not None) if place else 0
    return f"; {before} job(s) ahead of it" if before else ""


def cancel_job(wb: Workbench, shown: str | None) -> list[Any]:
    """Cancel the job on show: [that job, kept on show while the next one starts, message]."""
    job = _pick(wb, shown)
    if job is None:
        raise ValueError("No job to cancel.")
    wb.jobs.cancel(job.run_id)
    return [job.run_id, message_html(f"cancel requested for run {job.run_id}")]


def job_view(wb: Workbench, job: Job | None, version: int, rendered: str | None, *, panel_size: int) -> list[Any]:
    """Everything about one job: [progress, loss, metrics, log, jobs table, Cancel, version, the run
    the gate panel reports on, *the panel, start-from choices]. The panel and the runs to start
    from are redrawn only when the run to report on changes, e.g. when the job has just finished."""
    reported = job.run_id if job is not None and job.finished else None
    panel = ([gr.skip()] * (2 + panel_size) if reported == rendered
             else [reported, *gate_panel.render(wb, reported), gr.Dropdown(choices=init_choices(wb))])
    return [*job_views(job), jobs_frame(wb), gr.Button(interactive=job is not None and not job.finished), version,
            *panel]


def refresh(wb: Workbench, shown: str | None, seen: int, rendered: str | None, *, panel_size: int) -> Any:
    """The timer (and the page load): job_view of the job on show, or one skip of every output
    when nothing moved since version `seen`."""
    version = wb.jobs.version
    if version == seen:
        return gr.skip()
    return job_view(wb, _pick(wb, shown), version, rendered, panel_size=panel_size)


def pick_job(wb: Workbench, run_id: str, rendered: str | None, *, panel_size: int) -> list[Any]:
    """A row of the jobs table: [that job to show, *job_view of it]."""
    return [run_id, *job_view(wb, _pick(wb, run_id), wb.jobs.version, rendered, panel_size=panel_size)]


def tab_shown(wb: Workbench, rendered: str | None, *, panel_size: int) -> list[Any]:
    """When the tab is shown: [*the gate panel, start-from choices] as the store has them now
    (a promotion or a rollback in the Runs tab moves production)."""
    panel = gate_panel.render(wb, rendered) if rendered else [gr.skip()] * panel_size
    return [*panel, gr.Dropdown(choices=init_choices(wb))]


def _pick(wb: Workbench, shown: str | None) -> Job | None:
    """The job to show: the one chosen while it exists, else the running or latest one."""
    if shown:
        try:
            return wb.jobs.snapshot(shown)
        except ValueError:
            pass
    return wb.jobs.latest()


def init_choices(wb: Workbench) -> list[tuple[str, str]]:
    """What a fine-tune may start from: production (named), the preset's own start, or any
    succeeded training run."""
    runs = wb.store.runs(kind="train")
    production = wb.store.production_run()
    done = [(f"run {r.id}{' (production)' if r.id == production else ''}", r.id)
            for r in runs.itertuples() if r.status == "succeeded"]
    now = f"run {production}" if production else "none yet"
    return [(f"production model ({now})", "production"), ("scratch (the preset's own start)", "none"), *done]


def describe(config: ExperimentConfig) -> str:
    """The preset's name and description, beside the form."""
    return f"**{html.escape(config.name)}**: {html.escape(config.description or '')}"


def epochs_state(config: ExperimentConfig) -> tuple[bool, str]:
    """(editable, info line) of the epochs field: a curriculum decides the epochs, so the field
    is then read-only and says why."""
    note = train_form.epochs_note(config)
    return note is None, note or EPOCHS_HELP


def _epochs_field(config: ExperimentConfig, **value: Any) -> gr.Number:
    editable, info = epochs_state(config)
    return gr.Number(interactive=editable, info=info, **value)
