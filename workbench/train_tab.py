"""Train: one-click fine-tune from a preset, its live progress, and the promote-or-keep decision.

The form shows a preset's key settings; what the person changes becomes dotted overrides, and
the advanced YAML view can replace the form entirely. Fine-tune hands the job to the server's
JobManager (workbench/job_queue.py): the manifest is frozen at that click, the trainer runs as a
child process, and a timer redraws progress from the manager's snapshot only when something
moved. Closing the tab does not stop the job; the next visitor sees it. For the audio LLM
(model.name speech_llm) the form also shows its base model, LoRA and prompt fields, and Search
prompts queues a prompt search (B8) the same way; a fine-tune then asks with its best prompt.
Run a study (B3, B4) queues one study job over the same form: a grid of preset keys (a small
table or YAML) or a cross-validation by source group, at several seeds. This module holds the
layout and the wiring; train_handlers.py and study_handlers.py the handlers, train_progress.py
the job's views.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr

from core.augment import TRANSFORMS
from core.config import ExperimentConfig, list_presets, load_preset
from core.models import available_models
from core.study import STUDY_METRICS
from workbench import gate_panel, study_form, study_handlers, train_form
from workbench import train_handlers as handlers
from workbench.common import WIDE
from workbench.context import Workbench, current_tab, safe
from workbench.train_progress import CURVE_COLOURS, JOB_COLUMNS, LOADING, LOG_TAIL, LOSS_SERIES, SCORE_SERIES, curve

SIREN_PRESET, SIREN_CLASS = "sirens-focused", "emergency_sirens"
# Form labels name the dotted key, so an error message ("train.epochs: 0 is out of range") points at its field.
LABELS = {"model.name": "model", "train.epochs": "epochs", "train.batch_size": "batch size", "train.lr": "learning rate",
          "train.backbone_lr": "backbone learning rate", "train.warmup_steps": "warm-up steps",
          "train.schedule": "schedule", "train.loss": "loss", "train.class_weights": "class weights",
          "train.early_stopping_patience": "early-stopping patience", "mixup_p": "MixUp probability",
          "mixup_alpha": "MixUp alpha", "model.pretrained": "base model", "model.lora.rank": "LoRA rank",
          "model.lora.alpha": "LoRA alpha", "model.lora.dropout": "LoRA dropout",
          "model.speech_llm.add_mlp_targets": "LoRA on the MLP too",
          "model.speech_llm.train_projector": "train the projector",
          "model.speech_llm.prompt_from_search": "prompt from search", "model.speech_llm.speech_answer": "speech letter",
          "model.speech_llm.generated_prompts": "prompts the model proposes",
          "model.speech_llm.template_variants": "template variants",
          "model.speech_llm.free_generation_tokens": "free-answer tokens", "model.speech_llm.prompt": "prompt",
          "heads.contrastive.enabled": "contrastive head", "heads.contrastive.weight": "contrastive weight",
          "heads.envelope.enabled": "envelope-rate head", "heads.envelope.weight": "envelope weight"}
OPTIONAL_KEYS = {"train.backbone_lr"}
INTEGER_KEYS = {"train.epochs", "train.batch_size", "train.warmup_steps", "train.early_stopping_patience",
                "model.lora.rank", "model.lora.alpha", "model.speech_llm.generated_prompts",
                "model.speech_llm.free_generation_tokens"}
# The LLM fields' rows below the base model (train_form.LLM_KEYS less the base and the prompt): the
# adapters, what else trains, how prompt search searches, how the model is asked. Few to a row:
# their labels name long dotted keys.
LLM_ROWS = (("model.lora.rank", "model.lora.alpha", "model.lora.dropout"),
            ("model.speech_llm.add_mlp_targets", "model.speech_llm.train_projector"),
            ("model.speech_llm.template_variants", "model.speech_llm.generated_prompts",
             "model.speech_llm.free_generation_tokens"),
            ("model.speech_llm.prompt_from_search", "model.speech_llm.speech_answer"))
CURVE_HEIGHT = 360
# After Fine-tune: bring the job's progress, curves and log into view (they sit below the form).
SHOW_PROGRESS_JS = """() => { if (document.querySelector('#em-train-message')?.innerText.includes('queued')) {
  document.querySelector('#em-train-progress')?.scrollIntoView({behavior: 'smooth', block: 'start'}); } }"""
SHOW_STUDY_PROGRESS_JS = SHOW_PROGRESS_JS.replace("em-train-message", "em-study-message")


@dataclass
class StudyBox:
    """The "Run a study" fields; `fields` in the order study_handlers.form_of reads them."""
    design: gr.Radio
    grid_box: gr.Column
    use_yaml: gr.Checkbox
    table: gr.Dataframe
    yaml_text: gr.Code
    seeds: gr.Textbox
    metric: gr.Dropdown
    folds: gr.Number
    leave_one_group_out: gr.Checkbox
    launch: gr.Button
    message: gr.HTML

    @property
    def fields(self) -> list[gr.Component]:
        return [self.design, self.use_yaml, self.table, self.yaml_text, self.seeds, self.metric, self.folds,
                self.leave_one_group_out]


@dataclass
class Layout:
    """The tab's components, so the wiring (and a reader) can name each one."""
    preset: gr.Dropdown
    init_from: gr.Dropdown
    launch: gr.Button
    search: gr.Button       # Search prompts: shown for the audio LLM
    cancel: gr.Button
    message: gr.HTML
    description: gr.Markdown
    fields: dict[str, gr.Component]  # train_form.FORM_KEYS -> its form field
    llm_box: gr.Column      # the audio LLM's fields (train_form.LLM_KEYS), shown for it
    llm_base: gr.HTML       # whether its base model can be read here
    llm_prompt: gr.HTML     # which prompt a fine-tune asks with
    composition: gr.Dataframe
    augment: gr.Dataframe
    curriculum: gr.Dataframe
    use_yaml: gr.Checkbox
    yaml_view: gr.Code
    study: StudyBox
    progress: gr.HTML
    jobs_table: gr.Dataframe
    loss_plot: gr.LinePlot
    metric_plot: gr.LinePlot
    log_tail: gr.Textbox
    panel: gate_panel.GatePanel
    shown_job: gr.State     # None: follow the running / latest job
    seen_version: gr.State  # the job manager's version last drawn
    panel_for: gr.State     # the run whose gate report the panel shows
    timer: gr.Timer

    @property
    def form(self) -> list[gr.Component]:
        """The form as handlers.resolve reads it: the fields in FORM_KEYS order, then the tables."""
        return [self.fields[key] for key in train_form.FORM_KEYS] + [self.composition, self.augment, self.curriculum]

    @property
    def llm_outputs(self) -> list[gr.Component]:
        """What handlers.llm_view fills."""
        return [self.llm_box, self.search, self.llm_base, self.llm_prompt]

    @property
    def job_outputs(self) -> list[gr.Component]:
        """What handlers.job_view fills."""
        return [self.progress, self.loss_plot, self.metric_plot, self.log_tail, self.jobs_table, self.cancel,
                self.seen_version, self.panel_for, *self.panel.outputs, self.init_from]


def default_preset(classes: list[str], presets: list[str]) -> str:
    """sirens-focused for the siren task (plan A), else the quick demo preset, else the first."""
    if SIREN_CLASS in classes and SIREN_PRESET in presets:
        return SIREN_PRESET
    return "demo-fast" if "demo-fast" in presets else presets[0]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    tab = current_tab()
    classes = wb.labels()
    wire(wb, layout(wb, classes, annotator=annotator), classes=classes, annotator=annotator, tab=tab,
         page=gr.context.Context.root_block)


def layout(wb: Workbench, classes: list[str], *, annotator: gr.Component) -> Layout:
    presets = list_presets()
    help_text = ExperimentConfig.field_help()
    first = default_preset(classes, presets)
    config = load_preset(first)
    values = train_form.scalar_values(config)
    shown_job, seen_version = gr.State(None), gr.State(-1)

    # The preset, where to start from and the Fine-tune button come first, on the first screen;
    # the settings to adjust follow, then the job's progress (Fine-tune scrolls to it).
    with gr.Row():
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):
                preset = gr.Dropdown(presets, value=first, label="preset", elem_id="em-train-preset", scale=1,
                                     info="sirens-focused is plan A's focused fine-tune; every preset lives in data/presets/")
                init_from = gr.Dropdown(handlers.init_choices(wb), value="production", label="start from", scale=1,
                                        elem_id="em-train-init",
                                        info="the weights the fine-tune starts from (production = the promoted model)")
            with gr.Row(equal_height=True):
                launch = gr.Button("Fine-tune", variant="primary", elem_id="em-train-launch", scale=1)
                search = gr.Button("Search prompts", elem_id="em-train-search", scale=1, visible=train_form.is_llm(config))
                cancel = gr.Button("Cancel job", variant="stop", elem_id="em-train-cancel", scale=1, interactive=False)
            message = gr.HTML(elem_id="em-train-message")
        with gr.Column(scale=1):
            description = gr.Markdown(handlers.describe(config), elem_classes="em-preset-description")
    fields: dict[str, gr.Component] = {}
    for row_keys in (train_form.SCALAR_KEYS[:6], train_form.SCALAR_KEYS[6:]):
        with gr.Row(equal_height=True):
            for key in row_keys:
                fields[key] = _field(key, values[key], help_text.get(key, ""), config)
    with gr.Row(equal_height=True, elem_id="em-train-heads"):  # A10's optional heads: a switch and a weight each
        for key in train_form.HEAD_KEYS:
            fields[key] = _field(key, values[key], help_text.get(key, ""), config)
    llm_box, llm_base, llm_prompt = _llm_fields(fields, values, help_text, config)
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

    study = _study_box()
    progress = gr.HTML(LOADING, elem_id="em-train-progress")  # the page load fills in the real job state
    jobs_table = gr.Dataframe(headers=JOB_COLUMNS, label="jobs of this server, newest first: they run one at a time (select one to show it)",
                              interactive=False, max_height=200, elem_id="em-train-jobs", **WIDE)
    with gr.Row(equal_height=True):
        loss_plot = gr.LinePlot(curve([], LOSS_SERIES), x="step", y="value", color="series", color_map=CURVE_COLOURS,
                                title="loss", x_title="training step", y_title="loss", color_title="", height=CURVE_HEIGHT,
                                elem_id="em-train-loss")
        metric_plot = gr.LinePlot(curve([], SCORE_SERIES), x="step", y="value", color="series", color_map=CURVE_COLOURS,
                                  title="validation, at the end of each epoch", x_title="training step", y_title="score",
                                  color_title="", y_lim=[0, 1], height=CURVE_HEIGHT, elem_id="em-train-metrics")
    log_tail = gr.Textbox(label=f"log, last {LOG_TAIL} lines (the trainer's own output is in the run folder's job.log)",
                          lines=LOG_TAIL, max_lines=LOG_TAIL, interactive=False, elem_id="em-train-log")
    panel = gate_panel.build(wb, annotator=annotator, prefix="em-train")
    return Layout(preset=preset, init_from=init_from, launch=launch, search=search, cancel=cancel, message=message,
                  description=description, fields=fields, llm_box=llm_box, llm_base=llm_base, llm_prompt=llm_prompt,
                  composition=composition, augment=augment,
                  curriculum=curriculum, use_yaml=use_yaml, yaml_view=yaml_view, study=study, progress=progress,
                  jobs_table=jobs_table, loss_plot=loss_plot, metric_plot=metric_plot, log_tail=log_tail, panel=panel,
                  shown_job=shown_job, seen_version=seen_version, panel_for=gr.State(None), timer=gr.Timer(1.0))


def _study_box() -> StudyBox:
    """Run a study: a grid (table or YAML) or a cross-validation over the form's settings, at seeds."""
    with gr.Accordion("Run a study: a grid of settings, several seeds, or cross-validation by source group",
                      open=False, elem_id="em-study"):
        gr.Markdown("Every trial is an ordinary training run of the settings above (the preset and what the form "
                    "changed), with the grid's keys or the fold's splits on top, at each seed. Configs are ranked by "
                    "their mean over seeds with the spread and a 95% interval; the Runs tab shows the table, the "
                    "plot, and promotes the best trial through the gates. A grid starts each trial from 'start "
                    "from' above; a cross-validation from the preset's own start.")
        with gr.Row(equal_height=True):
            design = gr.Radio([(label, key) for key, label in study_form.DESIGNS.items()], value=study_form.GRID,
                              label="study", scale=3, elem_id="em-study-design")
            seeds = gr.Textbox(study_form.SEEDS_TEXT, label="seeds (comma-separated)", scale=1, elem_id="em-study-seeds",
                               info="each config trains once per seed; the plans use 42, 123, 456")
            metric = gr.Dropdown(list(STUDY_METRICS), value=STUDY_METRICS[0], label="rank configs by (on val)", scale=1,
                                 elem_id="em-study-metric", info="higher is better; test is reported beside it")
            folds = gr.Number(study_form.DEFAULT_FOLDS, label="folds (K)", precision=0, visible=False, scale=1,
                              elem_id="em-study-folds")
            leave_one_group_out = gr.Checkbox(False, label="leave one group out (one fold per source group)",
                                              visible=False, scale=1, elem_id="em-study-loso")
        with gr.Column(elem_id="em-study-grid") as grid_box:
            table = gr.Dataframe(study_form.empty_table(), label="grid: a dotted preset key per row, its values "
                                 "comma-separated (e.g. train.lr | 0.001, 0.002); no key = the settings above alone, "
                                 "at each seed", interactive=True, datatype=["str", "str"], elem_id="em-study-table",
                                 max_height=220, **WIDE)
            use_yaml = gr.Checkbox(False, label="give the grid as YAML instead (the format `earmark grid --grid` reads)",
                                   elem_id="em-study-use-yaml")
            yaml_text = gr.Code(study_form.YAML_EXAMPLE, language="yaml", lines=8, max_lines=20, interactive=True,
                                elem_id="em-study-yaml")
        with gr.Row(equal_height=True):
            launch = gr.Button("Run study (one queued job)", variant="primary", scale=0, min_width=240,
                               elem_id="em-study-launch")
            message = gr.HTML(elem_id="em-study-message")
    return StudyBox(design=design, grid_box=grid_box, use_yaml=use_yaml, table=table, yaml_text=yaml_text, seeds=seeds,
                    metric=metric, folds=folds, leave_one_group_out=leave_one_group_out, launch=launch, message=message)


def _llm_fields(fields: dict[str, gr.Component], values: dict[str, Any], help_text: dict[str, str],
               config: ExperimentConfig) -> tuple[gr.Column, gr.HTML, gr.HTML]:
    """The audio LLM's fields into `fields`, in a box shown only while the form builds it; the
    base model line and the prompt note are filled by handlers.llm_view."""
    with gr.Column(visible=train_form.is_llm(config), elem_id="em-train-llm", elem_classes="em-train-llm") as box:
        gr.Markdown("**Audio LLM** (model.name speech_llm): the base model it loads, its LoRA adapters, and the "
                    "prompt it answers A or B to. Search prompts scores prompts on the val clips; Fine-tune trains "
                    "the adapters.")
        key = "model.pretrained"
        fields[key] = gr.Textbox(values[key] or "", label=f"{LABELS[key]} ({key})", info=help_text[key],
                                 placeholder="a Qwen2-Audio folder written by save_pretrained, or a hub id in the "
                                             "local Hugging Face cache", elem_id=_elem(key))
        base = gr.HTML(elem_id="em-train-llm-base")
        for row_keys in LLM_ROWS:
            with gr.Row(equal_height=True):
                for key in row_keys:
                    fields[key] = _field(key, values[key], help_text.get(key, ""), config)
        prompt_note = gr.HTML(elem_id="em-train-llm-prompt-note")
        key = "model.speech_llm.prompt"
        fields[key] = gr.Textbox(values[key], label=f"{LABELS[key]} ({key})", info=help_text[key], lines=5,
                                 max_lines=14, elem_id=_elem(key))
    return box, base, prompt_note


def wire(wb: Workbench, ui: Layout, *, classes: list[str], annotator: gr.Component, tab: gr.Tab,
         page: gr.Blocks) -> None:
    """Events to handlers: each handler refuses by raising, and `safe` turns that into one toast
    that leaves every panel as it was."""
    size = len(ui.panel.outputs)
    epochs = ui.fields["train.epochs"]
    preview = safe(lambda *form: handlers.preview(*form, session_dir=wb.store.session_dir))
    preview_inputs, preview_outputs = [ui.preset, ui.use_yaml, ui.yaml_view, *ui.form], [ui.yaml_view, ui.message, epochs]
    llm = safe(lambda *form: handlers.llm_view(wb, *form))
    # always_last: keystrokes typed while a check runs are not dropped; the last value is checked after it.
    for component in [*ui.form, ui.use_yaml]:
        component.input(preview, preview_inputs, preview_outputs, show_progress="hidden", trigger_mode="always_last").then(
            llm, preview_inputs, ui.llm_outputs, show_progress="hidden")
    ui.preset.input(safe(lambda name: handlers.choose_preset(classes, name)), ui.preset,
                    [ui.description, *ui.form, ui.yaml_view, ui.use_yaml, ui.message]).then(
        llm, preview_inputs, ui.llm_outputs, show_progress="hidden")
    # A job that has just finished (a prompt search) may change the prompt a fine-tune asks with.
    ui.panel_for.change(llm, preview_inputs, ui.llm_outputs, show_progress="hidden")

    @safe
    def on_launch(request: gr.Request, name, preset_name, start_from, yaml_mode, yaml_text, *form):
        return handlers.start_job(wb, request, name, preset_name, start_from, yaml_mode, yaml_text, *form)

    ui.launch.click(on_launch, [annotator, ui.preset, ui.init_from, ui.use_yaml, ui.yaml_view, *ui.form],
                    [ui.shown_job, ui.message]).then(None, None, None, js=SHOW_PROGRESS_JS)

    @safe
    def on_search(request: gr.Request, name, preset_name, yaml_mode, yaml_text, *form):
        return handlers.start_prompt_search(wb, request, name, preset_name, yaml_mode, yaml_text, *form)

    ui.search.click(on_search, [annotator, ui.preset, ui.use_yaml, ui.yaml_view, *ui.form],
                    [ui.shown_job, ui.message]).then(None, None, None, js=SHOW_PROGRESS_JS)
    ui.cancel.click(safe(lambda shown: handlers.cancel_job(wb, shown)), ui.shown_job, [ui.shown_job, ui.message])
    _wire_study(wb, ui, annotator=annotator, page=page)

    refresh = safe(lambda shown, seen, rendered: handlers.refresh(wb, shown, seen, rendered, panel_size=size))
    followed = [ui.shown_job, ui.seen_version, ui.panel_for]
    ui.timer.tick(refresh, followed, ui.job_outputs, show_progress="hidden")
    # At once on page load, not at the timer's first tick behind the other tabs' loads.
    page.load(refresh, followed, ui.job_outputs, show_progress="hidden")
    tab.select(safe(lambda rendered: handlers.tab_shown(wb, rendered, panel_size=size)), ui.panel_for,
               [*ui.panel.outputs, ui.init_from], show_progress="hidden")

    @safe
    def on_job(rendered, event: gr.SelectData):
        return handlers.pick_job(wb, str(event.row_value[0]), rendered, panel_size=size)

    ui.jobs_table.select(on_job, ui.panel_for, [ui.shown_job, *ui.job_outputs])


def _wire_study(wb: Workbench, ui: Layout, *, annotator: gr.Component, page: gr.Blocks) -> None:
    box = ui.study
    box.design.change(study_handlers.design_view, box.design,
                      [box.grid_box, box.metric, box.folds, box.leave_one_group_out], show_progress="hidden")
    # One event for every field, run one at a time: a slow check of an earlier keystroke can never
    # overwrite the line of a later one.
    gr.on([field.change for field in box.fields], study_handlers.preview, box.fields, box.message, show_progress="hidden",
          trigger_mode="always_last", concurrency_limit=1)
    # The default K follows the session's source groups as the page opens (imports and moves change them).
    page.load(safe(lambda: study_handlers.folds_view(wb)), None, box.folds, show_progress="hidden")

    @safe
    def on_study(request: gr.Request, name, preset_name, start_from, yaml_mode, yaml_text, *values):
        return study_handlers.start_study(wb, request, name, preset_name, start_from, yaml_mode, yaml_text, *values)

    box.launch.click(on_study, [annotator, ui.preset, ui.init_from, ui.use_yaml, ui.yaml_view, *box.fields, *ui.form],
                     [ui.shown_job, box.message]).then(None, None, None, js=SHOW_STUDY_PROGRESS_JS)


def _field(key: str, value: Any, help_text: str, config: ExperimentConfig) -> gr.Component:
    """The form field of one setting, labelled with its dotted key, with the field's help."""
    label, elem = f"{LABELS[key]} ({key})", {"elem_id": _elem(key)}
    if key == "train.epochs":
        editable, info = handlers.epochs_state(config)
        return gr.Number(value, label=label, info=info, interactive=editable, precision=0, **elem)
    if train_form.field_hint(key) is bool:
        return gr.Checkbox(value, label=label, info=help_text, **elem)
    choices = available_models() if key == "model.name" else train_form.literal_choices(key)
    if choices:
        return gr.Dropdown(choices, value=value, label=label, info=help_text, **elem)
    if key in OPTIONAL_KEYS:  # a number box cannot be left empty, and empty means "not set" here
        return gr.Textbox("" if value is None else str(value), label=label, info=f"{help_text} Empty = not set.", **elem)
    return gr.Number(value, label=label, info=help_text, precision=0 if key in INTEGER_KEYS else None, **elem)


def _elem(key: str) -> str:
    return "em-train-" + key.replace(".", "-").replace("_", "-")
