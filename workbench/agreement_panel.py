"""The Review tab's double-annotation panel: set how many people answer each clip of a review
queue (2 or more: blind, disagreements to the adjudication queue), and see how well they agree
(per class and overall), whom they confuse with whom, cleanlab's quality score of each
annotator, and everyone's throughput (pipelines/double_annotation.py). Only full rounds are
counted, so nothing here shows an answer someone else has yet to give.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from typing import Any

import gradio as gr
import pandas as pd

from pipelines.double_annotation import AgreementReport, agreement_report, annotators_per_clip, set_annotators_per_clip
from pipelines.review_queue import SOURCES
from workbench.common import WIDE, message_html
from workbench.context import Workbench, current_tab, require_annotator, safe

PER_CLIP_CHOICES = [1, 2, 3, 4, 5]


@dataclass
class Layout:
    queue: gr.Dropdown
    per_clip: gr.Dropdown
    set_button: gr.Button
    refresh: gr.Button
    message: gr.HTML
    method: gr.HTML
    table: gr.Dataframe
    pairs: gr.Dataframe
    confusion: gr.Dataframe
    annotators: gr.Dataframe
    throughput: gr.Dataframe

    @property
    def views(self) -> list[gr.Component]:
        """What report_views fills, in its order."""
        return [self.method, self.table, self.pairs, self.confusion, self.annotators, self.throughput]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    wire(wb, layout(wb), annotator=annotator, tab=current_tab(), page=gr.context.Context.root_block)


def layout(wb: Workbench) -> Layout:
    with gr.Accordion("Double annotation and agreement", open=False, elem_id="em-agreement"):
        with gr.Row(equal_height=True):
            queue = gr.Dropdown(list(SOURCES), value="quarantine", label="review queue", scale=1, min_width=140)
            per_clip = gr.Dropdown(PER_CLIP_CHOICES, value=annotators_per_clip(wb.store, "quarantine"),
                                   label="annotators per clip (2 or more: blind, disagreements go to the adjudication "
                                         "queue)", scale=3, elem_id="em-agreement-per-clip")
            set_button = gr.Button("Set", scale=0, min_width=80)
            refresh = gr.Button("Refresh agreement", scale=0, min_width=160)
        message = gr.HTML(elem_id="em-agreement-message")
        method = gr.HTML(elem_id="em-agreement-method")
        table = gr.Dataframe(label="agreement per class (full rounds)", interactive=False, elem_id="em-agreement-table",
                             **WIDE)
        with gr.Row():
            pairs = gr.Dataframe(label="pairs of annotators", interactive=False, **WIDE)
            confusion = gr.Dataframe(label="confusion between the busiest pair (rows: first, columns: second)",
                                     interactive=False, **WIDE)
        with gr.Row():
            annotators = gr.Dataframe(label="annotator quality (cleanlab)", interactive=False, **WIDE)
            throughput = gr.Dataframe(label="throughput per person", interactive=False,
                                      elem_id="em-agreement-throughput", **WIDE)
    return Layout(queue=queue, per_clip=per_clip, set_button=set_button, refresh=refresh, message=message,
                  method=method, table=table, pairs=pairs, confusion=confusion, annotators=annotators,
                  throughput=throughput)


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component, tab: gr.Tab, page: gr.Blocks) -> None:
    views = safe(lambda: report_views(wb))
    ui.refresh.click(views, None, ui.views)
    for trigger in (page.load, tab.select):
        trigger(views, None, ui.views, show_progress="hidden")
    per_clip = safe(lambda queue: annotators_per_clip(wb.store, queue))
    ui.queue.change(per_clip, ui.queue, ui.per_clip)
    page.load(per_clip, ui.queue, ui.per_clip, show_progress="hidden")  # as set now, also from the CLI

    @safe
    def on_set(queue: str, per_clip: int, name: str, request: gr.Request) -> list[Any]:
        return set_mode(wb, queue, per_clip, require_annotator(name, request))

    ui.set_button.click(on_set, [ui.queue, ui.per_clip, annotator], [ui.message, *ui.views])


def set_mode(wb: Workbench, queue: str, per_clip: int | str, actor: str) -> list[Any]:
    """Set the queue's annotators per clip, signed by actor: [message, *report_views]."""
    text = set_annotators_per_clip(wb.store, queue=queue, annotators=int(per_clip), actor=actor)
    return [message_html(f"{text}. Load the queue again in the Review tab to see it."), *report_views(wb)]


def report_views(wb: Workbench) -> list[Any]:
    """The agreement report as the panel shows it: the consensus method, then the five tables."""
    report: AgreementReport = agreement_report(wb.store)
    confusion = report.confusion.reset_index() if not report.confusion.empty else report.confusion
    return [f"<p>Consensus and annotator quality: {html.escape(report.consensus_method)}.</p>",
            shown(report.table), shown(report.pairs), shown(confusion), shown(report.annotators),
            shown(report.throughput)]


def shown(frame: pd.DataFrame) -> pd.DataFrame:
    """A table for reading: numbers to three decimals, times to the minute, blanks for undefined."""
    if frame.empty:
        return pd.DataFrame({"": ["none yet: no clip has all its answers"]})
    out = frame.copy()
    for column in out.columns:
        if pd.api.types.is_float_dtype(out[column]):
            out[column] = out[column].map(lambda v: "" if pd.isna(v) else f"{v:.3f}")
        elif pd.api.types.is_datetime64_any_dtype(out[column]):
            out[column] = out[column].dt.strftime("%Y-%m-%d %H:%M")
    return out
