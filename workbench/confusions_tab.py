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
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd
from pandas.io.formats.style import Styler

from core import review
from core.plots import plot_confusion
from pipelines.confusions import CELL_COLUMNS, SPLITS, Confusion, class_metrics, confusion, overall_metrics
from pipelines.review_queue import default_run
from workbench.common import FREQUENCY_RANGES, history_html, message_html, run_choices, side_panel_html
from workbench.context import Workbench, require_annotator, safe

HEAT_MODES = {"clips": False, "share of true class": True}
CORNER = "true \\ predicted"
NO_CLIP = "<p style='color:#888'>Select a clip in the cell above to listen to it.</p>"
NO_CELL = "Select a cell of the matrix."
NO_RUN = "No finished run yet: train one in the Train tab."
MATRIX_HEADER_PX, MATRIX_ROW_PX = 120, 110   # the matrix's header and tallest row, with room to spare


@dataclass
class Layout:
    """The tab's components, so the wiring (and a reader) can name each one."""
    run: gr.Dropdown
    split: gr.Dropdown
    heat_mode: gr.Radio
    frequency: gr.Dropdown
    refresh: gr.Button
    overall: gr.Markdown
    heatmap: gr.Image
    matrix: gr.Dataframe
    metrics: gr.Dataframe
    cell_title: gr.Markdown
    cell_table: gr.Dataframe
    player: gr.HTML
    history: gr.HTML
    side: gr.HTML
    relabel_to: gr.Dropdown
    relabel_button: gr.Button
    reason: gr.Textbox
    quarantine_button: gr.Button
    message: gr.HTML
    classes: gr.State     # the run's classes, in matrix order
    cell: gr.State        # (true label, predicted label)
    clip: gr.State        # clip id shown in the player
    seen: gr.State        # the last decision id on that clip when it was shown

    @property
    def clip_view(self) -> list[gr.Component]:
        """What clip_outputs fills."""
        return [self.player, self.side, self.history, self.clip, self.seen]

    @property
    def show_outputs(self) -> list[gr.Component]:
        """What show_run fills."""
        return [self.heatmap, self.matrix, self.metrics, self.overall, self.classes, self.cell, self.cell_title,
                self.cell_table, *self.clip_view, self.message]

    @property
    def decide_outputs(self) -> list[gr.Component]:
        """What relabel_clip and quarantine_clip fill."""
        return [self.message, self.reason, self.matrix, self.cell_title, self.cell_table, *self.clip_view]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    plots_dir = Path(tempfile.mkdtemp(prefix="earmark-confusions-"))  # Gradio serves files from the temp dir
    wire(wb, layout(wb), annotator=annotator, plots_dir=plots_dir)


def layout(wb: Workbench) -> Layout:
    with gr.Row(equal_height=True):
        run = gr.Dropdown(run_choices(wb.store), value=default_run(wb.store), label="run (production by default)", scale=3)
        split = gr.Dropdown(list(SPLITS), value="test", label="split", scale=1)
        heat_mode = gr.Radio(list(HEAT_MODES), value="clips", label="heat map shows", scale=2)
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-4 kHz", label="frequency range", scale=1)
        refresh = gr.Button("Refresh runs", scale=1)
    overall = gr.Markdown(elem_id="em-conf-overall")
    with gr.Row():
        with gr.Column(scale=4):
            heatmap = gr.Image(label="confusion matrix", show_label=False, type="filepath", interactive=False, height=520,
                               buttons=["download", "fullscreen"], elem_id="em-conf-heatmap")
        with gr.Column(scale=7):  # the table needs the room: its headers and cells wrap
            matrix = gr.Dataframe(label="click a cell to list its clips (rows: true, columns: predicted; "
                                        "'stale' = clips relabelled since this run)", interactive=False, wrap=True,
                                  elem_id="em-conf-matrix")
    # Full width: beside the heat map its dozen columns were squeezed until they clipped.
    metrics = gr.Dataframe(label="per-class metrics on this split (Δ = this run - production)", interactive=False,
                           wrap=True, elem_id="em-conf-metrics")
    cell_title = gr.Markdown(NO_CELL, elem_id="em-conf-cell-title")
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
    return Layout(run=run, split=split, heat_mode=heat_mode, frequency=frequency, refresh=refresh, overall=overall,
                  heatmap=heatmap, matrix=matrix, metrics=metrics, cell_title=cell_title, cell_table=cell_table,
                  player=player, history=history, side=side, relabel_to=relabel_to, relabel_button=relabel_button,
                  reason=reason, quarantine_button=quarantine_button, message=message, classes=gr.State([]),
                  cell=gr.State(None), clip=gr.State(None), seen=gr.State(None))


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component, plots_dir: Path) -> None:
    """Events to handlers: each handler refuses by raising, and `safe` turns that into one toast
    that leaves every panel as it was."""
    view = [ui.run, ui.split, ui.heat_mode]
    show = safe(lambda run_id, split_name, mode: show_run(wb, plots_dir, run_id, split_name, mode))
    refresh = safe(lambda run_id, split_name, mode: refresh_runs(wb, plots_dir, run_id, split_name, mode))
    for trigger in (ui.run.change, ui.split.change):
        trigger(show, view, ui.show_outputs)
    ui.heat_mode.change(safe(lambda run_id, split_name, mode: redraw(wb, plots_dir, run_id, split_name, mode)),
                        view, ui.heatmap)
    ui.refresh.click(refresh, view, [ui.run, *ui.show_outputs])
    tab = gr.context.get_render_context()
    if isinstance(tab, gr.Tab):  # opening the tab shows new runs and the latest stale marks
        tab.select(refresh, view, [ui.run, *ui.show_outputs])

    @safe
    def on_cell(run_id, split_name, labels, event: gr.SelectData):
        return pick_cell(wb, run_id, split_name, labels, event.index)

    @safe
    def on_clip(run_id, rows, freq, event: gr.SelectData):
        return pick_clip(wb, run_id, rows, freq, event.index[0])

    ui.matrix.select(on_cell, [ui.run, ui.split, ui.classes], [ui.cell, ui.cell_title, ui.cell_table, *ui.clip_view,
                                                               ui.message])
    ui.cell_table.select(on_clip, [ui.run, ui.cell_table, ui.frequency], [*ui.clip_view, ui.message])
    ui.frequency.change(safe(lambda run_id, clip_id, freq: clip_outputs(wb, run_id, clip_id, freq)),
                        [ui.run, ui.clip, ui.frequency], ui.clip_view)

    @safe
    def on_relabel(request: gr.Request, name, run_id, split_name, chosen, clip_id, seen_id, freq, note, label):
        return relabel_clip(wb, request, name, run_id, split_name, chosen, clip_id, seen_id, freq, note, label)

    @safe
    def on_quarantine(request: gr.Request, name, run_id, split_name, chosen, clip_id, seen_id, freq, reason):
        return quarantine_clip(wb, request, name, run_id, split_name, chosen, clip_id, seen_id, freq, reason)

    shown = [annotator, ui.run, ui.split, ui.cell, ui.clip, ui.seen, ui.frequency, ui.reason]
    ui.relabel_button.click(on_relabel, [*shown, ui.relabel_to], ui.decide_outputs)
    ui.quarantine_button.click(on_quarantine, shown, ui.decide_outputs)


# --- handlers: plain values in, the outputs' new values out; a refusal raises ValueError -------
def show_run(wb: Workbench, plots_dir: Path, run_id: str | None, split_name: str, mode: str) -> list[Any]:
    """Layout.show_outputs for a run and split: the heat map, the clickable matrix, the metrics,
    the overall line, the run's classes; no cell and no clip chosen."""
    if not run_id:
        return [None, pd.DataFrame(), pd.DataFrame(), NO_RUN, [], None, *cell_outputs(None, None),
                *clip_outputs(wb), ""]
    conf = confusion(wb.store, run_id, split=split_name)
    production = wb.store.production_run()
    return [_heatmap(conf, mode, plots_dir), _matrix_table(conf),
            _metrics_view(class_metrics(wb.store, run_id, split=split_name, baseline_run_id=production)),
            _overall_text(wb, conf, production), conf.labels, None, *cell_outputs(conf, None), *clip_outputs(wb), ""]


def redraw(wb: Workbench, plots_dir: Path, run_id: str | None, split_name: str, mode: str) -> str | None:
    """The heat map's PNG path in the chosen mode (None without a run)."""
    return _heatmap(confusion(wb.store, run_id, split=split_name), mode, plots_dir) if run_id else None


def refresh_runs(wb: Workbench, plots_dir: Path, run_id: str | None, split_name: str, mode: str) -> list[Any]:
    """The run list as the store has it now (the chosen run kept while it exists), then show_run."""
    choices = run_choices(wb.store)
    chosen = run_id if run_id in [value for _, value in choices] else default_run(wb.store)
    return [gr.Dropdown(choices=choices, value=chosen), *show_run(wb, plots_dir, chosen, split_name, mode)]


def pick_cell(wb: Workbench, run_id: str, split_name: str, labels: list[str], index: tuple[int, int]) -> list[Any]:
    """A click on matrix cell (row, column): the cell, its title and clips; the player is emptied."""
    row, col = index
    if col == 0:
        raise ValueError("Click a number in the matrix (a true/predicted cell), not the class name.")
    chosen = (labels[row], labels[col - 1])
    return [chosen, *cell_outputs(confusion(wb.store, run_id, split=split_name), chosen), *clip_outputs(wb), ""]


def pick_clip(wb: Workbench, run_id: str, rows: pd.DataFrame, freq: str, row: int) -> list[Any]:
    """A click on row `row` of the cell's clip table: that clip in the player, the message cleared."""
    return [*clip_outputs(wb, run_id, int(rows.iloc[row]["clip_id"]), freq), ""]


def relabel_clip(wb: Workbench, request: gr.Request | None, name: str | None, run_id: str, split_name: str,
                 chosen: tuple[str, str] | None, clip_id: int | None, seen_id: int | None, freq: str, note: str | None,
                 label: str | None) -> list[Any]:
    """Relabel the shown clip (refused when another annotator decided it since it was shown);
    Layout.decide_outputs with the stale marks and the clip refreshed."""
    who = _signer(request, name, clip_id)
    if not label:
        raise ValueError("Choose a class in 'relabel to' first.")
    decision = review.relabel(wb.store, int(clip_id), label=label, annotator=who, note=(note or "").strip() or None,
                              seen_decision_id=seen_id)
    return _decided(wb, f"clip {clip_id}: relabelled {label} (decision {decision})", run_id, split_name, chosen,
                    clip_id, freq)


def quarantine_clip(wb: Workbench, request: gr.Request | None, name: str | None, run_id: str, split_name: str,
                    chosen: tuple[str, str] | None, clip_id: int | None, seen_id: int | None, freq: str,
                    reason: str | None) -> list[Any]:
    """Send the shown clip to the quarantine queue with the reason and the cell it came from."""
    who = _signer(request, name, clip_id)
    reason = (reason or "").strip()
    if not reason:
        raise ValueError("Write a reason first: the quarantine queue shows it to the annotator.")
    where = f" [confusion cell of run {run_id}: true {chosen[0]}, predicted {chosen[1]}]" if chosen else ""
    decision = review.send_to_quarantine(wb.store, int(clip_id), reason=reason + where, annotator=who,
                                         method="confusion")
    return _decided(wb, f"clip {clip_id}: sent to the quarantine queue (decision {decision})", run_id, split_name,
                    chosen, clip_id, freq)


def cell_outputs(conf: Confusion | None, chosen: tuple[str, str] | None) -> list[Any]:
    """The cell's title and its clips (CELL_COLUMNS), or the prompt to choose one."""
    if not chosen:
        return [NO_CELL, pd.DataFrame(columns=CELL_COLUMNS)]
    rows = conf.cell(*chosen)
    stale = int((rows.stale != "").sum())
    title = (f"**true {html.escape(chosen[0])} → predicted {html.escape(chosen[1])}**: {len(rows)} clips"
             + (f", {stale} relabelled since this run (stale)" if stale else ""))
    return [title, rows]


def clip_outputs(wb: Workbench, run_id: str | None = None, clip_id: int | None = None, freq: str = "full") -> list[Any]:
    """Layout.clip_view: player, side panel, history, clip id, the last decision id seen (all
    empty without a clip)."""
    if clip_id is None:
        return [NO_CLIP, "", "", None, None]
    view = wb.views.get(int(clip_id), run_id=run_id or None, fmax_hz=FREQUENCY_RANGES[freq])
    return [view.html, side_panel_html(view), history_html(view.history), int(clip_id), view.last_decision_id]


def _signer(request: gr.Request | None, name: str | None, clip_id: int | None) -> str:
    if clip_id is None:
        raise ValueError("Select a clip in a cell first.")
    return require_annotator(name, request)


def _decided(wb: Workbench, text: str, run_id: str, split_name: str, chosen: tuple[str, str] | None, clip_id: int,
             freq: str) -> list[Any]:
    conf = confusion(wb.store, run_id, split=split_name)
    return [message_html(text), "", _matrix_table(conf),
            *cell_outputs(conf, chosen), *clip_outputs(wb, run_id, clip_id, freq)]


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
    """The clickable matrix, every row and column in view: the class-name column a fifth of the
    width and the cells sharing the rest, rounded down so the widths never add up to more than the
    table (a pixel over gives a scroll bar that hides the last row), and a height that fits every
    row at its tallest ('n (share%) · stale n' wraps to four lines) so the table never scrolls."""
    cell = f"{math.floor(800 / len(conf.labels)) / 10}%"
    return gr.Dataframe(value=_matrix_view(conf), column_widths=["20%"] + [cell] * len(conf.labels),
                        max_height=MATRIX_HEADER_PX + MATRIX_ROW_PX * len(conf.labels))


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
