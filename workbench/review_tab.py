"""Review: the annotator's tab. A queue of clips to listen to, the clip view, and decisions by key.

Every action is a decision in the log (core.review); after one, the next clip loads by itself.
Decisions carry the last decision id the annotator saw for the clip, so a clip decided in the
meantime by someone else is reported instead of silently overwritten.
"""
from __future__ import annotations

import html
from typing import Any

import gradio as gr
import pandas as pd

from core import review
from pipelines.review_queue import SOURCES, STATUSES, build_queue, default_run, review_counts
from workbench.common import FREQUENCY_RANGES, history_html, run_choices, side_panel_html
from workbench.context import Workbench, require_annotator, safe

KEYS_HELP = """<div class="em-keys">
<b>Keys</b>: <kbd>1</kbd>-<kbd>9</kbd> tag &nbsp; <kbd>J</kbd>/<kbd>&rarr;</kbd> next &nbsp; <kbd>K</kbd>/<kbd>&larr;</kbd> previous &nbsp;
<kbd>U</kbd> undo &nbsp; <kbd>X</kbd> exclude &nbsp; <kbd>Q</kbd> keep quarantined &nbsp; <kbd>Space</kbd> play/pause &nbsp;
<kbd>R</kbd> replay &nbsp; <kbd>[</kbd>/<kbd>]</kbd> speed &nbsp; <kbd>L</kbd> loop &nbsp; click the spectrogram to seek</div>"""


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    rules = wb.store.rules()
    runs = run_choices(wb.store)
    queue_ids = gr.State([])
    position = gr.State(0)
    seen = gr.State(None)

    with gr.Row(equal_height=True):
        source = gr.Dropdown(list(SOURCES), value="quarantine", label="queue", scale=1)
        status = gr.Dropdown(list(STATUSES), value="open", label="status", scale=1)
        label_filter = gr.Dropdown([""] + wb.labels(), value="", label="class", scale=1)
        reason_filter = gr.Textbox(label="reason contains", scale=1)
        annotator_filter = gr.Textbox(label="decided by", scale=1)
        run = gr.Dropdown(runs, value=default_run(wb.store), label="predictions of run", scale=2)
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-4 kHz", label="frequency range", scale=1)
        refresh = gr.Button("Load queue", variant="secondary", scale=1)
    with gr.Row():
        with gr.Column(scale=3):
            counter = gr.HTML(elem_id="em-review-counter")
            player = gr.HTML(elem_id="em-review-player")
            history = gr.HTML(elem_id="em-review-history")
        with gr.Column(scale=2):
            with gr.Row():
                tag_buttons = [gr.Button(f"{rule.hotkey or ''}  {rule.tag}", elem_id=f"em-tag-{rule.hotkey}" if rule.hotkey else None,
                                         size="sm", min_width=120) for rule in rules]
            with gr.Row(equal_height=True):
                relabel_to = gr.Dropdown(wb.labels(), label="relabel to", scale=3)
                relabel_button = gr.Button("Relabel", size="sm", scale=1)
            with gr.Row():
                exclude_button = gr.Button("X  exclude", elem_id="em-exclude", size="sm")
                keep_button = gr.Button("Q  keep quarantined", elem_id="em-keep", size="sm")
                undo_button = gr.Button("U  undo my last", elem_id="em-undo", size="sm")
            note = gr.Textbox(label="note (saved with the next decision)", lines=1)
            with gr.Row():
                prev_button = gr.Button("\u2190 K  previous", elem_id="em-prev", size="sm")
                next_button = gr.Button("next  J \u2192", elem_id="em-next", size="sm")
            message = gr.HTML(elem_id="em-review-message")
            side = gr.HTML()
            gr.HTML(KEYS_HELP)
    queue_table = gr.Dataframe(label="queue (select a row to open it)", interactive=False, max_height=320, wrap=True)

    view_outputs = [player, side, history, counter, seen, position]

    def show(ids: list[int], pos: int, run_id: str | None, freq: str, note_text: str = "") -> list[Any]:
        counts = review_counts(wb.store)
        header = (f'<span class="em-counter">reviewed {counts["reviewed"]} / {counts["total"]} quarantined '
                  f'&middot; {counts["open"]} open</span>')
        if not ids:
            return ["<p>Nothing in this queue. Change the filters, or run an audit to fill the quarantine.</p>",
                    "", "", header, None, 0]
        pos = max(0, min(pos, len(ids) - 1))
        view = wb.views.get(int(ids[pos]), run_id=run_id or None, fmax_hz=FREQUENCY_RANGES[freq])
        wb.views.prefetch([int(c) for c in ids[pos + 1:pos + 3]], run_id=run_id or None, fmax_hz=FREQUENCY_RANGES[freq])
        header += f" &nbsp; clip {pos + 1} of {len(ids)} in this queue"
        return [view.html, side_panel_html(view), history_html(view.history), header,
                view.last_decision_id, pos]

    @safe
    def load(src, st, lab, rea, ann, run_id, freq):
        queue = build_queue(wb.store, source=src, run_id=run_id or None, label=lab or None, reason=rea or None,
                            status=st, annotator=ann or None)
        ids = queue.clip_id.astype(int).tolist()
        return [ids, _table(queue), *show(ids, 0, run_id, freq)]

    load_inputs = [source, status, label_filter, reason_filter, annotator_filter, run, frequency]
    load_outputs = [queue_ids, queue_table, *view_outputs]
    for trigger in (refresh.click, source.change, status.change, label_filter.change, run.change):
        trigger(load, load_inputs, load_outputs)
    frequency.change(safe(lambda ids, pos, run_id, freq: show(ids, pos, run_id, freq)), [queue_ids, position, run, frequency], view_outputs)

    def refreshed_table(ids: list[int], src: str, run_id: str | None) -> pd.DataFrame:
        """The queue's rows in the same order, with their state after the latest decisions."""
        queue = build_queue(wb.store, source=src, run_id=run_id or None, status="all").set_index("clip_id")
        return _table(queue.reindex([i for i in ids if i in queue.index]).reset_index())

    def decide(action):
        """Wrap an action so it records, reports, and moves on to the next clip."""
        @safe
        def handler(name, ids, pos, seen_id, run_id, freq, note_text, src, *extra):
            if not ids:
                raise ValueError("The queue is empty: load a queue first.")
            who = require_annotator(name)
            clip_id = int(ids[pos])
            text = action(clip_id, who, seen_id, note_text or None, *extra)
            outputs = show(ids, pos + 1 if pos + 1 < len(ids) else pos, run_id, freq)
            return [f'<span class="em-message-ok">{html.escape(text)}</span>', "", refreshed_table(ids, src, run_id), *outputs]
        return handler

    common = [annotator, queue_ids, position, seen, run, frequency, note, source]
    decide_outputs = [message, note, queue_table, *view_outputs]
    for rule, button in zip(rules, tag_buttons):
        button.click(decide(lambda clip, who, seen_id, text, tag=rule.tag: _tag(wb, clip, tag, who, seen_id, text)),
                     common, decide_outputs)
    relabel_button.click(decide(lambda clip, who, seen_id, text, label: _relabel(wb, clip, label, who, seen_id, text)),
                         common + [relabel_to], decide_outputs)
    exclude_button.click(decide(lambda clip, who, seen_id, text: (
        review.exclude(wb.store, clip, annotator=who, note=text, seen_decision_id=seen_id), f"clip {clip}: excluded")[1]),
        common, decide_outputs)
    keep_button.click(decide(lambda clip, who, seen_id, text: (
        review.keep_quarantined(wb.store, clip, annotator=who, note=text, seen_decision_id=seen_id),
        f"clip {clip}: kept in quarantine")[1]), common, decide_outputs)

    @safe
    def undo(name, ids, pos, run_id, freq, src):
        who = require_annotator(name)
        last = review.last_undoable(wb.store, annotator=who)
        if last is None:
            raise ValueError(f"{who} has no decision left to undo.")
        review.undo(wb.store, int(last["id"]), annotator=who)
        clip_id = int(last["clip_id"])
        ids = list(ids)
        if clip_id not in ids:
            ids.insert(pos, clip_id)
        text = f"undid decision {last['id']} ({last['action']} {last['tag'] or last['new_label'] or ''}) on clip {clip_id}"
        return [f'<span class="em-message-ok">{html.escape(text)}</span>', ids, refreshed_table(ids, src, run_id),
                *show(ids, ids.index(clip_id), run_id, freq)]

    undo_button.click(undo, [annotator, queue_ids, position, run, frequency, source], [message, queue_ids, queue_table, *view_outputs])
    prev_button.click(safe(lambda ids, pos, run_id, freq: show(ids, pos - 1, run_id, freq)), [queue_ids, position, run, frequency], view_outputs)
    next_button.click(safe(lambda ids, pos, run_id, freq: show(ids, pos + 1, run_id, freq)), [queue_ids, position, run, frequency], view_outputs)

    def pick(ids, run_id, freq, event: gr.SelectData):
        return show(ids, event.index[0], run_id, freq)

    queue_table.select(safe(pick), [queue_ids, run, frequency], view_outputs)
    return load, load_inputs, load_outputs


def _tag(wb: Workbench, clip_id: int, tag: str, who: str, seen_id: int | None, note: str | None) -> str:
    review.apply_tag(wb.store, clip_id, tag=tag, annotator=who, note=note, seen_decision_id=seen_id)
    state = wb.store.clip_state(clip_id)
    where = "stays quarantined" if state["quarantined"] else "released"
    return f"clip {clip_id}: tagged {tag} -> label {state['label']}{', excluded' if state['excluded'] else ''}, {where}"


def _relabel(wb: Workbench, clip_id: int, label: str | None, who: str, seen_id: int | None, note: str | None) -> str:
    if not label:
        raise ValueError("Choose a class in 'relabel to' first.")
    review.relabel(wb.store, clip_id, label=label, annotator=who, note=note, seen_decision_id=seen_id)
    return f"clip {clip_id}: relabelled {label}"


def _table(queue: pd.DataFrame) -> pd.DataFrame:
    shown = queue.drop(columns=["score"]).copy()
    shown["confidence"] = shown["confidence"].astype(float).round(3)
    return shown
