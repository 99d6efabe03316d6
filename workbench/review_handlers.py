"""The Review tab's handlers: plain values in, the outputs' new values out; a refusal raises.

The page's queued key presses arrive as one JSON batch of commands (decide, goto, undo), each
with a sequence number; `run_commands` applies each number once, strictly in order, and answers
with the refreshed window of clip views (review_feed.py). A failed command (a conflict, a
refusal) is not raised: its clip goes back on screen with the reason, and the commands after it
are reported as not recorded, so the browser can say how many.
"""
from __future__ import annotations

import json
from typing import Any

import gradio as gr
import pandas as pd

from core import review
from core.label_issues import LABEL_QUALITY_METHODS
from pipelines import double_annotation as double
from pipelines.review_queue import default_run
from workbench import duplicate_pair
from workbench.common import run_choices
from workbench.context import USER_ERRORS, Workbench, require_annotator
from workbench.review_feed import feed, keys_help, queue_rows, queue_table, tag_buttons


ANY_REASON = "any"
# Why a clip is in the quarantine queue, by the method of its quarantine entry: a label-issue
# ranking goes by its cleanlab method's name, and a person queues a clip from Review or from a
# confusion cell; extreme_off, vad_hygiene and any other method are their own kind.
REASON_KINDS = {**dict.fromkeys(LABEL_QUALITY_METHODS, "label_issue"), "confusion": "manual"}


def load_queue(wb: Workbench, source: str, status: str, label: str | None, reason: str | None,
               annotator: str | None, run_id: str | None, freq: str, applied: int, *, viewer: str | None = None
               ) -> list[Any]:
    """The filtered queue: [its clip ids, its table, the feed of the window the page starts on,
    position 0, the newest decision id now (what 'decided since it was loaded' counts from)].
    reason: a kind of reason_choices (ANY_REASON or empty: every kind), or text the reason contains.
    viewer: who is looking; a blind queue shows them only the clips they have not answered."""
    try:
        queue = double.queue_for(wb.store, source=source, viewer=viewer, run_id=run_id or None, label=label or None,
                                 status=status, annotator=annotator or None)
    except double.ViewerNeeded as exc:  # an empty queue that says why, not a page stuck loading
        gr.Warning(str(exc))
        queue = double.queue_for(wb.store, source=source, viewer=None, status=status, blind=False).head(0)
    if reason and reason != ANY_REASON:
        kinds = _reason_kinds(wb, source)
        if reason in set(kinds):
            keep = queue.clip_id.map(kinds) == reason
        else:
            keep = queue.reason.astype(str).str.contains(reason, case=False, regex=False)
        queue = queue[keep.to_numpy()].reset_index(drop=True)
    ids = queue.clip_id.astype(int).tolist()
    loaded = wb.store.last_decision_id()
    window = feed(wb, ids, 0, run_id, freq, rows=queue.set_index("clip_id"), loaded_at=loaded, applied=applied,
                  reset=True, viewer=viewer)
    return [ids, queue_table(queue), window, 0, loaded]


def reasons(wb: Workbench, source: str) -> list[str]:
    """The reason filter's choices: ANY_REASON, then each kind of reason in the source's queue
    (every status), by name."""
    return [ANY_REASON, *sorted(set(_reason_kinds(wb, source)))]


def reason_choices(wb: Workbench, source: str, chosen: str | None) -> gr.Dropdown:
    """The reason filter as the queue is now (reasons). The choice stays, unless it is a kind
    this source has not (a quarantine kind after switching to a run's predictions); text typed
    in the box stays as typed."""
    choices = reasons(wb, source)
    stale = chosen in set(_reason_kinds(wb, "quarantine")) and chosen not in choices
    return gr.Dropdown(choices=choices, value=ANY_REASON if not chosen or stale else chosen, allow_custom_value=True)


def _reason_kinds(wb: Workbench, source: str) -> pd.Series:
    """clip id -> kind of reason of its latest quarantine entry (REASON_KINDS); empty for the
    queues of a run's predictions, whose reason is the prediction itself."""
    if source != "quarantine":
        return pd.Series(dtype=object)
    entries = wb.store.quarantine_queue(include_resolved=True).dropna(subset=["method"])
    return pd.Series([REASON_KINDS.get(method, method) for method in entries.method],
                     index=entries.clip_id.astype(int).to_numpy(), dtype=object)


def open_page(wb: Workbench, source: str, status: str, label: str | None, reason: str | None,
              annotator: str | None, freq: str, applied: int, *, viewer: str | None = None) -> list[Any]:
    """On page load: the run list as the store has it now with the default run (production)
    chosen, then load_queue with that run's predictions."""
    chosen = default_run(wb.store)
    return [gr.Dropdown(choices=run_choices(wb.store), value=chosen),
            *load_queue(wb, source, status, label, reason, annotator, chosen, freq, applied, viewer=viewer)]


def viewer(name: str | None, request: gr.Request | None) -> str | None:
    """Who is looking at the queue: the logged-in user, else the name typed top right (None if blank)."""
    if request is not None and request.username:
        return request.username
    return (name or "").strip() or None


def fresh_runs(wb: Workbench) -> gr.Dropdown:
    """When the tab is shown: new runs and the production mark as they are now (after a run, a
    promotion or a rollback elsewhere); the run chosen stays chosen."""
    return gr.Dropdown(choices=run_choices(wb.store))


def rule_views(wb: Workbench) -> list[Any]:
    """The keys legend (with the key map earmark.js reads) and one update per tag button, as the
    session's rules are now: a rule added or a key moved in the Data tab works from the next show."""
    rules = wb.store.rules()
    return [keys_help(rules), *tag_buttons(rules)]


def reshow(wb: Workbench, ids: list[int], pos: int, run_id: str | None, freq: str, source: str, loaded: int,
           applied: int, *, viewer: str | None = None) -> str:
    """The feed for the clip at pos, every view rendered again (e.g. in another frequency range)."""
    return feed(wb, ids, pos, run_id, freq, rows=queue_rows(wb, ids, source, run_id), loaded_at=loaded,
                applied=applied, reset=True, viewer=viewer)


def pick_row(wb: Workbench, ids: list[int], run_id: str | None, freq: str, source: str, loaded: int, applied: int,
             clip_id: int, *, viewer: str | None = None) -> list[Any]:
    """Open a row's clip, found by its id (a row can drop out of a refreshed table): [feed, position]."""
    if clip_id not in ids:
        raise ValueError(f"clip {clip_id} is not in this queue any more: load the queue again.")
    pos = ids.index(clip_id)
    return [reshow(wb, ids, pos, run_id, freq, source, loaded, applied, viewer=viewer), pos]


def run_commands(wb: Workbench, request: gr.Request | None, name: str | None, payload: str | None, ids: list[int],
                 pos: int, applied: int, run_id: str | None, freq: str, source: str, loaded: int) -> list[Any]:
    """Apply the page's queued commands strictly in sequence, each once (a resent batch skips what
    was applied); the first failure stops the batch and puts its clip back. Returns [feed, queue
    table (skipped when no decision changed it), ids, position, the last sequence number applied]."""
    batch = json.loads(payload or "{}")
    ids, reset, results, failed, before = list(ids), False, [], False, wb.store.last_decision_id()
    for command in sorted(batch.get("commands", []), key=lambda c: int(c["seq"])):
        seq = int(command["seq"])
        if seq <= applied:
            continue
        applied = seq
        if failed:
            results.append({"seq": seq, "ok": False, "text": "not recorded: an earlier key press failed"})
            continue
        try:
            text, ids, pos, resets = _run_command(wb, command, require_annotator(name, request), ids, pos, source)
            results.append({"seq": seq, "ok": True, "text": text})
            reset = reset or resets
        except USER_ERRORS as exc:
            failed = reset = True
            clip_id = command.get("clip")
            pos = ids.index(clip_id) if clip_id in ids else pos
            results.append({"seq": seq, "ok": False, "text": str(exc), "clip": clip_id})
    rows = queue_rows(wb, ids, source, run_id)
    window = feed(wb, ids, pos, run_id, freq, rows=rows, loaded_at=loaded, applied=applied, reset=reset,
                  have=frozenset(batch.get("have", [])), results=results, viewer=viewer(name, request))
    # Redrawn only when a decision changed it: moving between clips changes nothing there.
    changed = wb.store.last_decision_id() > before
    table = queue_table(rows.rename_axis("clip_id").reset_index()) if changed else gr.skip()
    return [window, table, ids, pos, applied]


# --- one command ------------------------------------------------------------------------------
def _run_command(wb: Workbench, command: dict[str, Any], who: str, ids: list[int], pos: int, source: str
                 ) -> tuple[str, list[int], int, bool]:
    """One command of the page: returns the message, the queue, the position after it, and
    whether the browser must re-render what it shows (undo changes a clip it may hold)."""
    kind = command.get("kind")
    if kind == "decide":
        clip_id = int(command["clip"])
        text = _decide(wb, clip_id, who, command, source)
        return text, ids, pos + 1 if pos < len(ids) and ids[pos] == clip_id else pos, False
    if kind == "goto":
        clip_id = int(command["clip"])
        if clip_id not in ids:
            raise ValueError(f"clip {clip_id} is not in this queue any more: load the queue again.")
        return "", ids, ids.index(clip_id), False
    if kind == "undo":
        return _undo(wb, who, ids, pos, source)
    raise ValueError(f"command kind must be one of decide, goto, undo; got {kind!r}")


def _decide(wb: Workbench, clip_id: int, who: str, command: dict[str, Any], source: str) -> str:
    """Record one decision, unless it repeats the clip's latest one by the same annotator (a key
    pressed twice): then nothing is recorded and the message says so. In a blind queue it is an
    answer held back (double_annotation.annotate); in the adjudication queue, the final word."""
    action, tag, label = command.get("action"), command.get("tag"), command.get("label")
    if action not in DECISIONS:
        raise ValueError(f"action must be one of {', '.join(DECISIONS)}; got {action!r}")
    note = (command.get("note") or "").strip() or None
    if source == double.ADJUDICATION:
        return double.adjudicate(wb.store, clip_id, adjudicator=who, action=action, tag=tag, label=label, note=note)
    if double.annotators_per_clip(wb.store, source) > 1:
        return double.annotate(wb.store, clip_id, queue=source, annotator=who, action=action, tag=tag, label=label,
                               note=note)
    if note is None and review.repeats_last(wb.store, clip_id, annotator=who, action=action, tag=tag, label=label):
        what = {"tag": f"tagged {tag}", "relabel": f"relabelled {label}"}.get(action, DECISIONS[action][1])
        return f"clip {clip_id}: already {what} by {who}; nothing new recorded"
    seen = command.get("seen")
    return DECISIONS[action][0](wb, clip_id, who, None if seen is None else int(seen), note, command)


def _undo(wb: Workbench, who: str, ids: list[int], pos: int, source: str) -> tuple[str, list[int], int, bool]:
    """Undo the annotator's last decision (in a blind queue: withdraw their last open answer) and
    go back to its clip (put back in the queue if gone)."""
    if source != double.ADJUDICATION and double.annotators_per_clip(wb.store, source) > 1:
        text, clip_id = double.withdraw_last(wb.store, annotator=who)
        ids = ids if clip_id in ids else [*ids[:pos], clip_id, *ids[pos:]]
        return text, ids, ids.index(clip_id), True
    last = review.last_undoable(wb.store, annotator=who)
    if last is None:
        raise ValueError(f"{who} has no decision left to undo.")
    review.undo(wb.store, int(last["id"]), annotator=who)
    clip_id = int(last["clip_id"])
    if clip_id not in ids:
        ids = [*ids[:pos], clip_id, *ids[pos:]]
    text = f"undid decision {last['id']} ({last['action']} {last['tag'] or last['new_label'] or ''}) on clip {clip_id}"
    return text, ids, ids.index(clip_id), True


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
             "keep": (_keep, "kept in quarantine"), **duplicate_pair.RESOLUTIONS}
