"""Review: the annotator's tab. A queue of clips to listen to, the clip view, and decisions by key.

Every action is a decision in the log (core.review). The browser holds the next few clip views
(rendered here, sent through a hidden feed) and advances the moment a key is pressed, while the
decisions go to the server in the background, queued in order with a sequence number: the
server applies each once, strictly in sequence, and answers with the refreshed window. A
failed write (a conflict, a refusal) puts its clip back on screen with the reason; a repeated
key on a clip records nothing new; after the last clip the queue says so, with what to do next.
Decisions carry the last decision id the annotator saw for the clip (0 for none), so a clip
decided in the meantime by someone else is reported instead of silently overwritten.
"""
from __future__ import annotations

import html
import json
import uuid
from typing import Any

import gradio as gr
import pandas as pd

from core import review
from core.store import Rule
from pipelines.review_queue import SOURCES, STATUSES, build_queue, decided_since, default_run, review_counts
from workbench.common import FREQUENCY_RANGES, WIDE, history_html, run_choices, side_panel_html
from workbench.context import USER_ERRORS, Workbench, current_tab, require_annotator, safe
from workbench.renderer import ClipUnavailable, newest_decision_id

WINDOW = 5  # clips the browser holds at once: the one shown and the next four, so a key advances at once
# earmark.js hands Gradio the queued commands when it clicks the hidden send button, and reads
# each answer (the feed) as soon as Gradio has it; see emReview in earmark.js.
TAKE_JS = "(commands, ...rest) => [window.emReview.take(), ...rest]"
ACK_JS = "(feed) => window.emReview.receive(feed, true)"
RECEIVE_JS = "(feed) => window.emReview.receive(feed, false)"


HOTKEYS = [str(digit) for digit in range(10)]  # a rule's hotkey is one digit (Rule.check): one tag button each


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


def tag_buttons(rules: list[Rule]) -> list[Any]:
    """One update per HOTKEYS button: shown with its rule's tag, or removed when no rule has the key."""
    by_key = {rule.hotkey: rule for rule in rules if rule.hotkey}
    return [gr.Button(f"{key}  {by_key[key].tag}", visible=True) if key in by_key else gr.Button(visible=False)
            for key in HOTKEYS]


def stage_html() -> str:
    """The part of the tab earmark.js owns: the counter and the clip slots. Gradio renders it
    once; the clips arrive through the hidden feed and are swapped in by JS."""
    return ("<div class='em-stage'>"
            "<div class='em-counter-box'></div><div class='em-slots'>"
            "<div class='em-slot em-loading'><p>Loading the queue&hellip;</p></div></div></div>")


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    tab = current_tab()
    rules = wb.store.rules()
    queue_ids = gr.State([])
    position = gr.State(0)      # index in the queue of the clip this page is on (len = past the end)
    applied = gr.State(0)       # the last command sequence number applied for this page
    loaded_at = gr.State(0)     # the newest decision id when the queue was loaded

    with gr.Row(equal_height=True):
        # Narrow filters, so the whole row (Load queue included) fits one line at 1440 px and
        # the run list is wide enough to show which run is production.
        source = gr.Dropdown(list(SOURCES), value="quarantine", label="queue", scale=1, min_width=120)
        status = gr.Dropdown(list(STATUSES), value="open", label="status", scale=1, min_width=110)
        label_filter = gr.Dropdown([""] + wb.labels(), value="", label="class", scale=1, min_width=120)
        reason_filter = gr.Textbox(label="reason contains", scale=1, min_width=120)
        annotator_filter = gr.Textbox(label="decided by", scale=1, min_width=110)
        run = gr.Dropdown(run_choices(wb.store), value=default_run(wb.store), label="predictions of run", scale=3,
                          elem_id="em-review-run")
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-4 kHz", label="frequency range", scale=1, min_width=110)
        refresh = gr.Button("Load queue", variant="secondary", scale=0, min_width=110)
    with gr.Row():
        with gr.Column(scale=3):
            gr.HTML(stage_html(), elem_id="em-review-stage")
        with gr.Column(scale=2):
            with gr.Row():
                # A button per digit, shown while a rule has that key: the rules are read again when
                # the tab is shown or the page loads (rule_views), so an edit in the Data tab counts
                # without a restart. Clicks are handled by earmark.js, like the keys.
                by_key = {rule.hotkey: rule for rule in rules if rule.hotkey}
                buttons = [gr.Button(f"{key}  {by_key[key].tag}" if key in by_key else key, visible=key in by_key,
                                     elem_id=f"em-tag-{key}", elem_classes=["em-tag"], size="sm", min_width=120)
                           for key in HOTKEYS]
            with gr.Row(equal_height=True):
                gr.Dropdown(wb.labels(), value=None, label="relabel to", scale=3, elem_id="em-relabel-to")
                gr.Button("Relabel", elem_id="em-relabel", size="sm", scale=1)
            with gr.Row():
                gr.Button("X  exclude", elem_id="em-exclude", size="sm")
                gr.Button("Q  keep quarantined", elem_id="em-keep", size="sm")
                gr.Button("U  undo my last", elem_id="em-undo", size="sm")
            gr.Textbox(label="note (saved with the next decision)", lines=1, elem_id="em-review-note")
            with gr.Row():
                gr.Button("\u2190 K  previous", elem_id="em-prev", size="sm")
                gr.Button("next  J \u2192", elem_id="em-next", size="sm")
            gr.HTML("<div class='em-msg'></div>", elem_id="em-review-message")
            legend = gr.HTML(keys_help(rules), elem_id="em-review-keys")
    queue_table = gr.Dataframe(label="queue (select a row to open it)", interactive=False, max_height=320, **WIDE)
    commands = gr.Textbox(visible="hidden", elem_id="em-review-commands")
    feed = gr.Textbox(visible="hidden", elem_id="em-review-feed")
    send = gr.Button("send", visible="hidden", elem_id="em-review-send")
    serial = {"concurrency_id": "review", "concurrency_limit": 1}  # one writer, decisions strictly in order

    def queue_views(src, st, lab, rea, ann, run_id, freq, applied_seq):
        """The filtered queue, its table, and the window of clip views the page starts on."""
        queue = build_queue(wb.store, source=src, run_id=run_id or None, label=lab or None, reason=rea or None,
                            status=st, annotator=ann or None)
        ids = queue.clip_id.astype(int).tolist()
        loaded = wb.store.last_decision_id()
        window = _feed(wb, ids, 0, run_id, freq, rows=queue.set_index("clip_id"), loaded_at=loaded,
                       applied=applied_seq, reset=True)
        return [ids, _table(queue), window, 0, loaded]

    load = safe(queue_views)
    load_inputs = [source, status, label_filter, reason_filter, annotator_filter, run, frequency, applied]
    load_outputs = [queue_ids, queue_table, feed, position, loaded_at]
    # run.input, not run.change: the page load and the tab select below set the run list themselves.
    for trigger in (refresh.click, source.change, status.change, label_filter.change, run.input):
        trigger(load, load_inputs, load_outputs, **serial).then(None, feed, None, js=RECEIVE_JS)

    @safe
    def open_page(src, st, lab, rea, ann, _, freq, applied_seq):
        """On page load: the runs as the store has them now, the default one (production) chosen,
        and the queue loaded with its predictions."""
        chosen = default_run(wb.store)
        return [gr.Dropdown(choices=run_choices(wb.store), value=chosen),
                *queue_views(src, st, lab, rea, ann, chosen, freq, applied_seq)]

    page = gr.context.Context.root_block
    page.load(open_page, load_inputs, [run, *load_outputs], **serial).then(None, feed, None, js=RECEIVE_JS)

    @safe
    def fresh_runs():
        """When the tab is shown: new runs and the production mark as they are now (after a run,
        a promotion or a rollback elsewhere); the run chosen stays chosen."""
        return gr.Dropdown(choices=run_choices(wb.store))

    tab.select(fresh_runs, None, run, show_progress="hidden")

    @safe
    def rule_views():
        """The tag buttons and the keys legend (with the key map earmark.js reads) as the session's
        rules are now: a rule added or a key moved in the Data tab works here from the next show."""
        rules = wb.store.rules()
        return [keys_help(rules), *tag_buttons(rules)]

    for trigger in (page.load, tab.select):
        trigger(rule_views, None, [legend, *buttons], show_progress="hidden")

    def reshow(ids, pos, run_id, freq, src, loaded, applied_seq) -> str:
        rows = _rows(wb, ids, src, run_id)
        return _feed(wb, ids, pos, run_id, freq, rows=rows, loaded_at=loaded, applied=applied_seq, reset=True)

    frequency.change(safe(reshow), [queue_ids, position, run, frequency, source, loaded_at, applied], feed,
                     **serial).then(None, feed, None, js=RECEIVE_JS)

    @safe
    def pick(ids, run_id, freq, src, loaded, applied_seq, event: gr.SelectData):
        """Open the selected row's clip (by its id: a row can drop out of a refreshed table)."""
        clip_id = int(event.row_value[0])
        if clip_id not in ids:
            raise ValueError(f"clip {clip_id} is not in this queue any more: load the queue again.")
        pos = ids.index(clip_id)
        return [reshow(ids, pos, run_id, freq, src, loaded, applied_seq), pos]

    queue_table.select(pick, [queue_ids, run, frequency, source, loaded_at, applied], [feed, position],
                       **serial).then(None, feed, None, js=RECEIVE_JS)

    @safe
    def run_commands(payload, name, ids, pos, applied_seq, run_id, freq, src, loaded, request: gr.Request):
        """Apply the page's queued commands strictly in sequence, each once (a resent batch skips
        what was applied); the first failure stops the batch and puts its clip back."""
        batch = json.loads(payload or "{}")
        ids, reset, results, failed, before = list(ids), False, [], False, wb.store.last_decision_id()
        for command in sorted(batch.get("commands", []), key=lambda c: int(c["seq"])):
            seq = int(command["seq"])
            if seq <= applied_seq:
                continue
            applied_seq = seq
            if failed:
                results.append({"seq": seq, "ok": False, "text": "not recorded: an earlier key press failed"})
                continue
            try:
                text, ids, pos, resets = _run_command(wb, command, require_annotator(name, request), ids, pos)
                results.append({"seq": seq, "ok": True, "text": text})
                reset = reset or resets
            except USER_ERRORS as exc:
                failed = reset = True
                clip_id = command.get("clip")
                pos = ids.index(clip_id) if clip_id in ids else pos
                results.append({"seq": seq, "ok": False, "text": str(exc), "clip": clip_id})
        rows = _rows(wb, ids, src, run_id)
        window = _feed(wb, ids, pos, run_id, freq, rows=rows, loaded_at=loaded, applied=applied_seq, reset=reset,
                       have=frozenset(batch.get("have", [])), results=results)
        # The table is redrawn only when a decision changed it (moving between clips changes nothing there).
        table = _table(rows.rename_axis("clip_id").reset_index()) if wb.store.last_decision_id() > before else gr.skip()
        return [window, table, ids, pos, applied_seq]

    send.click(run_commands, [commands, annotator, queue_ids, position, applied, run, frequency, source, loaded_at],
               [feed, queue_table, queue_ids, position, applied], js=TAKE_JS, trigger_mode="multiple",
               show_progress="hidden", **serial).then(None, feed, None, js=ACK_JS)  # no spinners: work goes on behind


def _run_command(wb: Workbench, command: dict[str, Any], who: str, ids: list[int], pos: int
                 ) -> tuple[str, list[int], int, bool]:
    """One command of the page: returns the message, the queue, the position after it, and
    whether the browser must re-render what it shows (undo changes a clip it may hold)."""
    kind = command.get("kind")
    if kind == "decide":
        clip_id = int(command["clip"])
        text = _decide(wb, clip_id, who, command)
        return text, ids, pos + 1 if pos < len(ids) and ids[pos] == clip_id else pos, False
    if kind == "goto":
        clip_id = int(command["clip"])
        if clip_id not in ids:
            raise ValueError(f"clip {clip_id} is not in this queue any more: load the queue again.")
        return "", ids, ids.index(clip_id), False
    if kind == "undo":
        return _undo(wb, who, ids, pos)
    raise ValueError(f"command kind must be one of decide, goto, undo; got {kind!r}")


def _decide(wb: Workbench, clip_id: int, who: str, command: dict[str, Any]) -> str:
    """Record one decision, unless it repeats the clip's latest one by the same annotator (a key
    pressed twice): then nothing is recorded and the message says so."""
    action, tag, label = command.get("action"), command.get("tag"), command.get("label")
    if action not in DECISIONS:
        raise ValueError(f"action must be one of {', '.join(DECISIONS)}; got {action!r}")
    note = (command.get("note") or "").strip() or None
    if note is None and review.repeats_last(wb.store, clip_id, annotator=who, action=action, tag=tag, label=label):
        what = {"tag": f"tagged {tag}", "relabel": f"relabelled {label}"}.get(action, DECISIONS[action][1])
        return f"clip {clip_id}: already {what} by {who}; nothing new recorded"
    seen = command.get("seen")
    return DECISIONS[action][0](wb, clip_id, who, None if seen is None else int(seen), note, command)


def _undo(wb: Workbench, who: str, ids: list[int], pos: int) -> tuple[str, list[int], int, bool]:
    """Undo the annotator's last decision and go back to its clip (put back in the queue if gone)."""
    last = review.last_undoable(wb.store, annotator=who)
    if last is None:
        raise ValueError(f"{who} has no decision left to undo.")
    review.undo(wb.store, int(last["id"]), annotator=who)
    clip_id = int(last["clip_id"])
    if clip_id not in ids:
        ids = [*ids[:pos], clip_id, *ids[pos:]]
    text = f"undid decision {last['id']} ({last['action']} {last['tag'] or last['new_label'] or ''}) on clip {clip_id}"
    return text, ids, ids.index(clip_id), True


def _rows(wb: Workbench, ids: list[int], src: str, run_id: str | None) -> pd.DataFrame:
    """The queue's rows in the same order, with their state after the latest decisions, by clip id."""
    queue = build_queue(wb.store, source=src, run_id=run_id or None, status="all").set_index("clip_id")
    return queue.reindex([i for i in ids if i in queue.index])


def _feed(wb: Workbench, ids: list[int], pos: int, run_id: str | None, freq: str, *, rows: pd.DataFrame,
          loaded_at: int, applied: int, reset: bool, have: frozenset = frozenset(), results: list | None = None) -> str:
    """What the browser needs to show the clip at pos and advance without waiting: the next
    WINDOW clip views (HTML left out for those it already holds: a key names one rendering of a
    clip at one place in the queue), the end-of-queue view when the window reaches it, the
    counter, and the result of each command applied."""
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
            body = (f"{view.html}<div class='em-slot-info'><div class='em-slot-side'>{side_panel_html(view)}</div>"
                    f"<div class='em-slot-history'>{history_html(view.history)}</div></div>")
        key = f"{clip_id}:{seen}:{fmax}:{run_id}:{index}:{len(ids)}"
        slots.append({"key": key, "clip": clip_id, "seen": seen, "html": None if key in have else head + body})
    wb.views.prefetch([int(c) for c in ids[pos + WINDOW:pos + WINDOW + 2]], run_id=run_id or None, fmax_hz=fmax)
    decided = decided_since(wb.store, ids, since_id=loaded_at)
    end = _end_html(decided, len(ids)) if pos + WINDOW > len(ids) else None
    counts = review_counts(wb.store)
    counter = (f'<span class="em-counter">{decided} of {len(ids)} in this queue decided since it was loaded '
               f'&middot; {counts["open"]} of {counts["total"]} quarantined clips open</span>')
    return json.dumps({"response": uuid.uuid4().hex, "applied": applied, "reset": reset, "ids": [int(i) for i in ids],
                       "pos": pos, "slots": slots, "end": end, "counter": counter, "results": results or []})


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


def _tag(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    tag = command.get("tag")
    review.apply_tag(wb.store, clip_id, tag=tag, annotator=who, note=note, seen_decision_id=seen_id)
    state = wb.store.clip_state(clip_id)
    where = "stays quarantined" if state["quarantined"] else "released"
    return f"clip {clip_id}: tagged {tag} -> label {state['label']}{', excluded' if state['excluded'] else ''}, {where}"


def _relabel(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    label = command.get("label")
    if not label:
        raise ValueError("Choose a class in 'relabel to' first.")
    review.relabel(wb.store, clip_id, label=label, annotator=who, note=note, seen_decision_id=seen_id)
    return f"clip {clip_id}: relabelled {label}"


def _exclude(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    review.exclude(wb.store, clip_id, annotator=who, note=note, seen_decision_id=seen_id)
    return f"clip {clip_id}: excluded"


def _keep(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    review.keep_quarantined(wb.store, clip_id, annotator=who, note=note, seen_decision_id=seen_id)
    return f"clip {clip_id}: kept in quarantine"


# action -> (what records it, how a repeat of it is described)
DECISIONS = {"tag": (_tag, "tagged"), "relabel": (_relabel, "relabelled"), "exclude": (_exclude, "excluded"),
             "keep": (_keep, "kept in quarantine")}


def _table(queue: pd.DataFrame) -> pd.DataFrame:
    shown = queue.drop(columns=["score"]).copy()
    shown["confidence"] = shown["confidence"].astype(float).round(3)
    return shown
