"""What an annotator can do to a clip, as decisions in the append-only log.

Tagging applies the tag's relabel rule (A3) and resolves or keeps the quarantine entry as the
rule says; every other action is one decision too, and undo appends a reversing decision.
Each action can be given the last decision id the annotator saw for the clip (0 when the clip
had none): if someone else decided the clip since, the action is refused with who and when, so
two annotators never overwrite each other unknowingly.

How decisions combine (a clip's state is, per field, the latest effective decision that sets it):
- A tag sets the clip's whole state as its rule says, whatever came before: label (the rule's
  target, or the given label for an exclude or keep rule, which make no claim about the class),
  excluded (only an exclude rule excludes) and quarantined (the rule's keep_quarantined). So
  `ambiguous_drone` (exclude, keep quarantined) then `ambient` leaves the clip labelled
  environmental_sounds, included and released: the same as tagging `ambient` alone.
- A relabel names the class, so it also includes the clip and releases it.
- Exclude excludes and releases; include only clears the exclusion; keep only keeps the clip
  quarantined; the label stays as it stands for all three.
- Undo drops one decision: the clip falls back to what the earlier decisions give.
- An inbox clip (split `unlabelled`) given a label is moved in the same transaction, by a 'move'
  decision recorded just before the label, to the split its source group has
  (core/inbox_placement.py). Undoing the label puts it back in the inbox queue; it never trains
  without a label, wherever the move put it.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from core.inbox_placement import placement
from core.store import Rule, Store, StoreError


class ReviewConflict(StoreError):
    """Another annotator decided this clip after the caller loaded it."""


def _check_fresh(store: Store, clip_id: int, *, seen_decision_id: int | None, annotator: str) -> None:
    """Refuse when another annotator decided the clip after seen_decision_id (0: the caller saw
    no decision on it, so any other annotator's decision is news). None skips the check."""
    if seen_decision_id is None:
        return
    newer = store.decisions(clip_id=clip_id, since_id=seen_decision_id)
    others = newer[newer.annotator != annotator]
    if not others.empty:
        last = others.iloc[0]
        raise ReviewConflict(f"clip {clip_id} was already decided by {last.annotator} ({last.action}"
                             f"{' ' + last.tag if isinstance(last.tag, str) else ''}) at {last.created_at:%H:%M:%S}; "
                             "see its current state before deciding again")


def rule_for(store: Store, tag: str) -> Rule:
    rules = {rule.tag: rule for rule in store.rules()}
    if tag not in rules:
        raise ValueError(f"tag {tag!r} has no relabel rule; known tags: {', '.join(rules) or 'none'}")
    return rules[tag]


def decision_fields(store: Store, clip_id: int, *, action: str, tag: str | None = None,
                    label: str | None = None) -> dict[str, Any]:
    """What a tag, relabel, exclude or keep records on clip_id (action, tag, rule, new_label,
    set_excluded, set_quarantined), without recording it: the one place these effects are
    spelled out, shared by the decisions here and by blind annotations, which hold them until
    their clip is settled (pipelines/double_annotation.py)."""
    if action == "tag":
        rule = rule_for(store, tag)
        target = rule.target_label if rule.action == "relabel" else store.clip(clip_id)["original_label"]
        return {"action": "tag", "tag": tag, "rule": rule.describe(), "new_label": target,
                "set_excluded": rule.action == "exclude", "set_quarantined": rule.keep_quarantined}
    if action == "relabel":
        if not label or not label.strip():
            raise ValueError("label must be a non-empty class name")
        return {"action": "relabel", "new_label": label.strip(), "set_excluded": False, "set_quarantined": False}
    if action == "exclude":
        return {"action": "exclude", "set_excluded": True, "set_quarantined": False}
    if action == "keep":
        return {"action": "keep", "set_quarantined": True}
    raise ValueError(f"action must be one of tag, relabel, exclude, keep; got {action!r}")


def apply_tag(store: Store, clip_id: int, *, tag: str, annotator: str, note: str | None = None,
              seen_decision_id: int | None = None) -> int:
    """Tag a clip and apply the tag's rule to its whole state: label, exclusion and quarantine
    (see the module docstring), so an earlier tag's exclusion never outlives a later tag."""
    fields = decision_fields(store, clip_id, action="tag", tag=tag)
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return _record_label(store, clip_id, annotator=annotator, note=note, **fields)


def relabel(store: Store, clip_id: int, *, label: str, annotator: str, note: str | None = None,
            seen_decision_id: int | None = None) -> int:
    """Set the clip's label directly; naming its class includes the clip and resolves its
    quarantine entry."""
    fields = decision_fields(store, clip_id, action="relabel", label=label)
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return _record_label(store, clip_id, annotator=annotator, note=note, **fields)


def _record_label(store: Store, clip_id: int, **decision: Any) -> int:
    """Record a decision that sets a label; an inbox clip's move comes with it, in one
    transaction (the move first, so 'undo my last' takes back the label). Returns the id of
    the labelling decision."""
    move = placement(store, clip_id) if isinstance(decision.get("new_label"), str) else None
    if move is None:
        return store.record_decision(clip_id, **decision)
    rows = pd.DataFrame([{"clip_id": clip_id, "annotator": decision["annotator"], "action": "move", **move},
                         {"clip_id": clip_id, **decision}])
    return store.record_decisions(rows)[-1]


def exclude(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
            seen_decision_id: int | None = None) -> int:
    """Leave the clip out of training and evaluation (resolves its quarantine entry)."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(clip_id, annotator=annotator, note=note, **decision_fields(store, clip_id, action="exclude"))


def include(store: Store, clip_id: int, *, annotator: str, note: str | None = None) -> int:
    return store.record_decision(clip_id, annotator=annotator, action="include", set_excluded=False, note=note)


def keep_quarantined(store: Store, clip_id: int, *, annotator: str, note: str | None = None,
                     seen_decision_id: int | None = None) -> int:
    """Reviewed, but stays in quarantine (excluded from evaluation) for a second opinion."""
    _check_fresh(store, clip_id, seen_decision_id=seen_decision_id, annotator=annotator)
    return store.record_decision(clip_id, annotator=annotator, note=note, **decision_fields(store, clip_id, action="keep"))


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


def repeats_last(store: Store, clip_id: int, *, annotator: str, action: str, tag: str | None = None,
                 label: str | None = None) -> bool:
    """Whether this decision would repeat the clip's latest effective one by the same annotator
    (same action and tag or label): a repeated key press, which would add only noise to the log."""
    log = store.decisions(clip_id=clip_id, limit=50)
    log = log[(log.action != "undo") & ~log.undone]
    if log.empty:
        return False
    last = log.iloc[0]
    carried = {"tag": ("tag", tag), "relabel": ("new_label", label)}.get(action)
    return (last.annotator == annotator and last.action == action
            and (carried is None or last[carried[0]] == carried[1]))


def last_undoable(store: Store, *, annotator: str) -> dict[str, Any] | None:
    """The annotator's most recent decision that is not undone and not itself an undo."""
    log = store.decisions(annotator=annotator, limit=50)
    log = log[(log.action != "undo") & ~log.undone]
    return None if log.empty else log.iloc[0].to_dict()
