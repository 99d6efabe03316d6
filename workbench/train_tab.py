"""Train: one-click fine-tune from a preset, its live progress, and the promote-or-keep decision.

The form shows a preset's key settings; what the person changes becomes dotted overrides, and
the advanced YAML view can replace the form entirely. Fine-tune hands the job to the server's
JobManager (workbench/job_queue.py): the manifest is frozen at that click, the trainer runs as a
child process, and a timer redraws progress from the manager's snapshot only when something
moved. Closing the tab does not stop the job; the next visitor sees it.
"""
from __future__ import annotations

import html
import typing
from typing import Any

import gradio as gr
import pandas as pd

from core.augment import TRANSFORMS
from core.config import ConfigError, ExperimentConfig, list_presets, load_preset
from core.models import available_models
from workbench import gate_panel, train_form
from workbench.common import WIDE
from workbench.context import Workbench, current_tab, require_annotator, safe
from workbench.job_queue import PHASES, Job

SIREN_PRESET, SIREN_CLASS = "sirens-focused", "emergency_sirens"
# Form labels name the dotted key, so an error message ("train.epochs: 0 is out of range") points at its field.
LABELS = {"model.name": "model", "train.epochs": "epochs", "train.batch_size": "batch size", "train.lr": "learning rate",
          "train.backbone_lr": "backbone learning rate", "train.warmup_steps": "warm-up steps",
          "train.schedule": "schedule", "train.loss": "loss", "train.class_weights": "class weights",
          "train.early_stopping_patience": "early-stopping patience", "mixup_p": "MixUp probability",
          "mixup_alpha": "MixUp alpha"}
OPTIONAL_KEYS = {"train.backbone_lr"}
INTEGER_KEYS = {"train.epochs", "train.batch_size", "train.warmup_steps", "train.early_stopping_patience"}
JOB_COLUMNS = ["run", "job", "state", "preset", "changed settings", "by", "frozen at decision"]
MAX_CURVE_POINTS = 400
CURVE_HEIGHT = 360
LOADING = '<div class="em-job" data-status="loading"><div class="em-job-status">Reading the job queue&hellip;</div></div>'
# After Fine-tune: bring the job's progress, curves and log into view (they sit below the form).
SHOW_PROGRESS_JS = """() => { if (document.querySelector('#em-train-message')?.innerText.includes('queued')) {
  document.querySelector('#em-train-progress')?.scrollIntoView({behavior: 'smooth', block: 'start'}); } }"""
LOG_TAIL = 14
LOSS_SERIES = ("train loss (per step)", "validation loss")
SCORE_SERIES = ("validation accuracy", "validation F1 macro")
CURVE_COLOURS = {"train loss (per step)": "#4f46e5", "validation loss": "#e67e22",
                 "validation accuracy": "#1e8449", "validation F1 macro": "#8e44ad"}
ERROR_STYLE = "margin-top:6px;padding:6px 10px;border-left:4px solid #c0392b;background:#fdecea;color:#922b21;white-space:pre-wrap"
BAR_COLOURS = {"succeeded": "#1e8449", "failed": "#c0392b", "cancelled": "#7f8c8d",
               "trained, gates passed": "#1e8449", "trained, gates failed": "#c0392b",
               "audited, gates passed": "#1e8449", "audited, gates failed": "#c0392b"}


def default_preset(classes: list[str], presets: list[str]) -> str:
    """sirens-focused for the siren task (plan A), else the quick demo preset, else the first."""
    if SIREN_CLASS in classes and SIREN_PRESET in presets:
        return SIREN_PRESET
    return "demo-fast" if "demo-fast" in presets else presets[0]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    tab = current_tab()
    classes = wb.labels()
    presets = list_presets()
    help_text = ExperimentConfig.field_help()
    first = default_preset(classes, presets)
    config = load_preset(first)
    values = train_form.scalar_values(config)
    shown_job = gr.State(None)          # None: follow the running / latest job
    seen_version = gr.State(-1)

    # The preset, where to start from and the Fine-tune button come first, on the first screen;
    # the settings to adjust follow, then the job's progress (Fine-tune scrolls to it).
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):
                preset = gr.Dropdown(presets, value=first, label="preset", elem_id="em-train-preset", scale=1,
                                     info="sirens-focused is plan A's focused fine-tune; every preset lives in data/presets/")
                init_from = gr.Dropdown(_init_choices(wb), value="production", label="start from", scale=1,
                                        elem_id="em-train-init",
                                        info="the weights the fine-tune starts from (production = the promoted model)")
            with gr.Row(equal_height=True):
                launch = gr.Button("Fine-tune", variant="primary", elem_id="em-train-launch", scale=1)
                cancel = gr.Button("Cancel job", variant="stop", elem_id="em-train-cancel", scale=1, interactive=False)
            message = gr.HTML(elem_id="em-train-message")
        with gr.Column(scale=1):
            description = gr.Markdown(_describe(config), elem_classes="em-preset-description")
    fields: dict[str, gr.Component] = {}
    for row_keys in (train_form.SCALAR_KEYS[:6], train_form.SCALAR_KEYS[6:]):
        with gr.Row(equal_height=True):
            for key in row_keys:
                fields[key] = _field(key, values[key], help_text.get(key, ""), config)
    epochs, epochs_help = fields["train.epochs"], help_text.get("train.epochs", "")
    with gr.Row():
        composition = gr.Dataframe(train_form.composition_table(config, classes), label="batch composition (train.batch_composition)",
                                   interactive=True, static_columns=[0], datatype=["str", "number"], scale=2,
                                   elem_id="em-train-composition", max_height=260, **WIDE)
        augment = gr.Dataframe(train_form.augment_table(config), label=f"augmentations with probabilities (augment): "
                               f"{', '.join(sorted(TRANSFORMS))}",
                               interactive=True, datatype=["str", "number", "str"], scale=3, max_height=260, **WIDE)
        curriculum = gr.Dataframe(train_form.curriculum_table(config), label="curriculum stages (train.curriculum)",
                                  interactive=True, datatype=["number", "bool", "number", "number", "str", "str"],
                                  scale=4, max_height=260, **WIDE)
    gr.Markdown(f"<span style='font-size:12px;color:#666'>Batch composition: clips of each class per batch, all 0 = plain shuffled batches. "
                f"Augmentations: {html.escape(help_text.get('augment', ''))} Curriculum: "
                f"{html.escape(help_text.get('train.curriculum', ''))} A curriculum decides the number of epochs.</span>")
    with gr.Accordion("Advanced: the whole configuration as YAML", open=False):
        use_yaml = gr.Checkbox(False, label="launch with this YAML instead of the form", elem_id="em-train-use-yaml")
        yaml_view = gr.Code(train_form.to_yaml(config), language="yaml", lines=18, max_lines=30, interactive=True,
                            elem_id="em-train-yaml")

    progress = gr.HTML(LOADING, elem_id="em-train-progress")  # the page load fills in the real job state
    jobs_table = gr.Dataframe(headers=JOB_COLUMNS, label="jobs of this server, newest first: they run one at a time (select one to show it)",
                              interactive=False, max_height=200, elem_id="em-train-jobs", **WIDE)
    with gr.Row(equal_height=True):
        loss_plot = gr.LinePlot(_curve([], LOSS_SERIES), x="step", y="value", color="series", color_map=CURVE_COLOURS,
                                title="loss", x_title="training step", y_title="loss", color_title="", height=CURVE_HEIGHT,
                                elem_id="em-train-loss")
        metric_plot = gr.LinePlot(_curve([], SCORE_SERIES), x="step", y="value", color="series", color_map=CURVE_COLOURS,
                                  title="validation, at the end of each epoch", x_title="training step", y_title="score",
                                  color_title="", y_lim=[0, 1], height=CURVE_HEIGHT, elem_id="em-train-metrics")
    log_tail = gr.Textbox(label=f"log, last {LOG_TAIL} lines (the trainer's own output is in the run folder's job.log)",
                          lines=LOG_TAIL, max_lines=LOG_TAIL, interactive=False, elem_id="em-train-log")
    panel = gate_panel.build(wb, annotator=annotator, prefix="em-train")
    panel_for = gr.State(None)          # the run whose gate report the panel shows
    timer = gr.Timer(1.0)

    form_inputs = [fields[key] for key in train_form.SCALAR_KEYS] + [composition, augment, curriculum]

    def resolve(preset_name: str, yaml_mode: bool, yaml_text: str, *form: Any) -> tuple[ExperimentConfig, list[str]]:
        """The config the job would run and its overrides against the preset."""
        base = load_preset(preset_name)
        if yaml_mode:
            chosen = train_form.config_from_yaml(yaml_text)
        else:
            scalars = dict(zip(train_form.SCALAR_KEYS, form[:len(train_form.SCALAR_KEYS)]))
            chosen = train_form.config_from_form(base, scalars, *form[len(train_form.SCALAR_KEYS):])
        return chosen, train_form.overrides_between(base, chosen)

    @safe
    def preview(preset_name, yaml_mode, yaml_text, *form):
        """Redraw the YAML from the form and say at once which field is wrong (no popup while typing)."""
        try:
            chosen, overrides = resolve(preset_name, yaml_mode, yaml_text, *form)
        except ConfigError as exc:
            return gr.skip(), _message(f"{exc}", error=True), gr.skip()
        note = f"changed from the preset: {', '.join(overrides)}" if overrides else "the preset as it is"
        return (gr.skip() if yaml_mode else train_form.to_yaml(chosen)), _message(note), _epochs_field(chosen, epochs_help)

    preview_inputs = [preset, use_yaml, yaml_view, *form_inputs]
    preview_outputs = [yaml_view, message, epochs]
    for component in form_inputs:
        component.input(preview, preview_inputs, preview_outputs, show_progress="hidden")
    use_yaml.input(preview, preview_inputs, preview_outputs, show_progress="hidden")

    @safe
    def choose_preset(preset_name):
        chosen = load_preset(preset_name)
        scalars = train_form.scalar_values(chosen)
        scalars["train.epochs"] = _epochs_field(chosen, epochs_help, value=scalars["train.epochs"])
        return [_describe(chosen), *(scalars[key] for key in train_form.SCALAR_KEYS),
                train_form.composition_table(chosen, classes), train_form.augment_table(chosen),
                train_form.curriculum_table(chosen), train_form.to_yaml(chosen), False, _message(f"preset {preset_name} loaded")]

    preset.input(choose_preset, preset, [description, *form_inputs, yaml_view, use_yaml, message])

    @safe
    def start(request: gr.Request, name, preset_name, start_from, yaml_mode, yaml_text, *form):
        who = require_annotator(name, request)
        try:
            _, overrides = resolve(preset_name, yaml_mode, yaml_text, *form)
        except ConfigError as exc:  # refused in place, beside the button, and as a notice
            gr.Warning(f"Not started: {exc}")
            return gr.skip(), _message(f"Not started: {exc}", error=True)
        try:
            job = wb.jobs.submit(preset=preset_name, overrides=overrides, submitted_by=who, init_from=start_from)
        except ConfigError as exc:  # e.g. a start model of another architecture: refused the same way
            gr.Warning(f"Not started: {exc}")
            return gr.skip(), _message(f"Not started: {exc}", error=True)
        queue, running = wb.jobs.queue(), wb.jobs.current()
        ahead = queue.index(job.run_id) + (running is not None) if job.run_id in queue else 0
        where = f"; {ahead} job(s) ahead of it" if ahead else ""
        return None, _message(f"run {job.run_id} queued{where}. The manifest was frozen at decision {job.frozen_at_decision}. "
                              f"It {job.start_note}.")

    launch.click(start, [annotator, preset, init_from, use_yaml, yaml_view, *form_inputs], [shown_job, message]
                 ).then(None, None, None, js=SHOW_PROGRESS_JS)

    @safe
    def stop(shown):
        job = _pick(wb, shown)
        if job is None:
            raise ValueError("No job to cancel.")
        wb.jobs.cancel(job.run_id)
        # Keep showing this job, so its end stays in view while the next one in the queue starts.
        return job.run_id, _message(f"cancel requested for run {job.run_id}")

    cancel.click(stop, shown_job, [shown_job, message])

    job_outputs = [progress, loss_plot, metric_plot, log_tail, jobs_table, cancel, seen_version, panel_for, *panel.outputs,
                   init_from]

    def job_view(job: Job | None, version: int, rendered: str | None) -> list[Any]:
        """Everything about one job; the gate panel (and the runs to start from) are redrawn only
        when the job to report on changes, e.g. when it has just finished."""
        reported = job.run_id if job is not None and job.finished else None
        panel_values = ([gr.skip()] * (2 + len(panel.outputs)) if reported == rendered
                        else [reported, *gate_panel.render(wb, reported), gr.Dropdown(choices=_init_choices(wb))])
        return [*_job_view(job), _jobs_frame(wb), gr.Button(interactive=job is not None and not job.finished), version,
                *panel_values]

    @safe
    def refresh(shown, seen, rendered):
        version = wb.jobs.version
        if version == seen:
            return [gr.skip()] * len(job_outputs)
        return job_view(_pick(wb, shown), version, rendered)

    timer.tick(refresh, [shown_job, seen_version, panel_for], job_outputs, show_progress="hidden")
    # At once on page load, not at the timer's first tick behind the other tabs' loads.
    gr.context.Context.root_block.load(refresh, [shown_job, seen_version, panel_for], job_outputs, show_progress="hidden")

    @safe
    def shown(rendered):
        """When the tab is shown: the gate panel and the runs to start from as the store has them
        now (a promotion or a rollback in the Runs tab moves production)."""
        panel_values = gate_panel.render(wb, rendered) if rendered else [gr.skip()] * len(panel.outputs)
        return [*panel_values, gr.Dropdown(choices=_init_choices(wb))]

    tab.select(shown, panel_for, [*panel.outputs, init_from], show_progress="hidden")

    @safe
    def show_job(rendered, event: gr.SelectData):
        run_id = str(event.row_value[0])
        return [run_id, *job_view(_pick(wb, run_id), wb.jobs.version, rendered)]

    jobs_table.select(show_job, panel_for, [shown_job, *job_outputs])


# --- components and views ------------------------------------------------------------------

def _field(key: str, value: Any, help_text: str, config: ExperimentConfig) -> gr.Component:
    label = f"{LABELS[key]} ({key})"
    if key == "train.epochs":
        editable, info = _epochs_state(config, help_text)
        return gr.Number(value, label=label, info=info, interactive=editable, precision=0, elem_id=_elem(key))
    choices = available_models() if key == "model.name" else _literal_choices(key)
    if choices:
        return gr.Dropdown(choices, value=value, label=label, info=help_text, elem_id=_elem(key))
    if key in OPTIONAL_KEYS:  # a number box cannot be left empty, and empty means "not set" here
        return gr.Textbox("" if value is None else str(value), label=label, info=f"{help_text} Empty = not set.",
                          elem_id=_elem(key))
    return gr.Number(value, label=label, info=help_text, precision=0 if key in INTEGER_KEYS else None, elem_id=_elem(key))


def _elem(key: str) -> str:
    return "em-train-" + key.replace(".", "-").replace("_", "-")


def _literal_choices(key: str) -> list[str]:
    """The allowed values of a Literal-typed config field (schedule, loss, class weights)."""
    section, _, name = key.rpartition(".")
    owner: Any = ExperimentConfig
    for part in filter(None, section.split(".")):
        owner = typing.get_type_hints(owner)[part]
    hint = typing.get_type_hints(owner)[name]
    return list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else []


def _describe(config: ExperimentConfig) -> str:
    return f"**{html.escape(config.name)}**: {html.escape(config.description or '')}"


def _init_choices(wb: Workbench) -> list[tuple[str, str]]:
    runs = wb.store.runs(kind="train")
    production = wb.store.production_run()
    done = [(f"run {r.id}{' (production)' if r.id == production else ''}", r.id)
            for r in runs.itertuples() if r.status == "succeeded"]
    now = f"run {production}" if production else "none yet"
    return [(f"production model ({now})", "production"), ("scratch (the preset's own start)", "none"), *done]


def _epochs_state(config: ExperimentConfig, help_text: str) -> tuple[bool, str]:
    """(editable, info line) of the epochs field: a curriculum decides the epochs, so the field
    is then read-only and says why."""
    note = train_form.epochs_note(config)
    return note is None, note or help_text


def _epochs_field(config: ExperimentConfig, help_text: str, **value: Any) -> Any:
    editable, info = _epochs_state(config, help_text)
    return gr.Number(interactive=editable, info=info, **value)


def _message(text: str, *, error: bool = False) -> str:
    return f'<span class="{"em-message-error" if error else "em-message-ok"}">{html.escape(text)}</span>'


def _pick(wb: Workbench, shown: str | None) -> Job | None:
    if shown:
        try:
            return wb.jobs.snapshot(shown)
        except ValueError:
            pass
    return wb.jobs.latest()


def _jobs_frame(wb: Workbench) -> pd.DataFrame:
    current, queue = wb.jobs.current(), wb.jobs.queue()
    rows = []
    for job in reversed(wb.jobs.jobs()):
        state = (f"queued #{queue.index(job.run_id) + 1}" if job.run_id in queue else
                 f"running: {job.phase}" if job.run_id == current else job.state)
        rows.append([job.run_id, job.kind, state, job.preset, ", ".join(job.overrides) or "-", job.submitted_by,
                     job.frozen_at_decision])
    return pd.DataFrame(rows, columns=JOB_COLUMNS)


def _job_view(job: Job | None) -> list[Any]:
    """Progress bar, the two curves and the log tail of one job."""
    if job is None:
        return [_progress_html(None), _curve([], LOSS_SERIES), _curve([], SCORE_SERIES), ""]
    losses = [p for p in job.curve if p["series"] in LOSS_SERIES]
    per_step = [p for p in losses if p["series"] == LOSS_SERIES[0]]
    if len(per_step) > MAX_CURVE_POINTS:  # thin the per-step loss; keep every validation point
        losses = per_step[::-(-len(per_step) // MAX_CURVE_POINTS)] + [p for p in losses if p["series"] != LOSS_SERIES[0]]
    return [_progress_html(job), _curve(losses, LOSS_SERIES), _curve(job.curve, SCORE_SERIES), "\n".join(list(job.log)[-LOG_TAIL:])]


def _curve(points: list[dict[str, Any]], series: tuple[str, ...]) -> pd.DataFrame:
    """Points of the named series, plus one empty (NaN) point per series.

    Why the empty points: Gradio's plot fixes its colour legend from the first data it draws,
    so every series must be named from the start, or the validation curves added after the
    first epoch would never get a line.
    """
    frame = pd.DataFrame([p for p in points if p["series"] in series], columns=["step", "series", "value"])
    placeholders = pd.DataFrame({"step": 0, "series": list(series), "value": float("nan")})
    return pd.concat([placeholders, frame], ignore_index=True).astype({"step": "int64", "value": "float64"})


def _progress_html(job: Job | None) -> str:
    if job is None:
        return ('<div class="em-job" data-status="none"><div class="em-job-status">No fine-tune has run in this server yet. '
                'Choose a preset, adjust the settings, and press Fine-tune.</div></div>')
    percent = 100 * job.fraction_done()
    parts = [PHASES.get(job.phase, job.phase) if not job.finished else job.state]
    if job.epochs and job.phase == "training":
        parts.append(f"epoch {min(job.epoch, job.epochs):.1f} / {job.epochs}")
    if job.total_steps:
        parts.append(f"step {job.step} / {job.total_steps}")
    if job.phase == "auditing" and job.audit_total:
        parts.append(f"{job.audit_done} / {job.audit_total} clips predicted")
    if job.start_line():
        parts.append(job.start_line())
    if job.eta_s is not None and not job.finished and job.phase == "training":
        parts.append(f"about {_duration(job.eta_s)} left in training")
    what = (f"<b>run {html.escape(job.run_id)}</b> &middot; {html.escape(job.preset)}" if job.kind == "fine-tune" else
            f"<b>audit of run {html.escape(job.run_id)}</b>")
    title = (f"{what} &middot; started by {html.escape(job.submitted_by)} &middot; labels frozen at decision "
             f"{job.frozen_at_decision}")
    error = (f'<div class="em-job-error" style="{ERROR_STYLE}">{html.escape(job.error)}</div>'
             if job.error and job.status == "failed" else "")
    note = f'<div style="margin-top:4px">{html.escape(job.error)}</div>' if job.error and job.status == "cancelled" else ""
    gates = "none" if job.gates_passed is None else "passed" if job.gates_passed else "failed"
    return (f'<div class="em-job" data-status="{job.status}" data-gates="{gates}" data-phase="{job.phase}">'
            f'<div style="margin-bottom:4px">{title}</div>'
            f'<div class="em-progress"><div style="width:{percent:.1f}%;background:{BAR_COLOURS.get(job.state, "")}"></div></div>'
            f'<div class="em-job-status" style="margin-top:4px">{" &middot; ".join(html.escape(p) for p in parts)}</div>'
            f'{error}{note}</div>')


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
