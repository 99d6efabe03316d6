"""Runs: every run of the session, one run's plots, metrics and gates, two runs compared, and
the production history with promote and rollback. It opens on the production run. A speech
model's run offers Compare detectors (beside WebRTC and Silero VAD); a comparison run shows its
report (Markdown and figures) in place of the plots. An audio-LLM run shows its answer card and
each clip's A/B probability of speech; a prompt search its best prompt and ranked prompts. A
study (a grid or a cross-validation) shows its results table, sorted by a chosen metric with
the spread over seeds, its error-bar plot, configs and trials, and sends its best trial (or a
chosen one) through the audit and the gates, whose panel then decides as for any run. "Combine runs"
queues an ensemble of finished runs (ensemble_panel.py).

This module holds the layout and the wiring; runs_handlers.py the handlers (the only writes:
promotion decisions, detector comparisons and jobs handed to the queue), runs_views.py what a
run shows. A slow timer redraws the table when a run changes status or production moves, so a
job finishing in the Train tab shows up here without a click.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from workbench import ensemble_panel, gate_panel
from workbench import runs_handlers as handlers
from workbench.common import WIDE
from workbench.context import Workbench, current_tab, safe
from workbench.runs_views import (BREAKDOWN_COLUMNS, BREAKDOWN_DELTA_COLUMNS, DELTA_COLUMNS, FLIP_COLUMNS,
                                  HISTORY_COLUMNS, RUN_COLUMNS, compare_choices, history_frame, production_html,
                                  WORST_COLUMNS, runs_frame, signature)

SPLITS = ["test", "val", "train"]
PLOT_LABELS = ("confusion matrix (given labels)", "reliability diagram", "training curves")
# runs_views.REPORT_FIGURES, as the comparison report shows them
FIGURE_LABELS = ("accuracy against SNR (test)", "balanced accuracy per SNR (test)", "reliability (score as p(speech))")


@dataclass
class Layout:
    """The tab's components, so the wiring (and a reader) can name each one."""
    production_line: gr.HTML
    refresh: gr.Button
    runs_table: gr.Dataframe
    title: gr.HTML
    split: gr.Dropdown
    audit_button: gr.Button
    evaluate_button: gr.Button
    resume_button: gr.Button  # shown only while the selected run can resume (handlers.resume_button)
    export_button: gr.Button
    detectors_button: gr.Button  # shown only for a speech model's succeeded run (handlers.report_view)
    audit_message: gr.HTML
    downloads: gr.File
    plots: list[gr.Image]     # PLOT_LABELS
    metrics_table: gr.Dataframe
    breakdown_table: gr.Dataframe
    breakdown_plot: gr.Image
    split_column: gr.Column   # the split views above, hidden while a comparison run is selected
    report_column: gr.Column  # a comparison run's report, shown in their place
    report_markdown: gr.Markdown
    report_figures: list[gr.Image]  # FIGURE_LABELS
    report_durations: gr.Gallery    # accuracy against SNR per clip duration
    report_worst: gr.Dataframe      # each detector's worst test clips (runs_views.WORST_COLUMNS)
    report_player: gr.HTML          # the worst clip selected, playable
    llm_column: gr.Column           # an audio-LLM run's card or a prompt search's table (handlers.llm_view)
    llm_markdown: gr.Markdown
    llm_predictions: gr.Dataframe   # an audio-LLM training run: per clip, the A/B probability of speech
    llm_player: gr.HTML
    study_column: gr.Column         # a study's views (handlers.study_view)
    study_markdown: gr.Markdown
    study_sort: gr.Dropdown
    study_results: gr.Dataframe
    study_plot: gr.Image
    study_trials: gr.Dataframe
    study_target: gr.Dropdown       # the trial to send through the gates
    study_promote: gr.Button
    study_message: gr.HTML
    panel: gate_panel.GatePanel
    baseline: gr.Dropdown
    candidate: gr.Dropdown
    compare_split: gr.Dropdown
    compare_button: gr.Button
    compare_summary: gr.HTML
    deltas: gr.Dataframe
    confusion_diff: gr.Image
    breakdown_deltas: gr.Dataframe
    flips: gr.Dataframe
    flip_player: gr.HTML
    rollback_reason: gr.Textbox
    rollback_button: gr.Button
    rollback_confirm: gr.Row
    rollback_change: gr.HTML
    rollback_yes: gr.Button
    rollback_no: gr.Button
    history_message: gr.HTML
    history: gr.Dataframe
    signature: gr.State       # runs_views.signature of what the overview shows
    study_signature: gr.State  # ... and of what the selected study's views show (handlers.study_tick)
    selected: gr.State        # the selected run's id
    timer: gr.Timer

    @property
    def overview_inputs(self) -> list[gr.Component]:
        return [self.signature, self.baseline, self.candidate]

    @property
    def overview_outputs(self) -> list[gr.Component]:
        """What handlers.overview fills."""
        return [self.signature, self.production_line, self.runs_table, self.history, self.baseline, self.candidate]

    @property
    def split_outputs(self) -> list[gr.Component]:
        """What runs_views.split_views fills."""
        return [*self.plots, self.metrics_table, self.breakdown_table, self.breakdown_plot]

    @property
    def run_outputs(self) -> list[gr.Component]:
        """What handlers.open_run fills."""
        return [self.selected, self.title, *self.split_outputs, self.downloads, self.audit_message, self.candidate,
                self.resume_button, *self.panel.outputs]

    @property
    def report_outputs(self) -> list[gr.Component]:
        """What handlers.report_view fills."""
        return [self.detectors_button, self.split_column, self.report_column, self.report_markdown,
                *self.report_figures, self.report_durations, self.report_worst, self.report_player]

    @property
    def llm_outputs(self) -> list[gr.Component]:
        """What handlers.llm_view fills."""
        return [self.llm_column, self.llm_markdown, self.llm_predictions, self.llm_player]

    @property
    def study_outputs(self) -> list[gr.Component]:
        """What handlers.study_view fills."""
        return [self.study_column, self.study_markdown, self.study_sort, self.study_results, self.study_plot,
                self.study_trials, self.study_target, self.study_promote, self.audit_button, self.evaluate_button,
                self.split, self.export_button]

    @property
    def compare_outputs(self) -> list[gr.Component]:
        """What runs_views.comparison_views fills."""
        return [self.compare_summary, self.deltas, self.confusion_diff, self.breakdown_deltas, self.flips,
                self.flip_player]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    tab = current_tab()
    wire(wb, layout(wb, annotator=annotator), annotator=annotator, tab=tab, page=gr.context.Context.root_block)


def layout(wb: Workbench, *, annotator: gr.Component) -> Layout:
    # The overview is drawn from the store as the page is built, so the table comes with the page;
    # the page load redraws it only if the store changed since (the signature says).
    signature_now, selected = gr.State(signature(wb)), gr.State(None)
    with gr.Row(equal_height=True):
        production_line = gr.HTML(production_html(wb), elem_id="em-runs-production")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    runs_table = gr.Dataframe(runs_frame(wb), headers=RUN_COLUMNS, label="runs, newest first (select one to open it)",
                              interactive=False, max_height=320, elem_id="em-runs-table", **WIDE)
    with gr.Tabs():
        with gr.Tab("Selected run"):
            run = _selected_run(wb, annotator)
        with gr.Tab("Compare two runs"):
            compared = _compare(wb)
        with gr.Tab("Combine runs (ensemble)") as combine_tab:
            ensemble_panel.build(wb, annotator=annotator, tab=combine_tab)
        with gr.Tab("Production history"):
            history = _history(wb)
    return Layout(production_line=production_line, refresh=refresh, runs_table=runs_table, **run, **compared,
                  **history, signature=signature_now, study_signature=gr.State(None), selected=selected,
                  timer=gr.Timer(3.0))


def _selected_run(wb: Workbench, annotator: gr.Component) -> dict[str, Any]:
    title = gr.HTML("<p>Select a run in the table above.</p>", elem_id="em-runs-title")
    with gr.Row():
        split = gr.Dropdown(SPLITS, value="test", label="split", scale=1)
        with gr.Column(scale=3):
            with gr.Row():
                audit_button = gr.Button("Audit this run, then evaluate its gates (a queued job)", size="sm",
                                         elem_id="em-runs-audit")
                evaluate_button = gr.Button("Evaluate gates (on the run's latest audit)", size="sm",
                                            elem_id="em-runs-evaluate")
            with gr.Row():
                resume_button = gr.Button("Resume this run from its last finished epoch (a queued job)",
                                          size="sm", variant="primary", visible=False, elem_id="em-runs-resume")
                export_button = gr.Button(handlers.EXPORT_RUN, size="sm", elem_id="em-runs-export")
                detectors_button = gr.Button("Compare detectors: this model beside WebRTC and Silero VAD on val and "
                                             "test (a comparison run, tens of seconds)", size="sm", visible=False,
                                             elem_id="em-runs-compare-detectors")
    audit_message = gr.HTML(elem_id="em-runs-audit-message")
    downloads = gr.File(label="downloads", file_count="multiple", interactive=False, visible=False,
                        elem_id="em-runs-downloads")
    with gr.Column(visible=False, elem_id="em-runs-llm") as llm_column:
        llm_markdown = gr.Markdown(elem_id="em-runs-llm-markdown")
        with gr.Row():
            llm_predictions = gr.Dataframe(interactive=False, max_height=360, scale=2, visible=False,
                                           elem_id="em-runs-llm-predictions", **WIDE)
            llm_player = gr.HTML(scale=3, elem_id="em-runs-llm-player")
    with gr.Column(elem_id="em-runs-split-views") as split_column:
        with gr.Column(elem_id="em-runs-plots"):  # the curves are wide (two panels): a row of their own
            with gr.Row():
                plots = [_plot(label, height=460) for label in PLOT_LABELS[:2]]
            plots.append(_plot(PLOT_LABELS[2], height=440))
        metrics_table = gr.Dataframe(headers=["class", "precision", "recall", "f1", "AP", "accuracy", "support"],
                                     label="per-class metrics on this split (against the labels as given)",
                                     interactive=False, elem_id="em-runs-metrics", **WIDE)
        with gr.Row(equal_height=True):
            breakdown_table = gr.Dataframe(headers=BREAKDOWN_COLUMNS, interactive=False, scale=3,
                                           label="accuracy by clip metadata on this split (SNR, duration, source...)",
                                           elem_id="em-runs-breakdowns", **WIDE)
            breakdown_plot = _plot("accuracy by clip metadata", height=420, scale=2, elem_id="em-runs-breakdown-plot")
    with gr.Column(visible=False, elem_id="em-runs-report") as report_column:
        report_markdown = gr.Markdown(elem_id="em-runs-report-markdown")
        with gr.Row():
            report_figures = [_plot(label, height=440, show_label=True) for label in FIGURE_LABELS[:2]]
        with gr.Row():
            report_figures.append(_plot(FIGURE_LABELS[2], height=440, show_label=True))
            report_durations = gr.Gallery(label="accuracy against SNR per clip duration (test)", columns=2,
                                          height=440, interactive=False, elem_id="em-runs-report-durations")
        with gr.Row():
            report_worst = gr.Dataframe(headers=WORST_COLUMNS, interactive=False, max_height=360, scale=2,
                                        label="each detector's worst test clips, most confidently wrong first "
                                              "(select one to listen)", elem_id="em-runs-report-worst", **WIDE)
            report_player = gr.HTML(scale=3, elem_id="em-runs-report-player")
    study = _study()
    panel = gate_panel.build(wb, annotator=annotator, prefix="em-runs")
    return dict(**study, title=title, split=split, audit_button=audit_button, evaluate_button=evaluate_button,
                resume_button=resume_button, export_button=export_button, detectors_button=detectors_button,
                audit_message=audit_message, downloads=downloads, plots=plots, metrics_table=metrics_table,
                breakdown_table=breakdown_table, breakdown_plot=breakdown_plot, split_column=split_column,
                report_column=report_column, report_markdown=report_markdown, report_figures=report_figures,
                report_durations=report_durations, report_worst=report_worst, report_player=report_player,
                llm_column=llm_column, llm_markdown=llm_markdown, llm_predictions=llm_predictions,
                llm_player=llm_player, panel=panel)


def _study() -> dict[str, Any]:
    """A study's views, shown in place of a run's split views while a study is selected."""
    with gr.Column(visible=False, elem_id="em-runs-study") as study_column:
        study_markdown = gr.Markdown(elem_id="em-runs-study-markdown")
        with gr.Row(equal_height=True):
            study_sort = gr.Dropdown(label="sort the configs by (mean over seeds)", scale=1, elem_id="em-runs-study-sort")
            gr.HTML(scale=3)
        study_results = gr.Dataframe(label="results: mean ± std over seeds [95% interval of the mean], best first",
                                     interactive=False, elem_id="em-runs-study-results", **WIDE)
        with gr.Row():
            study_plot = _plot("per config or fold: mean (bar), ±1 std (line), each seed (dot)", height=440, scale=2,
                               show_label=True, elem_id="em-runs-study-plot")
            study_trials = gr.Dataframe(label="every trial: one training run each", interactive=False, max_height=440,
                                        scale=3, elem_id="em-runs-study-trials", **WIDE)
        with gr.Row(equal_height=True):
            study_target = gr.Dropdown(label="trial to promote (default: the best config's best seed)", scale=3,
                                       elem_id="em-runs-study-target")
            study_promote = gr.Button("Promote the best through the gates: audit it, then evaluate its gates (a "
                                      "queued job)", variant="primary", scale=2, elem_id="em-runs-study-promote")
        study_message = gr.HTML(elem_id="em-runs-study-message")
    return dict(study_column=study_column, study_markdown=study_markdown, study_sort=study_sort,
                study_results=study_results, study_plot=study_plot, study_trials=study_trials, study_target=study_target,
                study_promote=study_promote, study_message=study_message)


def _compare(wb: Workbench) -> dict[str, Any]:
    with gr.Row(equal_height=True):
        choices = compare_choices(wb)
        baseline = gr.Dropdown(choices, value=wb.store.production_run(), label="baseline", scale=2,
                               elem_id="em-compare-baseline")
        candidate = gr.Dropdown(choices, value=None, label="candidate", scale=2, elem_id="em-compare-candidate")
        compare_split = gr.Dropdown(SPLITS, value="test", label="split", scale=1)
        compare_button = gr.Button("Compare", variant="primary", scale=1, elem_id="em-compare")
    compare_summary = gr.HTML(elem_id="em-compare-summary")
    with gr.Row():
        deltas = gr.Dataframe(headers=DELTA_COLUMNS, label="per-class change (candidate - baseline; positive is better)",
                              interactive=False, scale=3, elem_id="em-compare-deltas", **WIDE)
        confusion_diff = _plot("confusion difference (candidate - baseline counts)", height=520, scale=2,
                               elem_id="em-compare-confusion")
    breakdown_deltas = gr.Dataframe(headers=BREAKDOWN_DELTA_COLUMNS, interactive=False,
                                    label="accuracy change by clip metadata (same clips; positive is better)",
                                    elem_id="em-compare-breakdowns", **WIDE)
    with gr.Row():
        flips = gr.Dataframe(headers=FLIP_COLUMNS, label="clips whose prediction flipped (select one to listen)",
                             interactive=False, max_height=320, scale=2, elem_id="em-compare-flips", **WIDE)
        flip_player = gr.HTML(scale=3, elem_id="em-compare-player")
    return dict(baseline=baseline, candidate=candidate, compare_split=compare_split, compare_button=compare_button,
                compare_summary=compare_summary, deltas=deltas, confusion_diff=confusion_diff,
                breakdown_deltas=breakdown_deltas, flips=flips, flip_player=flip_player)


def _history(wb: Workbench) -> dict[str, Any]:
    with gr.Row(equal_height=True):
        rollback_reason = gr.Textbox(label="rollback reason (recorded with your name)", scale=3)
        rollback_button = gr.Button("Roll back to the previous production model…", variant="stop", scale=1,
                                    elem_id="em-runs-rollback")
    with gr.Row(visible=False, elem_id="em-runs-rollback-confirm") as rollback_confirm:
        rollback_change = gr.HTML(elem_id="em-runs-rollback-change")
        rollback_yes = gr.Button("Confirm rollback", variant="stop", scale=0, elem_id="em-runs-rollback-yes")
        rollback_no = gr.Button("Keep production", scale=0, elem_id="em-runs-rollback-no")
    history_message = gr.HTML(elem_id="em-runs-history-message")
    history = gr.Dataframe(history_frame(wb), headers=HISTORY_COLUMNS, label="promotions, newest first",
                           interactive=False, elem_id="em-runs-history", **WIDE)
    return dict(rollback_reason=rollback_reason, rollback_button=rollback_button, rollback_confirm=rollback_confirm,
                rollback_change=rollback_change, rollback_yes=rollback_yes, rollback_no=rollback_no,
                history_message=history_message, history=history)


def _plot(label: str, *, height: int, show_label: bool = False, **layout: Any) -> gr.Image:
    """A run's PNG plot; its toolbar (fullscreen, download) sits in a strip above the picture
    (earmark.css, .em-plot), so it never covers the plot's title."""
    return gr.Image(label=label, show_label=show_label, type="filepath", height=height, interactive=False,
                    buttons=["fullscreen", "download"], elem_classes=["em-plot"], **layout)


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component, tab: gr.Tab, page: gr.Blocks) -> None:
    """Events to handlers: each handler refuses by raising, and `safe` turns that into one toast
    that leaves every panel as it was."""
    size = len(ui.panel.outputs)
    ui.timer.tick(safe(lambda *current: handlers.tick(wb, *current)), [*ui.overview_inputs, ui.selected],
                  [*ui.overview_outputs, ui.title, ui.resume_button], show_progress="hidden")
    ui.timer.tick(safe(lambda *current: handlers.study_tick(wb, *current)),
                  [ui.study_signature, ui.selected, ui.study_sort, ui.study_target],
                  [ui.study_signature, *ui.study_outputs, *ui.panel.outputs], show_progress="hidden")
    ui.refresh.click(safe(lambda *current: handlers.overview(wb, *current, force=True)), ui.overview_inputs,
                     ui.overview_outputs)

    @safe
    def on_run(split_name, event: gr.SelectData):
        return handlers.open_run(wb, str(event.row_value[0]), split_name)

    # The comparison button and report, and the audio-LLM views, follow whichever run is now selected.
    report_view = safe(lambda run_id: handlers.report_view(wb, run_id))
    llm_view = safe(lambda run_id, split_name: handlers.llm_view(wb, run_id, split_name))

    study_view = safe(lambda run_id: handlers.study_view(wb, run_id))

    def selection_views(event: Any) -> Any:
        return event.then(report_view, ui.selected, ui.report_outputs).then(llm_view, [ui.selected, ui.split],
                                                                              ui.llm_outputs).then(
            study_view, ui.selected, ui.study_outputs)

    selection_views(ui.runs_table.select(on_run, ui.split, ui.run_outputs))
    page.load(safe(lambda *current: handlers.overview(wb, *current)), ui.overview_inputs, ui.overview_outputs,
              show_progress="hidden")
    selection_views(page.load(safe(lambda split_name: handlers.first_view(wb, split_name)), ui.split, ui.run_outputs))
    tab.select(safe(lambda *current: handlers.tab_shown(wb, *current, panel_size=size)), [*ui.overview_inputs, ui.selected],
               [*ui.overview_outputs, ui.title, ui.resume_button, *ui.panel.outputs], show_progress="hidden").then(
        report_view, ui.selected, ui.report_outputs, show_progress="hidden")
    ui.split.change(safe(lambda run_id, split_name: handlers.change_split(wb, run_id, split_name)),
                    [ui.selected, ui.split], ui.split_outputs).then(llm_view, [ui.selected, ui.split], ui.llm_outputs)
    ui.study_sort.input(safe(lambda run_id, sort_by: handlers.resort_study(wb, run_id, sort_by)),
                        [ui.selected, ui.study_sort], ui.study_results)
    ui.study_target.input(safe(lambda target: gate_panel.render(wb, target)), ui.study_target, ui.panel.outputs)

    @safe
    def on_study_promote(run_id, target, name, request: gr.Request):
        return handlers.promote_through_gates(wb, request, name, run_id, target)

    ui.study_promote.click(on_study_promote, [ui.selected, ui.study_target, annotator], ui.study_message)
    ui.evaluate_button.click(safe(lambda run_id: handlers.evaluate_gates(wb, run_id)), ui.selected, ui.panel.outputs)

    @safe
    def on_audit(run_id, name, request: gr.Request):
        return handlers.queue_audit(wb, request, name, run_id)

    @safe
    def on_resume(run_id, name, request: gr.Request):
        return handlers.queue_resume(wb, request, name, run_id)

    ui.audit_button.click(on_audit, [ui.selected, annotator], ui.audit_message)
    ui.resume_button.click(on_resume, [ui.selected, annotator], [ui.audit_message, ui.resume_button])
    ui.export_button.click(safe(lambda run_id: handlers.prepare_downloads(wb, run_id)), ui.selected, ui.downloads)

    @safe
    def on_compare_detectors(run_id, split_name, name, request: gr.Request, progress=gr.Progress()):
        progress(0, desc="starting the detectors")
        return handlers.compare_speech_detectors(
            wb, request, name, run_id, split_name,
            report=lambda done, total: progress((done, total), desc="compare detectors", unit="clips"))

    # Then the comparison run (now selected) shows its report, and the table lists it.
    selection_views(ui.detectors_button.click(on_compare_detectors, [ui.selected, ui.split, annotator],
                                              ui.run_outputs)).then(
        safe(lambda *current: handlers.overview(wb, *current, force=True)), ui.overview_inputs, ui.overview_outputs,
        show_progress="hidden")
    ui.compare_button.click(safe(lambda *chosen: handlers.compare(wb, *chosen)),
                            [ui.baseline, ui.candidate, ui.compare_split], ui.compare_outputs)

    @safe
    def on_flip(cand, event: gr.SelectData):
        return handlers.play_flip(wb, cand, event.row_value)

    ui.flips.select(on_flip, ui.candidate, ui.flip_player)

    @safe
    def on_worst_clip(event: gr.SelectData):
        return handlers.play_worst_clip(wb, event.row_value)

    ui.report_worst.select(on_worst_clip, None, ui.report_player)

    @safe
    def on_llm_clip(run_id, event: gr.SelectData):
        return handlers.play_llm_clip(wb, run_id, event.row_value)

    ui.llm_predictions.select(on_llm_clip, ui.selected, ui.llm_player)

    @safe
    def on_ask(request: gr.Request, name, why):
        return handlers.ask_rollback(wb, request, name, why)

    @safe
    def on_confirm(request: gr.Request, name, why, *current):
        return handlers.roll_back(wb, request, name, why, *current)

    ui.rollback_button.click(on_ask, [annotator, ui.rollback_reason], [ui.rollback_confirm, ui.rollback_change])
    ui.rollback_no.click(lambda: gr.update(visible=False), None, ui.rollback_confirm)
    ui.rollback_yes.click(on_confirm, [annotator, ui.rollback_reason, *ui.overview_inputs],
                          [ui.history_message, ui.rollback_reason, ui.rollback_confirm, *ui.overview_outputs])
