"""The expanded test set (B4): many source groups x a few clips per class, none heard in training
or validation, recorded as a named clip set (core/clip_sets.py) that audits score and gates read.

Where the clips come from: the session's usable labelled clips (readable, not excluded, never an
augmented copy) whose source group has no clip at all in the train or val split: in practice the
test split and any clip not placed in a split yet (an inbox clip, a held-out import). A group
with even one clip in train or val is left out whole, however its clips are split now: its
speaker or recording was heard, so its other clips would flatter the number (leakage). A clip
without a group is a group of its own. Quarantined clips stay eligible: like the gates, the set
counts every clip as labelled, and letting quarantine choose test clips would let it pick the easy ones.

Per class, `groups` of the eligible groups that hold at least `per_group` clips of the class are
drawn, then `per_group` clips from each (plan B: SPEECH 10 speakers x 5 clips, NONSPEECH 20
sounds x 3; both can be given per class). The draw is seeded: the same session, labels and seed
give the same set. The set is recorded through the store (append-only: replacing a name keeps its
earlier versions). Then the model (production, or a named run) is audited on the test split and
the new set, without proposals, and the 95% interval of its accuracy on each is reported
(core/accuracy_interval.py): the widths say how much each set can tell.

    outcome = build_expanded_test(store, groups={"SPEECH": 10, "NONSPEECH": 20},
                                  per_group={"SPEECH": 5, "NONSPEECH": 3}, actor="ana")
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import pandas as pd

from core.accuracy_interval import accuracy_interval
from core.clip_sets import check_clip_set_name
from core.config import ConfigError
from core.store import Store
from pipelines.audit import audit, resolve_model_run
from pipelines.crossval import clip_groups
from pipelines.promotion import scored_run

DEFAULT_NAME = "test_expanded"
HEARD_SPLITS = ("train", "val")  # a group with any clip here is never tested on
PerClass = int | Mapping[str, int]


@dataclasses.dataclass
class ExpandedTestOutcome:
    """What build_expanded_test recorded and measured."""
    name: str
    set_id: int
    replaces: int | None
    clips: pd.DataFrame            # clip_id, label, group, split
    per_class: dict[str, dict[str, int]]
    eligible: dict[str, int]       # clips, groups, leaky_clips (test clips of groups heard in train/val)
    model_run_id: str | None = None
    audit_run_id: str | None = None
    intervals: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)  # "test" / name -> interval
    note: str | None = None        # why no model scored the set

    def lines(self) -> list[str]:
        head = (f"clip set {self.name!r} (id {self.set_id}" + (f", replaces {self.replaces}" if self.replaces else "")
                + f"): {len(self.clips)} clips from {self.clips['group'].nunique()} source groups, none in train or val")
        lines = [head, *(f"  {label}: {c['groups']} groups x {c['per_group']} clips (of {c['eligible_groups']} eligible "
                         "groups)" for label, c in self.per_class.items())]
        lines.append(f"  drawn from {self.eligible['clips']} eligible clips in {self.eligible['groups']} groups; "
                     f"{self.eligible['leaky_clips']} test clips were left out: their group has clips in train or val")
        if self.note:
            return lines + [f"  not scored: {self.note}"]
        lines.append(f"  accuracy of run {self.model_run_id} (audit {self.audit_run_id}), 95% intervals:")
        for split, value in self.intervals.items():
            lines.append(f"    {split:<14} {interval_text(value)}")
        return lines


def interval_text(value: dict[str, Any]) -> str:
    """'0.912 on 50 clips / 10 groups; Wilson [0.80, 0.96] (width 0.16); by group [...] (width ...)'."""
    by_group = ("by group: fewer than 2 groups" if value["by_group"] is None else
                f"by group [{value['by_group'][0]:.3f}, {value['by_group'][1]:.3f}] (width {value['by_group_width']:.3f})")
    return (f"{value['accuracy']:.3f} on {value['n']} clips / {value['groups']} groups; Wilson [{value['wilson'][0]:.3f}, "
            f"{value['wilson'][1]:.3f}] (width {value['wilson_width']:.3f}); {by_group}")


def parse_per_class(value: PerClass | str, *, option: str) -> PerClass:
    """A count for every class (10, "10") or per class ("SPEECH=10,NONSPEECH=20", or a mapping);
    every count a whole number >= 1. ConfigError in one line naming the option otherwise."""
    if isinstance(value, str):
        if "=" not in value:
            value = value.strip()
        else:
            pairs = [part.split("=", 1) for part in value.split(",") if part.strip()]
            value = {label.strip(): count.strip() for label, count in pairs}
    counts = value if isinstance(value, Mapping) else {None: value}
    if not counts:
        raise ConfigError(f"{option}: give a number, or CLASS=N pairs separated by commas")
    parsed = {}
    for label, count in counts.items():
        text = str(count)
        if isinstance(count, bool) or not text.isdigit() or int(text) < 1:
            where = f" for class {label!r}" if label is not None else ""
            raise ConfigError(f"{option}: {count!r}{where} is not a whole number >= 1")
        parsed[label] = int(text)
    return parsed[None] if None in parsed else parsed


def eligible_clips(store: Store, *, as_of: int | None = None) -> tuple[pd.DataFrame, int]:
    """The clips a test set may use (see the module docstring): clip_id, label, group, split;
    and how many otherwise usable clips were left out because their group was heard."""
    state = store.labels(as_of=as_of)
    originals = state[state.parent_clip_id.isna()].reset_index(drop=True)
    groups = pd.Series(clip_groups(originals), index=originals.index)
    heard = set(groups[originals.split.isin(HEARD_SPLITS)])
    usable = ((originals.status == "ok") & ~originals.excluded & originals.label.notna()
              & ~originals.split.isin(HEARD_SPLITS))
    leaky = usable & groups.isin(heard)
    keep = usable & ~leaky
    frame = pd.DataFrame({"clip_id": originals.clip_id[keep].astype("int64"), "label": originals.label[keep].astype(str),
                          "group": groups[keep], "split": originals.split[keep]})
    return frame.sort_values("clip_id").reset_index(drop=True), int(leaky.sum())


def sample_expanded_test(eligible: pd.DataFrame, *, groups: PerClass, per_group: PerClass,
                         seed: int = 0) -> pd.DataFrame:
    """Per class (sorted), `groups` groups among those with >= `per_group` clips of it, then
    `per_group` clips of each, with one seeded generator. ConfigError naming the class and what
    is allowed when a class has too few such groups, or a per-class count names no class."""
    labels = sorted(eligible["label"].unique())
    if not labels:
        raise ConfigError("no eligible clips: every usable labelled clip's source group has clips in train or val")
    wanted = {name: _per_class(value, labels, option) for name, value, option in
              (("groups", groups, "--groups"), ("per_group", per_group, "--per-group"))}
    rng = np.random.default_rng(seed)
    picked = []
    for label in labels:
        n_groups, n_clips = wanted["groups"][label], wanted["per_group"][label]
        sizes = eligible[eligible["label"] == label].groupby("group").size()
        big_enough = sorted(sizes[sizes >= n_clips].index)
        if len(big_enough) < n_groups:
            raise ConfigError(f"--groups: class {label!r} has {len(big_enough)} eligible source groups with at least "
                              f"{n_clips} clips (of {len(sizes)} eligible groups, none in train or val); asked for "
                              f"{n_groups}: allowed at most {len(big_enough)}, or fewer clips per group (--per-group)")
        for group in sorted(rng.choice(big_enough, size=n_groups, replace=False)):
            own = eligible[(eligible["label"] == label) & (eligible["group"] == group)]
            picked.append(own.iloc[np.sort(rng.choice(len(own), size=n_clips, replace=False))])
    return pd.concat(picked).sort_values("clip_id").reset_index(drop=True)


def _per_class(value: PerClass, labels: list[str], option: str) -> dict[str, int]:
    if not isinstance(value, Mapping):
        return {label: value for label in labels}
    unknown, missing = sorted(set(value) - set(labels)), [label for label in labels if label not in value]
    if unknown or missing:
        problem = f"{unknown[0]!r} is not a class of the eligible clips" if unknown else f"class {missing[0]!r} has no count"
        raise ConfigError(f"{option}: {problem}; give one number for every class, or CLASS=N for each of "
                          f"{', '.join(labels)}")
    return dict(value)


def build_expanded_test(store: Store, *, name: str = DEFAULT_NAME, groups: PerClass | str, per_group: PerClass | str,
                        seed: int = 0, replace: bool = False, actor: str, score_with: str | None = "production",
                        progress: bool = True,
                        on_event: Callable[[dict[str, Any]], None] | None = None) -> ExpandedTestOutcome:
    """Draw the set, record it as clip set `name`, then score it (see the module docstring).
    score_with: "production", a training run id, or None (do not score); on_event receives the
    scoring audit's child events (a UI's progress). Refused in one line
    (ConfigError / StoreError) before anything is written: a bad name or count, a name that
    exists without replace, too few eligible groups for a class."""
    try:
        check_clip_set_name(name)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    groups, per_group = parse_per_class(groups, option="--groups"), parse_per_class(per_group, option="--per-group")
    existing = store.clip_sets()
    if name in set(existing["name"]) and not replace:
        raise ConfigError(f"clip set {name!r} exists ({int(existing.loc[existing.name == name, 'clips'].iloc[0])} clips); "
                          "replace it (--replace) to record a new version (the old one stays in the history), or "
                          "choose another name")
    # the model is checked before anything is written: a bad --run leaves no set behind
    model = store.production_run() if score_with == "production" else score_with
    model = None if model is None else resolve_model_run(store, model)
    as_of = store.last_decision_id()
    eligible, leaky = eligible_clips(store, as_of=as_of)
    chosen = sample_expanded_test(eligible, groups=groups, per_group=per_group, seed=seed)
    per_class = _per_class_summary(eligible, chosen)
    settings = {"groups": groups, "per_group": per_group, "seed": seed, "frozen_at_decision": as_of,
                "per_class": per_class, "source": "clips of groups with no clip in train or val"}
    set_id = store.add_clip_set(name, chosen["clip_id"].tolist(), actor=actor, settings=settings, replace=replace)
    outcome = ExpandedTestOutcome(
        name=name, set_id=set_id, replaces=store.clip_set(name)["replaces"], clips=chosen, per_class=per_class,
        eligible={"clips": len(eligible), "groups": int(eligible["group"].nunique()), "leaky_clips": leaky})
    if model is None:
        outcome.note = ("no model to score it with (no production model yet); audit one later with "
                        "'earmark audit --run RUN' (audits include every clip set)")
        return outcome
    return score(store, outcome, model_run_id=model, progress=progress, on_event=on_event)


def _per_class_summary(eligible: pd.DataFrame, chosen: pd.DataFrame) -> dict[str, dict[str, int]]:
    summary = {}
    for label, part in chosen.groupby("label"):
        summary[str(label)] = {"groups": int(part["group"].nunique()), "per_group": int(part.groupby("group").size().iloc[0]),
                               "clips": len(part),
                               "eligible_groups": int(eligible.loc[eligible["label"] == label, "group"].nunique())}
    return summary


def score(store: Store, outcome: ExpandedTestOutcome, *, model_run_id: str, progress: bool,
          on_event: Callable[[dict[str, Any]], None] | None = None) -> ExpandedTestOutcome:
    """Audit the model on the test split and the new set (no proposals: scoring only), and put
    the 95% intervals of its accuracy on each on the outcome."""
    audited = audit(store, run_id=model_run_id, splits=["test", outcome.name], propose=False, progress=progress,
                    on_event=on_event)
    outcome.model_run_id, outcome.audit_run_id = audited.model_run_id, audited.run_id
    if audited.status != "succeeded":
        outcome.note = f"the audit {audited.run_id} {audited.status}: {audited.error}"
        return outcome
    state = store.labels()
    groups = dict(zip(state["clip_id"], clip_groups(state)))
    for split in ("test", outcome.name):
        frame = scored_run(store, audited.run_id, split=split).frame
        frame = frame[frame["evaluated"]]
        if not frame.empty:
            outcome.intervals[split] = accuracy_interval((frame["label"] == frame["predicted"]).to_numpy(),
                                                         frame["clip_id"].map(groups).tolist())
    return outcome
