"""What the Review tab sends the browser: the window of clip views (the feed), the queue table,
the keys legend and the tag buttons.

The browser holds the clip on screen and the next few (WINDOW), rendered here, so a key
advances at once; earmark.js (emReview) swaps them in and reads the results of the commands
applied. A slot's key names one rendering of a clip at one place in the queue, so HTML the
browser already holds is not sent again.
"""
from __future__ import annotations

import html
import json
import uuid

import gradio as gr
import pandas as pd

from core.store import Rule
from pipelines.double_annotation import queue_for
from pipelines.review_queue import decided_since, review_counts
from workbench import duplicate_pair
from workbench.common import FREQUENCY_RANGES, history_html, side_panel_html
from workbench.context import Workbench
from workbench.renderer import ClipUnavailable, newest_decision_id

WINDOW = 5  # clips the browser holds at once: the one shown and the next four, so a key advances at once
HOTKEYS = [str(digit) for digit in range(10)]  # a rule's hotkey is one digit (Rule.check): one tag button each


def feed(wb: Workbench, ids: list[int], pos: int, run_id: str | None, freq: str, *, rows: pd.DataFrame,
         loaded_at: int, applied: int, reset: bool, have: frozenset = frozenset(), results: list | None = None,
         viewer: str | None = None) -> str:
    """What the browser needs to show the clip at pos and advance without waiting, as JSON: the
    next WINDOW clip views (HTML left out for those it already holds), the end-of-queue view when
    the window reaches it, the counter, and the result of each command applied."""
    fmax = FREQUENCY_RANGES[freq]
    slots = []
    for index in range(pos, min(pos + WINDOW, len(ids))):
        clip_id = int(ids[index])
        head = _slot_head(rows, clip_id, index, len(ids))
        try:
            view = wb.views.get(clip_id, run_id=run_id or None, fmax_hz=fmax)
        except ClipUnavailable as exc:  # still decidable (e.g. exclude it): say why it cannot be shown
            seen = newest_decision_id(wb.store, clip_id)
            body = f"<p class='em-message-error'>{html.escape(str(exc))}</p>"
        else:
            seen = view.last_decision_id
            body = (f"{view.html}{duplicate_pair.pair_html(wb, rows, clip_id, run_id=run_id, fmax_hz=fmax)}"
                    f"<div class='em-slot-info'><div class='em-slot-side'>{side_panel_html(view)}</div>"
                    f"<div class='em-slot-history'>{history_html(view.history)}</div></div>")
        key = f"{clip_id}:{seen}:{fmax}:{run_id}:{index}:{len(ids)}"
        slots.append({"key": key, "clip": clip_id, "seen": seen, "html": None if key in have else head + body})
    wb.views.prefetch([int(c) for c in ids[pos + WINDOW:pos + WINDOW + 2]], run_id=run_id or None, fmax_hz=fmax)
    decided = decided_since(wb.store, ids, since_id=loaded_at, viewer=viewer)
    end = _end_html(decided, len(ids)) if pos + WINDOW > len(ids) else None
    counts = review_counts(wb.store)
    counter = (f'<span class="em-counter">{decided} of {len(ids)} in this queue decided since it was loaded '
               f'&middot; {counts["open"]} of {counts["total"]} quarantined clips open</span>')
    return json.dumps({"response": uuid.uuid4().hex, "applied": applied, "reset": reset, "ids": [int(i) for i in ids],
                       "pos": pos, "slots": slots, "end": end, "counter": counter, "results": results or []})


def queue_rows(wb: Workbench, ids: list[int], source: str, run_id: str | None) -> pd.DataFrame:
    """The queue's rows in the same order, with their state after the latest decisions, by clip id."""
    queue = queue_for(wb.store, source=source, viewer=None, run_id=run_id or None, status="all", blind=False)
    queue = queue.set_index("clip_id")
    return queue.reindex([i for i in ids if i in queue.index])


def queue_table(queue: pd.DataFrame) -> pd.DataFrame:
    """The queue as its table shows it: no score column, confidence to three decimals."""
    shown = queue.drop(columns=["score"]).copy()
    shown["confidence"] = shown["confidence"].astype(float).round(3)
    return shown


def keys_help(rules: list[Rule]) -> str:
    """The keys legend; it lists only the tag keys that have a rule, so no key is advertised dead.
    It also carries the key -> tag map earmark.js applies (data-keys), so keys and legend are
    redrawn together when the rules change (Data tab) and the Review tab is shown again."""
    keys = json.dumps({rule.hotkey: rule.tag for rule in rules if rule.hotkey})
    hotkeys = sorted(rule.hotkey for rule in rules if rule.hotkey)
    digits = [int(k) for k in hotkeys if k.isdigit()]
    if len(digits) == len(hotkeys) > 2 and digits == list(range(digits[0], digits[0] + len(digits))):
        tags = f"<kbd>{hotkeys[0]}</kbd>-<kbd>{hotkeys[-1]}</kbd> tag &nbsp; "
    else:
        tags = "".join(f"<kbd>{html.escape(k)}</kbd> " for k in hotkeys) + ("tag &nbsp; " if hotkeys else "")
    keyless = sorted(rule.tag for rule in rules if not rule.hotkey)
    unkeyed = ("" if not keyless else f"<br>No key (give one in the Data tab to tag here): "
               f"{', '.join(html.escape(tag) for tag in keyless)}")
    return f"""<div class="em-keys" data-keys='{html.escape(keys, quote=True)}'>
<b>Keys</b>: {tags}<kbd>J</kbd>/<kbd>&rarr;</kbd> next &nbsp; <kbd>K</kbd>/<kbd>&larr;</kbd> previous &nbsp;
<kbd>U</kbd> undo &nbsp; <kbd>X</kbd> exclude &nbsp; <kbd>Q</kbd> keep quarantined &nbsp; <kbd>Space</kbd> play/pause &nbsp;
<kbd>R</kbd> replay &nbsp; <kbd>[</kbd>/<kbd>]</kbd> speed &nbsp; <kbd>L</kbd> loop &nbsp; click the spectrogram to seek{unkeyed}</div>"""


def tag_buttons(rules: list[Rule]) -> list[gr.Button]:
    """One update per HOTKEYS button: shown with its rule's tag, or hidden when no rule has the key."""
    by_key = {rule.hotkey: rule for rule in rules if rule.hotkey}
    return [gr.Button(f"{key}  {by_key[key].tag}", visible=True) if key in by_key else gr.Button(visible=False)
            for key in HOTKEYS]


def _slot_head(rows: pd.DataFrame, clip_id: int, index: int, total: int) -> str:
    """One line above the spectrogram: where in the queue, why it was flagged, given vs predicted."""
    parts = [f"<b>clip {index + 1} of {total}</b> in this queue"]
    if clip_id in rows.index:
        row = rows.loc[clip_id]
        if isinstance(row.reason, str) and row.reason:
            parts.append(f"flagged: {html.escape(row.reason)}")
        given = f"given <b>{html.escape(str(row.given))}</b>"
        if isinstance(row.predicted, str):
            given += f" &rarr; predicted <b>{html.escape(row.predicted)}</b> ({float(row.confidence):.2f})"
        parts.append(given)
        if row.label != row.given:
            parts.append(f"now <b>{html.escape(str(row.label))}</b>")
    return f"<div class='em-slot-head'>{' &middot; '.join(parts)}</div>"


def _end_html(decided: int, total: int) -> str:
    """After the last clip: how many were reviewed and what to do next; no clip left to decide twice."""
    if total == 0:
        return ("<h3>Nothing in this queue</h3><p>Change the filters above, or run an audit "
                "(Runs tab) to fill the quarantine.</p>")
    return (f"<h3>{decided} of {total} reviewed</h3><p>That was the last clip of this queue. Next: "
            "fine-tune on the corrected labels in the <a href='#' class='em-open-tab' data-tab='Train'>Train tab</a>, "
            "or load another queue above (another source, status or class). <kbd>K</kbd> goes back to the last clip; "
            "<kbd>U</kbd> undoes your last decision.</p>")
