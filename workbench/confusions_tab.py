"""Confusions: the researcher's tab. A run's confusion matrix, its per-class metrics against
production, and the clips behind each cell, which can be relabelled or quarantined on the spot.

The heat map (core.plots, axes "true" and "predicted") is a picture; beside it the same matrix
is a table whose cells can be clicked, because a picture cannot say which cell was clicked
reliably. Cells holding clips whose label changed since the run are marked "stale": the run's
numbers no longer describe the current labels there. Relabel and quarantine are the same
decisions, with the same log and conflict check, as in Review.
"""
from __future__ import annotations

import html
import tempfile
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pandas.io.formats.style import Styler

from core import review
from core.plots import plot_confusion
from pipelines.confusions import CELL_COLUMNS, SPLITS, Confusion, class_metrics, confusion, overall_metrics
from pipelines.review_queue import default_run
from workbench.common import FREQUENCY_RANGES, history_html, run_choices, side_panel_html
from workbench.context import Workbench, require_annotator, safe

HEAT_MODES = {"clips": False, "share of true class": True}
CORNER = "true \\ predicted"
NO_CLIP = "<p style='color:#888'>Select a clip in the cell above to listen to it.</p>"


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    plots_dir = Path(tempfile.mkdtemp(prefix="earmark-confusions-"))  # Gradio serves files from the temp dir
    classes = gr.State([])
    cell = gr.State(None)          # (true label, predicted label)
    clip = gr.State(None)          # clip id shown in the player
    seen = gr.State(None)          # the last decision id on that clip when it was shown

    with gr.Row(equal_height=True):
        run = gr.Dropdown(run_choices(wb.store), value=default_run(wb.store), label="run (production by default)", scale=3)
        split = gr.Dropdown(list(SPLITS), value="test", label="split", scale=1)
        heat_mode = gr.Radio(list(HEAT_MODES), value="clips", label="heat map shows", scale=2)
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-4 kHz", label="frequency range", scale=1)
        refresh = gr.Button("Refresh runs", scale=1)
    overall = gr.Markdown(elem_id="em-conf-overall")
    with gr.Row():
        with gr.Column(scale=5):
            heatmap = gr.Image(label="confusion matrix", show_label=False, type="filepath", interactive=False, height=520,
                               buttons=["download", "fullscreen"], elem_id="em-conf-heatmap")
        with gr.Column(scale=6):
            matrix = gr.Dataframe(label="click a cell to list its clips (rows: true, columns: predicted; "
                                        "'stale' = clips relabelled since this run)", interactive=False, wrap=True,
                                  elem_id="em-conf-matrix")
            metrics = gr.Dataframe(label="per-class metrics on this split (Δ = this run - production)", interactive=False,
                                   wrap=True, elem_id="em-conf-metrics")
    cell_title = gr.Markdown("Select a cell of the matrix.", elem_id="em-conf-cell-title")
    cell_table = gr.Dataframe(headers=CELL_COLUMNS, label="clips in the cell, most confident first (select one to play it)",
                              interactive=False, max_height=300, wrap=True, elem_id="em-conf-cell")
    with gr.Row():
        with gr.Column(scale=3):
            player = gr.HTML(NO_CLIP, elem_id="em-conf-player")
            history = gr.HTML()
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):
                relabel_to = gr.Dropdown(wb.labels(), value=None, label="relabel to", scale=3, elem_id="em-conf-relabel-to")
                relabel_button = gr.Button("Relabel", elem_id="em-conf-relabel", scale=1)
            reason = gr.Textbox(label="reason (needed to quarantine; saved as the note of a relabel)", lines=1,
                                elem_id="em-conf-reason")
            quarantine_button = gr.Button("Send to quarantine queue", elem_id="em-conf-quarantine")
            message = gr.HTML(elem_id="em-conf-message")
            side = gr.HTML()

    def cell_outputs(conf: Confusion, chosen: tuple[str, str] | None) -> list[Any]:
        if not chosen:
            return ["Select a cell of the matrix.", pd.DataFrame(columns=CELL_COLUMNS)]
        rows = conf.cell(*chosen)
        stale = int((rows.stale != "").sum())
        title = (f"**true {html.escape(chosen[0])} → predicted {html.escape(chosen[1])}**: {len(rows)} clips"
                 + (f", {stale} relabelled since this run (stale)" if stale else ""))
        return [title, rows]

    def clip_outputs(run_id: str | None = None, clip_id: int | None = None, freq: str = "full") -> list[Any]:
        """player, side panel, history, clip id, last decision id seen (all empty without a clip)."""
        if clip_id is None:
            return [NO_CLIP, "", "", None, None]
        view = wb.views.get(int(clip_id), run_id=run_id or None, fmax_hz=FREQUENCY_RANGES[freq])
        return [view.html, side_panel_html(view), history_html(view.history), int(clip_id), view.last_decision_id]

    clip_view = [player, side, history, clip, seen]

    @safe
    def show_run(run_id, split_name, mode):
        if not run_id:
            return [None, pd.DataFrame(), pd.DataFrame(), "No finished run yet: train one in the Train tab.", [],
                    None, *cell_outputs(None, None), *clip_outputs(), ""]
        conf = confusion(wb.store, run_id, split=split_name)
        production = wb.store.production_run()
        return [_heatmap(conf, mode, plots_dir), _matrix_table(conf),
                _metrics_view(class_metrics(wb.store, run_id, split=split_name, baseline_run_id=production)),
                _overall_text(wb, conf, production), conf.labels, None, *cell_outputs(conf, None),
                *clip_outputs(), ""]

    show_outputs = [heatmap, matrix, metrics, overall, classes, cell, cell_title, cell_table, *clip_view, message]
    for trigger in (run.change, split.change):
        trigger(show_run, [run, split, heat_mode], show_outputs)
    @safe
    def redraw(run_id, split_name, mode):
        return _heatmap(confusion(wb.store, run_id, split=split_name), mode, plots_dir) if run_id else None

    heat_mode.change(redraw, [run, split, heat_mode], heatmap)

    @safe
    def refresh_runs(run_id, split_name, mode):
        choices = run_choices(wb.store)
        ids = [value for _, value in choices]
        chosen = run_id if run_id in ids else default_run(wb.store)
        return [gr.Dropdown(choices=choices, value=chosen), *show_run(chosen, split_name, mode)]

    refresh.click(refresh_runs, [run, split, heat_mode], [run, *show_outputs])
    tab = gr.context.get_render_context()
    if isinstance(tab, gr.Tab):  # opening the tab shows new runs and the latest stale marks
        tab.select(refresh_runs, [run, split, heat_mode], [run, *show_outputs])

    @safe
    def pick_cell(run_id, split_name, labels, event: gr.SelectData):
        row, col = event.index
        if col == 0:
            raise ValueError("Click a number in the matrix (a true/predicted cell), not the class name.")
        chosen = (labels[row], labels[col - 1])
        conf = confusion(wb.store, run_id, split=split_name)
        return [chosen, *cell_outputs(conf, chosen), *clip_outputs(), ""]

    matrix.select(pick_cell, [run, split, classes], [cell, cell_title, cell_table, *clip_view, message])

    @safe
    def pick_clip(run_id, rows, freq, event: gr.SelectData):
        clip_id = int(rows.iloc[event.index[0]]["clip_id"])
        return [*clip_outputs(run_id, clip_id, freq), ""]

    cell_table.select(pick_clip, [run, cell_table, frequency], [*clip_view, message])
    frequency.change(safe(lambda run_id, clip_id, freq: clip_outputs(run_id, clip_id, freq)), [run, clip, frequency], clip_view)

    def decide(action):
        """Record a decision on the shown clip, then refresh the stale marks and the clip's state."""
        @safe
        def handler(request: gr.Request, name, run_id, split_name, chosen, clip_id, seen_id, freq, reason_text, *extra):
            if clip_id is None:
                raise ValueError("Select a clip in a cell first.")
            who = require_annotator(name, request)
            text = action(int(clip_id), who, seen_id, (reason_text or "").strip(), run_id, chosen, *extra)
            conf = confusion(wb.store, run_id, split=split_name)
            return [f'<span class="em-message-ok">{html.escape(text)}</span>', "", _matrix_table(conf),
                    *cell_outputs(conf, chosen), *clip_outputs(run_id, clip_id, freq)]
        return handler

    common = [annotator, run, split, cell, clip, seen, frequency, reason]
    decide_outputs = [message, reason, matrix, cell_title, cell_table, *clip_view]
    relabel_button.click(decide(lambda clip_id, who, seen_id, note, run_id, chosen, label: _relabel(
        wb, clip_id, label, who, seen_id, note)), common + [relabel_to], decide_outputs)
    quarantine_button.click(decide(lambda clip_id, who, seen_id, note, run_id, chosen: _quarantine(
        wb, clip_id, who, note, run_id, chosen)), common, decide_outputs)


def _relabel(wb: Workbench, clip_id: int, label: str | None, who: str, seen_id: int | None, note: str) -> str:
    if not label:
        raise ValueError("Choose a class in 'relabel to' first.")
    decision = review.relabel(wb.store, clip_id, label=label, annotator=who, note=note or None, seen_decision_id=seen_id)
    return f"clip {clip_id}: relabelled {label} (decision {decision})"


def _quarantine(wb: Workbench, clip_id: int, who: str, reason: str, run_id: str, chosen: tuple[str, str] | None) -> str:
    if not reason:
        raise ValueError("Write a reason first: the quarantine queue shows it to the annotator.")
    where = f" [confusion cell of run {run_id}: true {chosen[0]}, predicted {chosen[1]}]" if chosen else ""
    decision = review.send_to_quarantine(wb.store, clip_id, reason=reason + where, annotator=who, method="confusion")
    return f"clip {clip_id}: sent to the quarantine queue (decision {decision})"


def _heatmap(conf: Confusion, mode: str, folder: Path) -> str:
    """The matrix as a PNG (core.plots); runs never change, so each picture is drawn once."""
    normalized = HEAT_MODES[mode]
    path = folder / f"{conf.run_id}-{conf.split}-{'share' if normalized else 'clips'}.png"
    if not path.exists():
        values = conf.normalized if normalized else conf.counts
        what = "share of each true class" if normalized else "clips"
        plot_confusion(path, matrix=values.to_numpy(), labels=conf.labels, normalized=normalized,
                       title=f"{conf.split} split, {what}")
    return str(path)


def _matrix_table(conf: Confusion) -> gr.Dataframe:
    """The clickable matrix: the class-name column a quarter of the width, the cells sharing the rest."""
    cell = f"{76 / len(conf.labels):.1f}%"
    return gr.Dataframe(value=_matrix_view(conf), column_widths=["24%"] + [cell] * len(conf.labels))


def _matrix_view(conf: Confusion) -> Styler:
    """Cells read 'count (share%)', plus 'stale n' where clips were relabelled since the run;
    the diagonal is green, mistakes are shaded red by their share, stale cells are amber."""
    share = conf.normalized
    text = pd.DataFrame(index=conf.labels, columns=conf.labels, dtype=object)
    styles = pd.DataFrame("", index=conf.labels, columns=conf.labels)
    for true in conf.labels:
        for predicted in conf.labels:
            count, stale = int(conf.counts.at[true, predicted]), int(conf.stale.at[true, predicted])
            fraction = float(share.at[true, predicted])
            text.at[true, predicted] = f"{count} ({fraction:.0%})" + (f" · stale {stale}" if stale else "") if count else "0"
            if stale:
                styles.at[true, predicted] = "background-color: #fde68a; font-weight: 600"
            elif true == predicted and count:
                styles.at[true, predicted] = f"background-color: rgba(34, 197, 94, {0.15 + 0.5 * fraction:.2f})"
            elif count:
                styles.at[true, predicted] = f"background-color: rgba(239, 68, 68, {0.12 + 0.6 * fraction:.2f})"
    # A zero-width space after each underscore lets long class names wrap there, not mid-word.
    headers = {label: label.replace("_", "_\u200b") for label in conf.labels}
    table = text.reset_index().rename(columns={"index": CORNER, **headers})
    styles = styles.reset_index().rename(columns={"index": CORNER, **headers}).assign(**{CORNER: "font-weight: 600"})
    return table.style.apply(lambda _: styles, axis=None)


def _metrics_view(frame: pd.DataFrame) -> Styler | pd.DataFrame:
    """Three decimals; deltas signed, regressions red and improvements green."""
    if frame.empty:
        return pd.DataFrame({"note": ["no per-class metrics were recorded for this split (pick test, val or train)"]})
    deltas = [c for c in frame.columns if c.startswith("Δ")]

    def colour(value: Any) -> str:
        if pd.isna(value) or value == 0:
            return ""
        return "color: #b91c1c; font-weight: 600" if value < 0 else "color: #15803d"

    formats = {c: "{:.3f}" for c in frame.columns if c not in ("class", "support", *deltas)}
    formats.update({c: "{:+.3f}" for c in deltas})
    return frame.style.format(formats, na_rep="–").map(colour, subset=deltas).hide(axis="index")


def _overall_text(wb: Workbench, conf: Confusion, production: str | None) -> str:
    values = overall_metrics(wb.store, conf.run_id, split=conf.split, baseline_run_id=production)
    parts = []
    for title, (value, delta) in values.items():
        if value is not None:
            parts.append(f"{title} **{value:.3f}**" + (f" ({delta:+.3f})" if delta is not None else ""))
    if production is None:
        against = "no production run yet: deltas appear once a run is promoted"
    elif production == conf.run_id:
        against = "this is the production run"
    else:
        against = f"deltas against production `{production}`"
    clips = int(conf.counts.to_numpy().sum())
    stale = int(conf.stale.to_numpy().sum())
    return (f"Run `{conf.run_id}`, **{conf.split}** split, {clips} clips: " + (", ".join(parts) or "no overall metrics recorded")
            + f" · {against}" + (f" · **{stale} clips relabelled since this run** (stale cells in amber)" if stale else ""))
