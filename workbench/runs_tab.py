"""Runs: every run of the session, one run's plots, metrics and gates, two runs compared, and
the production history with promote and rollback. It opens on the production run.

Reads the store and the run folders; the only writes are promotion decisions (through
pipelines/promotion.py, in this server process, the session's writer) and jobs handed to the
queue (an audit of a run, or the resume of a cancelled or crashed one). A slow timer redraws
the table when a run changes status or production moves, so a job finishing in the Train tab
shows up here without a click.
"""
from __future__ import annotations

import functools
import hashlib
import html
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core import train as trainer
from core.checkpoint import checkpoint_dir
from core.store import StoreError
from pipelines.finetune import RESUMABLE
from pipelines.promotion import (GATE_REPORT_FILE, GATES_DIR, check_reason, compare_runs, production_history, rollback,
                                 rollback_plan)
from workbench import gate_panel
from workbench.common import WIDE
from workbench.context import Workbench, current_tab, require_annotator, safe
from workbench.gate_panel import SPOT_CHECK_FMAX_HZ

RUN_COLUMNS = ["run", "kind", "status", "production", "gates", "test accuracy (all clips)",
               "test accuracy (not quarantined)", "test in quarantine", "test F1 macro", "preset",
               "frozen at decision", "of run", "created (UTC)"]
CLASS_METRICS = ["precision", "recall", "f1", "average_precision", "accuracy", "support"]
DELTA_COLUMNS = ["class", "support", "baseline accuracy", "candidate accuracy", "accuracy change", "relative change",
                 "F1 change"]
FLIP_COLUMNS = ["flip", "clip", "label", "baseline predicted", "candidate predicted"]
HISTORY_COLUMNS = ["id", "run_id", "action", "actor", "reason", "created_at"]
SPLITS = ["test", "val", "train"]
PLOT_LABELS = ("confusion matrix (given labels)", "reliability diagram", "training curves")
BREAKDOWN_COLUMNS = ["metadata", "group", "clips", "accuracy", "vs all clips", "F1 macro"]
BREAKDOWN_DELTA_COLUMNS = ["metadata", "group", "clips", "baseline accuracy", "candidate accuracy", "accuracy change"]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    tab = current_tab()
    # The overview is drawn from the store as the page is built, so the table comes with the page;
    # the page load redraws it only if the store changed since (the signature says).
    now = _signature(wb)
    signature = gr.State(now)
    selected = gr.State(None)
    with gr.Row(equal_height=True):
        production_line = gr.HTML(_production_html(wb), elem_id="em-runs-production")
        refresh = gr.Button("Refresh", size="sm", scale=0, min_width=100)
    runs_table = gr.Dataframe(_runs_frame(wb), headers=RUN_COLUMNS, label="runs, newest first (select one to open it)",
                              interactive=False, max_height=320, elem_id="em-runs-table", **WIDE)

    with gr.Tabs():
        with gr.Tab("Selected run"):
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
                        # Shown only while the selected run is a cancelled or crashed training run
                        # with no job of its own in the queue (resume_button_update).
                        resume_button = gr.Button("Resume this run from its last finished epoch (a queued job)",
                                                  size="sm", variant="primary", visible=False, elem_id="em-runs-resume")
                        export_button = gr.Button("Prepare downloads: report (JSON), predictions (CSV), checkpoint (zip)",
                                                  size="sm", elem_id="em-runs-export")
            audit_message = gr.HTML(elem_id="em-runs-audit-message")
            downloads = gr.File(label="downloads", file_count="multiple", interactive=False, visible=False,
                                elem_id="em-runs-downloads")
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
            panel = gate_panel.build(wb, annotator=annotator, prefix="em-runs")
        with gr.Tab("Compare two runs"):
            with gr.Row(equal_height=True):
                choices = _compare_choices(wb)
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
        with gr.Tab("Production history"):
            with gr.Row(equal_height=True):
                rollback_reason = gr.Textbox(label="rollback reason (recorded with your name)", scale=3)
                rollback_button = gr.Button("Roll back to the previous production model…", variant="stop", scale=1,
                                            elem_id="em-runs-rollback")
            with gr.Row(visible=False, elem_id="em-runs-rollback-confirm") as rollback_confirm:
                rollback_change = gr.HTML(elem_id="em-runs-rollback-change")
                rollback_yes = gr.Button("Confirm rollback", variant="stop", scale=0, elem_id="em-runs-rollback-yes")
                rollback_no = gr.Button("Keep production", scale=0, elem_id="em-runs-rollback-no")
            history_message = gr.HTML(elem_id="em-runs-history-message")
            history = gr.Dataframe(_history_frame(wb), headers=HISTORY_COLUMNS, label="promotions, newest first",
                                   interactive=False, elem_id="em-runs-history", **WIDE)
    timer = gr.Timer(3.0)

    overview_outputs = [signature, production_line, runs_table, history, baseline, candidate]

    def overview(seen: Any, base: str | None, cand: str | None, *, force: bool = False) -> list[Any]:
        """The table, production line, history and compare choices; skipped when nothing changed.
        The compared runs stay as chosen; the baseline starts at production."""
        now = _signature(wb)
        if now == seen and not force:
            return [gr.skip()] * len(overview_outputs)
        choices = _compare_choices(wb)
        ids = {run_id for _, run_id in choices}
        return [now, _production_html(wb), _runs_frame(wb), _history_frame(wb),
                gr.Dropdown(choices=choices, value=base if base in ids else wb.store.production_run()),
                gr.Dropdown(choices=choices, value=cand if cand in ids else None)]

    @safe
    def redraw_if_changed(seen, base, cand):
        return overview(seen, base, cand)

    @safe
    def tick(seen, base, cand, run_id):
        """The timer: the overview when the store moved, and with it the selected run's Resume
        button (a resumed run that starts hides it; one cancelled again shows it)."""
        views = overview(seen, base, cand)
        if run_id is None or not isinstance(views[0], tuple):  # nothing selected, or nothing moved (skipped)
            return [*views, gr.skip(), gr.skip()]
        run = wb.store.run(run_id)
        return [*views, _title_html(run), resume_button_update(wb, run)]

    @safe
    def redraw(seen, base, cand):
        return overview(seen, base, cand, force=True)

    overview_inputs = [signature, baseline, candidate]
    timer.tick(tick, [*overview_inputs, selected], [*overview_outputs, title, resume_button], show_progress="hidden")
    refresh.click(redraw, overview_inputs, overview_outputs)

    split_outputs = [*plots, metrics_table, breakdown_table, breakdown_plot]
    run_outputs = [selected, title, *split_outputs, downloads, audit_message, candidate, resume_button, *panel.outputs]

    def open_run(run_id: str, split_name: str) -> list[Any]:
        run = wb.store.run(run_id)
        return [run_id, _title_html(run), *_split_views(wb, run, split_name), gr.File(value=None, visible=False), "",
                gr.Dropdown(value=run_id) if run["kind"] == "train" else gr.skip(), resume_button_update(wb, run),
                *gate_panel.render(wb, run_id if run["kind"] == "train" else None)]

    @safe
    def pick(split_name, event: gr.SelectData):
        return open_run(str(event.row_value[0]), split_name)

    runs_table.select(pick, split, run_outputs)

    @safe
    def first_view(split_name: str) -> list[Any]:
        """The tab opens on the production run, its plots, tables and gates filled, not on empty
        boxes; the compare tab keeps production as its baseline with no candidate yet."""
        production = wb.store.production_run()
        if production is None:
            return [gr.skip()] * len(run_outputs)
        views = open_run(production, split_name)
        views[run_outputs.index(candidate)] = gr.skip()
        return views

    blocks = gr.context.Context.root_block  # the whole app: its load event is the page load
    blocks.load(redraw_if_changed, overview_inputs, overview_outputs, show_progress="hidden")
    blocks.load(first_view, split, run_outputs)

    @safe
    def shown(seen, base, cand, run_id):
        """When the tab is shown: the overview if the store moved (a job ended, a promotion in the
        Train tab), and the selected run's gate panel, whose production mark and buttons follow."""
        if run_id is None:  # nothing selected yet (the page load may be opening production): leave the panel be
            return [*overview(seen, base, cand), gr.skip(), gr.skip(), *[gr.skip()] * len(panel.outputs)]
        run = wb.store.run(run_id)
        return [*overview(seen, base, cand), _title_html(run), resume_button_update(wb, run),
                *gate_panel.render(wb, run_id if run["kind"] == "train" else None)]

    tab.select(shown, [*overview_inputs, selected], [*overview_outputs, title, resume_button, *panel.outputs],
               show_progress="hidden")

    @safe
    def change_split(run_id, split_name):
        if not run_id:
            return [gr.skip()] * len(split_outputs)
        return _split_views(wb, wb.store.run(run_id), split_name)

    split.change(change_split, [selected, split], split_outputs)

    @safe
    def evaluate(run_id):
        if not run_id:
            raise ValueError("Select a training run in the table first.")
        if wb.store.run(run_id)["kind"] != "train":
            raise ValueError(f"Run {run_id} is an audit; gates are evaluated for training runs (select the run it audited).")
        return gate_panel.evaluate(wb, run_id)

    evaluate_button.click(evaluate, selected, panel.outputs)

    @safe
    def queue_audit(run_id, name, request: gr.Request):
        if not run_id:
            raise ValueError("Select a training run in the table first.")
        job = wb.jobs.submit_audit(run_id=run_id, submitted_by=require_annotator(name, request))
        queue = wb.jobs.queue()
        when = f"queued #{queue.index(job.run_id) + 1}" if job.run_id in queue else "started"
        return (f'<span class="em-message-ok">audit of run {html.escape(run_id)} {when}: its progress shows in the '
                f'Train tab; when it ends, the runs table shows its gates (select the run again for the report).</span>')

    audit_button.click(queue_audit, [selected, annotator], audit_message)

    @safe
    def queue_resume(run_id, name, request: gr.Request):
        """Queue the selected cancelled or crashed run to continue from its last finished epoch
        (then its audit and gates); a run that cannot resume is refused in one line."""
        if not run_id:
            raise ValueError("Select a cancelled or failed training run in the table first.")
        if wb.jobs is None:
            raise ValueError("this workbench runs no jobs")
        job = wb.jobs.submit_resume(run_id, submitted_by=require_annotator(name, request))
        queue = wb.jobs.queue()
        when = f"queued #{queue.index(job.run_id) + 1}" if job.run_id in queue else "started"
        note = (f'<span class="em-message-ok">resume of run {html.escape(run_id)} {when}: it continues from its last '
                f'finished epoch; its progress shows in the <a href="#" class="em-open-tab" data-tab="Train">Train tab</a>, '
                f'then its audit and gates.</span>')
        return [note, gr.Button(visible=False)]

    resume_button.click(queue_resume, [selected, annotator], [audit_message, resume_button])

    @safe
    def export(run_id):
        if not run_id:
            raise ValueError("Select a run in the table first.")
        return gr.File(value=_export(wb, run_id), visible=True)

    export_button.click(export, selected, downloads)

    @safe
    def compare(base, cand, split_name):
        if not base or not cand:
            raise ValueError("Choose a baseline and a candidate run to compare.")
        if base == cand:
            raise ValueError("Choose two different runs to compare.")
        comparison, paths = compare_runs(wb.store, baseline=base, candidate=cand, split=split_name)
        return [_comparison_summary(comparison), _delta_frame(comparison), _served(Path(paths["png"])),
                _breakdown_delta_frame(comparison), _flip_frame(comparison), ""]

    compare_button.click(compare, [baseline, candidate, compare_split],
                         [compare_summary, deltas, confusion_diff, breakdown_deltas, flips, flip_player])

    @safe
    def listen(cand, event: gr.SelectData):
        _, clip_id, label, before, now = event.row_value
        view = wb.views.get(int(clip_id), run_id=cand, fmax_hz=SPOT_CHECK_FMAX_HZ)
        caption = (f"clip {clip_id}: label {html.escape(str(label))}; baseline said {html.escape(str(before))}, "
                   f"candidate says {html.escape(str(now))}")
        return f"<div style='margin-bottom:4px'>{caption}</div>{view.html}"

    flips.select(listen, candidate, flip_player)

    @safe
    def ask_rollback(request: gr.Request, name, why):
        """First step: say what would change; nothing is written until Confirm."""
        require_annotator(name, request)
        check_reason(why, action="a rollback")
        _, _, change = rollback_plan(wb.store)
        return gr.update(visible=True), f"<b>{html.escape(change)}.</b> Confirm to roll back."

    @safe
    def roll_back(request: gr.Request, name, why, *current):
        was, now = rollback(wb.store, actor=require_annotator(name, request), reason=why)
        note = f'<span class="em-message-ok">production rolled back from run {html.escape(was)} to run {html.escape(now)}</span>'
        return [note, "", gr.update(visible=False), *overview(*current, force=True)]

    rollback_button.click(ask_rollback, [annotator, rollback_reason], [rollback_confirm, rollback_change])
    rollback_no.click(lambda: gr.update(visible=False), None, rollback_confirm)
    rollback_yes.click(roll_back, [annotator, rollback_reason, *overview_inputs],
                       [history_message, rollback_reason, rollback_confirm, *overview_outputs])


def resume_button_update(wb: Workbench, run: dict[str, Any]) -> gr.Button:
    """Resume is offered for a cancelled or crashed (failed) training run that saved a resume
    point (finished an epoch) and has no unfinished job in the queue (one queued or resuming
    already): a button that could only be refused is not shown."""
    offered = (wb.jobs is not None and run["kind"] == "train" and run["status"] in RESUMABLE
               and trainer.saved_progress(run["run_dir"]) is not None
               and not any(job.run_id == run["id"] and not job.finished for job in wb.jobs.jobs()))
    return gr.Button(visible=offered)


def _plot(label: str, *, height: int, **layout: Any) -> gr.Image:
    """A run's PNG plot; its toolbar (fullscreen, download) sits in a strip above the picture
    (earmark.css, .em-plot), so it never covers the plot's title."""
    return gr.Image(label=label, show_label=False, type="filepath", height=height, interactive=False,
                    buttons=["fullscreen", "download"], elem_classes=["em-plot"], **layout)


# --- reading runs ---------------------------------------------------------------------------

def _signature(wb: Workbench) -> tuple:
    """Changes whenever a run is added or changes status, a gate report is written (after its
    run's status last changed), or production moves."""
    runs = wb.store.runs()
    gates = tuple(_gate_report_time(run_dir) for kind, run_dir in zip(runs.kind, runs.run_dir) if kind == "train")
    return (tuple(zip(runs.id, runs.status)), gates, len(wb.store.promotions()))


def _gate_report_time(run_dir: str) -> float | None:
    path = Path(run_dir) / GATES_DIR / GATE_REPORT_FILE
    return path.stat().st_mtime if path.is_file() else None


def _runs_frame(wb: Workbench) -> pd.DataFrame:
    runs = wb.store.runs()
    production = wb.store.production_run()
    rows = []
    for run in runs.itertuples():
        overall = _overall(wb, run.id, "test")
        report = gate_panel.load_report(wb, run.id) if run.kind == "train" else None
        gates = "-" if report is None else "pass" if report["passed"] else f"fail ({len(report['gates']['failed'])})"
        rows.append([run.id, run.kind, run.status, "\u2605 production" if run.id == production else "", gates,
                     _fmt(overall.get("accuracy")), _fmt(overall.get("unquarantined_accuracy")), _quarantine_share(overall),
                     _fmt(overall.get("f1_macro")), run.preset or "-",
                     "-" if pd.isna(run.manifest_decision_id) else int(run.manifest_decision_id),
                     run.parent_run_id or "-", f"{run.created_at:%Y-%m-%d %H:%M:%S}"])
    return pd.DataFrame(rows, columns=RUN_COLUMNS)


def _quarantine_share(overall: dict[str, float]) -> str:
    """'3 (2.5%)': the split's clips in open quarantine when the run froze them."""
    if overall.get("quarantined") is None:
        return "-"
    return f"{int(overall['quarantined'])} ({overall.get('quarantined_share', 0.0):.1%})"


def _overall(wb: Workbench, run_id: str, split: str) -> dict[str, float]:
    metrics = wb.store.run_metrics(run_id, split=split)
    return metrics[metrics.class_label.isna()].set_index("name")["value"].to_dict()


def _class_metrics(wb: Workbench, run_id: str, split: str) -> pd.DataFrame:
    metrics = wb.store.run_metrics(run_id, split=split)
    per_class = metrics[metrics.class_label.notna() & metrics.name.isin(CLASS_METRICS)]
    if per_class.empty:
        return pd.DataFrame({"": [f"run {run_id} has no metrics for the {split} split"]})
    table = per_class.pivot_table(index="class_label", columns="name", values="value", aggfunc="first")
    table = table.reindex(columns=[c for c in CLASS_METRICS if c in table.columns]).round(4)
    return table.reset_index().rename(columns={"class_label": "class", "average_precision": "AP"})


def _split_views(wb: Workbench, run: dict[str, Any], split: str) -> list[Any]:
    """Everything the selected run shows for one split: plots, per-class metrics, breakdowns."""
    breakdown_plot = Path(run["run_dir"]) / trainer.PLOTS_DIR / f"breakdowns_{split}.png"
    return [*_plots(run, split), _class_metrics(wb, run["id"], split), _breakdown_frame(wb, run["id"], split),
            _served(breakdown_plot) if breakdown_plot.is_file() else None]


def _breakdown_frame(wb: Workbench, run_id: str, split: str) -> pd.DataFrame:
    """Per metadata group: clips, accuracy and how far it sits from the split's accuracy."""
    rows = wb.store.run_breakdowns(run_id, split=split)
    if rows.empty:
        return pd.DataFrame({"": [f"run {run_id} has no metadata breakdowns for the {split} split (no metadata column "
                                  "splits its clips into two or more groups)"]})
    overall = _overall(wb, run_id, split).get("accuracy")
    return pd.DataFrame({
        "metadata": rows.column_name, "group": rows.group_name, "clips": rows.n, "accuracy": rows.accuracy.map(_fmt),
        "vs all clips": [("-" if overall is None else _signed(a - overall)) for a in rows.accuracy],
        "F1 macro": rows.f1_macro.map(_fmt)}, columns=BREAKDOWN_COLUMNS)


def _plots(run: dict[str, Any], split: str) -> list[str | None]:
    """The run's confusion matrix and reliability diagram for this split, and its training
    curves (None where the run has no such plot: an audit has no curves)."""
    folder = Path(run["run_dir"]) / trainer.PLOTS_DIR
    paths = [folder / f"confusion_{split}.png", folder / f"reliability_{split}.png", folder / "training_curves.png"]
    return [_served(path) if path.is_file() else None for path in paths]


def _served(path: Path) -> str:
    """A plot as Gradio may serve it: the run folder is not one of its paths (a session holds
    checkpoints and manifests), so the PNG is copied once per version of the file into this
    server's temporary folder. Passing the file, not a decoded image, spares a decode and a
    PNG re-encode per plot each time a run is opened."""
    return _copy_once(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1024)
def _copy_once(path: Path, mtime_ns: int) -> str:
    target = _copies_folder() / f"{hashlib.sha1(f'{path}:{mtime_ns}'.encode()).hexdigest()}.png"
    shutil.copyfile(path, target)
    return str(target)


@functools.cache
def _copies_folder() -> Path:
    return Path(tempfile.mkdtemp(prefix="earmark-plots-"))


def _title_html(run: dict[str, Any]) -> str:
    facts = [f"{run['kind']} run", run["status"], f"preset {run['preset']}" if run["preset"] else None,
             f"of run {run['parent_run_id']}" if run["parent_run_id"] else None,
             f"labels frozen at decision {run['manifest_decision_id']}" if run["manifest_decision_id"] is not None else None]
    error = (f"<div style='color:#922b21;margin-top:4px'>{html.escape(str(run['error']))}</div>"
             if isinstance(run["error"], str) and run["error"] else "")
    # A cancelled run is not evaluated (its plots stay empty): its own summary says what to do.
    summary = run["summary"] or {}
    unevaluated = (f"<div style='margin-top:4px'>{html.escape(str(summary['message']))}; or resume it.</div>"
                   if summary.get("evaluated") is False and summary.get("message") else "")
    return (f"<div style='font-size:15px'><b>run {html.escape(run['id'])}</b> &middot; "
            f"{' &middot; '.join(html.escape(str(f)) for f in facts if f)}</div>{error}{unevaluated}")


def _production_html(wb: Workbench) -> str:
    stack = production_history(wb.store)
    if not stack:
        return "<span style='font-size:15px'>No production model yet: promote a run whose gates pass.</span>"
    before = f" (before it: run {html.escape(stack[-2])}, the rollback target)" if len(stack) > 1 else ""
    return f"<span style='font-size:15px'>Production: <b>run {html.escape(stack[-1])}</b>{before}</span>"


def _history_frame(wb: Workbench) -> pd.DataFrame:
    history = wb.store.promotions()
    if history.empty:
        return pd.DataFrame(columns=HISTORY_COLUMNS)
    shown = history.reindex(columns=HISTORY_COLUMNS)
    shown["created_at"] = shown["created_at"].map(lambda t: f"{t:%Y-%m-%d %H:%M:%S}")
    return shown.fillna("")


def _compare_choices(wb: Workbench) -> list[tuple[str, str]]:
    """Training runs that finished with a checkpoint, newest first; production named as such."""
    runs = wb.store.runs(kind="train")
    production = wb.store.production_run()
    return [(f"{r.id}{' (production)' if r.id == production else ''}", r.id)
            for r in runs.itertuples() if r.status in ("succeeded", "cancelled")]


# --- comparing --------------------------------------------------------------------------------

def _comparison_summary(comparison: dict[str, Any]) -> str:
    overall = comparison["overall"]
    parts = [f"{name} {v['baseline']:.4f} &rarr; {v['candidate']:.4f} ({v['delta']:+.4f})"
             for name, v in overall.items() if isinstance(v.get("baseline"), (int, float)) and isinstance(v.get("candidate"), (int, float))]
    return (f"<div style='font-size:14px'><b>{html.escape(comparison['candidate_run_id'])}</b> against "
            f"<b>{html.escape(comparison['baseline_run_id'])}</b> on {comparison['n_clips']} {html.escape(comparison['split'])} clips: "
            f"{'; '.join(parts)}. Fixed {len(comparison['fixed'])} clip(s), broke {len(comparison['broken'])}.</div>")


def _delta_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[label, per["support"], _fmt(per["baseline_accuracy"]), _fmt(per["candidate_accuracy"]),
             _signed(per["accuracy_delta"]), _percent(per["accuracy_relative_change"]), _signed(per["f1_delta"])]
            for label, per in comparison["per_class"].items()]
    return pd.DataFrame(rows, columns=DELTA_COLUMNS)


def _breakdown_delta_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[column, group, g["n"], _fmt(g["baseline_accuracy"]), _fmt(g["candidate_accuracy"]), _signed(g["accuracy_delta"])]
            for column, groups in comparison["breakdowns"].items() for group, g in groups.items()]
    if not rows:
        return pd.DataFrame({"": ["no metadata column splits the compared clips into two or more groups"]})
    return pd.DataFrame(rows, columns=BREAKDOWN_DELTA_COLUMNS)


def _flip_frame(comparison: dict[str, Any]) -> pd.DataFrame:
    rows = [[kind, c["clip_id"], c["label"], c["baseline"], c["candidate"]]
            for kind, clips in (("broken", comparison["broken"]), ("fixed", comparison["fixed"])) for c in clips]
    return pd.DataFrame(rows, columns=FLIP_COLUMNS)


# --- downloads --------------------------------------------------------------------------------

def _export(wb: Workbench, run_id: str) -> list[str]:
    """The run's report (JSON), predictions (CSV) and, when it has one, checkpoint (zip), written
    to a fresh temporary folder (Gradio serves downloads from there, never from the session)."""
    run = wb.store.run(run_id)
    folder = Path(tempfile.mkdtemp(prefix=f"earmark-{run_id}-"))
    report = {"run": run, "metrics": wb.store.run_metrics(run_id).to_dict(orient="records"),
              "breakdowns": wb.store.run_breakdowns(run_id).to_dict(orient="records"),
              "gate_report": gate_panel.load_report(wb, run_id) if run["kind"] == "train" else None,
              "promotions": _history_frame(wb).query("run_id == @run_id").to_dict(orient="records")}
    paths = [folder / f"{run_id}-report.json"]
    paths[0].write_text(json.dumps(_plain(report), indent=2))
    predictions = wb.store.predictions(run_id)
    if predictions.empty:
        raise StoreError(f"run {run_id} has no predictions to download (status {run['status']})")
    predictions.assign(probs=predictions.probs.map(lambda p: json.dumps([round(float(x), 6) for x in p]))).to_csv(
        folder / f"{run_id}-predictions.csv", index=False)
    paths.append(folder / f"{run_id}-predictions.csv")
    checkpoint = checkpoint_dir(run["run_dir"])
    if checkpoint.is_dir():
        paths.append(Path(shutil.make_archive(str(folder / f"{run_id}-checkpoint"), "zip", checkpoint)))
    return [str(p) for p in paths]


def _plain(value: Any) -> Any:
    """JSON-ready: missing values (NaN, NaT, None) become null, times and numpy scalars plain."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or (not isinstance(value, str) and pd.api.types.is_scalar(value) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value.item() if hasattr(value, "item") else value


def _fmt(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{float(value):.4f}"


def _signed(value: Any) -> str:
    return "-" if value is None else f"{float(value):+.4f}"


def _percent(value: Any) -> str:
    return "-" if value is None else f"{float(value):+.1%}"
