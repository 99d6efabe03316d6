"""What an annotator can do to a clip, as decisions in the append-only log.

Tagging applies the tag's relabel rule (A3) and resolves or keeps the quarantine entry as the
rule says; every other action is one decision too, and undo appends a reversing decision.
Each action can be given the last decision id the annotator saw for the clip: if someone else
decided the clip since, the action is refused with who and when, so two annotators never
overwrite each other unknowingly.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from core.store import Rule, Store, StoreError


class ReviewConflict(StoreError):
    """Another annotator decided this clip after the caller loaded it."""


def _check_fresh(store: Store, clip_id: int, *, seen_decision_id: int | None, annotator: str) -> None:
    if seen_decision_id is None:
        return
    newer = store.decisions(clip_id=clip_id, since_id=seen_decision_id)
    others = newer[newer.annotator != annotator]
    if not others.empty:
        last = others.iloc[0]
        raise ReviewConflict(f"clip {clip_id} was already decided by {last.annotator} ({last.action}"
                             f"{' ' + last.tag if isinstance(last.tag, str) else ''}) at {last.created_at:%H:%M:%S}; "
                             "reload it to see the current state")


def rule_for(store: Store, tag: str) -> Rule:
    rules = {rule.tag: rule for rule in store.rules()}
    if tag not in rules:
        raise ValueError(f"tag {tag!r} has no relabel rule; known tags: {', '.join(rules) or 'none'}")
    return rules[tag]


def apply_tag(store: Store, clip_id: int, *, tag: str, annotator: str, note: str | None = None,
              seen_decision_id: int | None = None) -> int:
    """Tag a clip and apply the tag's rule: relabel / exclude, keep or release quarantine."""
    rule = rule_for(store, tag)
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(
        clip_id, annotator=annotator, action="tag", tag=tag, rule=rule.describe(),
        new_label=rule.target_label if rule.action == "relabel" else None,
        set_excluded=True if rule.action == "exclude" else None,
        set_quarantined=rule.keep_quarantined, note=note)


def relabel(store: Store, clip_id: int, *, label: str, annotator: str, note: str | None = None,
            seen_decision_id: int | None = None) -> int:
    """Set the clip's label directly (resolves its quarantine entry)."""
    if not label or not label.strip():
        raise ValueError("label must be a non-empty class name")
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(clip_id, annotator=annotator, action="relabel", new_label=label.strip(),
                                 set_quarantined=False, note=note)


def exclude(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
            seen_decision_id: int | None = None) -> int:
    """Leave the clip out of training and evaluation (resolves its quarantine entry)."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(clip_id, annotator=annotator, action="exclude", set_excluded=True,
                                 set_quarantined=False, note=note)


def include(store: Store, clip_id: int, *, annotator: str, note: str | None = None) -> int:
    return store.record_decision(clip_id, annotator=annotator, action="include", set_excluded=False, note=note)


def keep_quarantined(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
                     seen_decision_id: int | None = None) -> int:
    """Reviewed, but stays in quarantine (excluded from evaluation) for a second opinion."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(clip_id, annotator=annotator, action="keep", set_quarantined=True, note=note)


def send_to_quarantine(store: Store, clip_id: int, *, reason: str, annotator: str, method: str = "manual",
                       score: float | None = None) -> int:
    """Queue a clip for review by hand (e.g. from a confusion-matrix cell), with a reason."""
    if not reason or not reason.strip():
        raise ValueError("a reason is needed to quarantine a clip")
    entry = pd.DataFrame({"clip_id": [clip_id], "method": [method], "reason": [reason.strip()], "score": [score]})
    return store.raise_quarantine(entry, annotator=annotator)[0]


def add_note(store: Store, clip_id: int, *, note: str, annotator: str) -> int:
    if not note or not note.strip():
        raise ValueError("the note is empty")
    return store.record_decision(clip_id, annotator=annotator, action="note", note=note.strip())


def undo(store: Store, decision_id: int, *, annotator: str) -> int:
    """Append a decision reversing decision_id (its label/exclusion/quarantine effects)."""
    return store.undo(decision_id, annotator=annotator)


def last_undoable(store: Store, *, annotator: str) -> dict[str, Any] | None:
    """The annotator's most recent decision that is not undone and not itself an undo."""
    log = store.decisions(annotator=annotator, limit=50)
    log = log[(log.action != "undo") & ~log.undone]
    return None if log.empty else log.iloc[0].to_dict()
