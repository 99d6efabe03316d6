"""The Review tab's near-duplicate pair: a clip queued with reason near_duplicate is shown with
its partner (the most similar clip of another split, core.duplicate_review.partner) beside it,
with its own spectrogram and player, and the three ways out as buttons: move the clip into its
partner's split and group, exclude it, or mark the two not duplicates. earmark.js sends a
button's resolution through the same ordered command queue as the keys; RESOLUTIONS records it.
"""
from __future__ import annotations

import html

import pandas as pd

from core import duplicate_review
from workbench.context import Workbench
from workbench.renderer import ClipUnavailable

# The buttons' resolutions: (data-resolution, button text). "exclude" is Review's own exclude.
BUTTONS = (("dup_move", "move beside partner"), ("exclude", "exclude this clip"), ("dup_distinct", "not a duplicate"))


def pair_html(wb: Workbench, rows: pd.DataFrame, clip_id: int, *, run_id: str | None, fmax_hz: float) -> str:
    """The partner panel for a near_duplicate clip of the queue (rows: the queue by clip id);
    empty for any other clip."""
    if clip_id not in rows.index or not str(rows.loc[clip_id].reason).startswith(duplicate_review.REASON):
        return ""
    found = duplicate_review.partner(wb.store, clip_id)
    if found is None:
        return ""
    partner_id = found["partner_id"]
    try:
        player = wb.views.get(partner_id, run_id=run_id or None, fmax_hz=fmax_hz).html
    except ClipUnavailable as exc:
        player = f"<p class='em-message-error'>{html.escape(str(exc))}</p>"
    head = (f"<b>near-duplicate partner</b>: clip {partner_id}, in <b>{html.escape(str(found['split']))}</b> "
            f"(group {html.escape(str(found['source_group']))}), similarity {found['similarity']:.3f}")
    buttons = "".join(f"<button class='em-dup-resolve' data-resolution='{action}' data-partner='{partner_id}'>"
                      f"{html.escape(text)}</button>" for action, text in BUTTONS)
    # The ways out come before the partner's spectrogram, so they are in view with the clip's own.
    return (f"<div class='em-dup-pair' data-partner='{partner_id}'><div class='em-dup-head'>{head}</div>"
            f"<div class='em-dup-actions'>{buttons}</div>{player}</div>")


# --- the resolutions, as Review records them (review_handlers.DECISIONS) --------------------------
def _move(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    duplicate_review.move_to_partner(wb.store, clip_id, annotator=who, note=note, seen_decision_id=seen_id)
    state = wb.store.clip_state(clip_id)
    return f"clip {clip_id}: moved to {state['split']} / {state['source_group']} beside its partner"


def _distinct(wb: Workbench, clip_id: int, who: str, seen_id: int | None, note: str | None, command: dict) -> str:
    duplicate_review.not_duplicate(wb.store, clip_id, annotator=who, note=note, seen_decision_id=seen_id)
    return f"clip {clip_id}: not a duplicate of its partner; not raised again for this pair"


# action -> (what records it, how a repeat of it is described)
RESOLUTIONS = {"dup_move": (_move, "moved beside its partner"), "dup_distinct": (_distinct, "marked not a duplicate")}
