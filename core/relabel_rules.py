"""Relabel rule sets as files (A3): data/relabel_rules/<name>.yaml, read, checked and written.

A rule set is data, not code: the demo seeds the sirens set, `earmark import --relabel-rules FILE`
adds a set to any session, and `earmark export` writes the session's rules beside its manifest,
so a session's tag vocabulary can be reviewed, versioned and carried to another session.
Each rule is checked by `Rule.check` (the store's one check); a set also needs unique tags and
hotkeys. No SQL here: the store writes, all or nothing, and refuses a hotkey that would belong to
two rules.

Editing a rule (the Data tab) never rewrites the past: a rule is read when a tag is applied, and
each decision records the label and the rule text it applied, so a change applies to later tags
only. Re-tag a clip to apply the new rule to it.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from core.store import Rule, Store

RULES_DIR = Path(__file__).resolve().parent.parent / "data" / "relabel_rules"
FIELDS = ("tag", "action", "target_label", "keep_quarantined", "hotkey", "description")


class RuleFileError(ValueError):
    """A rules file that cannot be read as a rule set: the message names the file and the entry."""


def rules_file(name: str) -> Path:
    """The built-in rule set `name` (e.g. "sirens")."""
    return RULES_DIR / f"{name}.yaml"


def load_rules(path: str | Path) -> list[Rule]:
    """Every rule of the file at `path`, checked; RuleFileError names what is wrong."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RuleFileError(f"{path}: cannot read a rules file ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    entries = data.get("rules") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise RuleFileError(f"{path}: expected a top-level 'rules:' list of rules")
    rules = [_rule(path, i, entry) for i, entry in enumerate(entries, start=1)]
    try:
        check_rule_set(rules)
    except ValueError as exc:
        raise RuleFileError(f"{path}: {exc}") from None
    return rules


def _rule(path: Path, number: int, entry: object) -> Rule:
    if not isinstance(entry, dict):
        raise RuleFileError(f"{path}: rule {number} must be a mapping of {', '.join(FIELDS)}")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        raise RuleFileError(f"{path}: rule {number}: unknown field(s) {', '.join(map(str, unknown))} (known: {', '.join(FIELDS)})")
    hotkey = entry.get("hotkey")
    rule = Rule(tag=entry.get("tag"), action=entry.get("action"), target_label=entry.get("target_label"),
                keep_quarantined=entry.get("keep_quarantined", False), description=entry.get("description") or "",
                hotkey=None if hotkey is None else str(hotkey))
    try:
        rule.check()
    except ValueError as exc:
        raise RuleFileError(f"{path}: rule {number}: {exc}") from None
    return rule


def check_rule_set(rules: Sequence[Rule]) -> None:
    """Each rule checked, and no tag or hotkey used twice (Review maps a key to one tag)."""
    for rule in rules:
        rule.check()
    for field in ("tag", "hotkey"):
        values = [getattr(rule, field) for rule in rules if getattr(rule, field) is not None]
        repeated = sorted({v for v in values if values.count(v) > 1})
        if repeated:
            raise ValueError(f"{field} used by more than one rule: {', '.join(repeated)}")


def dump_rules(rules: Sequence[Rule], path: str | Path) -> Path:
    """Write `rules` as a rules file that load_rules reads back unchanged."""
    path = Path(path)
    entries = [{field: getattr(rule, field) for field in FIELDS
                if getattr(rule, field) is not None and (field != "description" or rule.description)} for rule in rules]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"rules": entries}, sort_keys=False, allow_unicode=True))
    return path


def seed_rules(store: Store, rules: Sequence[Rule]) -> int:
    """Add the rules whose tags the session does not have yet (the session's edits are kept)."""
    existing = {rule.tag for rule in store.rules()}
    missing = [rule for rule in rules if rule.tag not in existing]
    store.set_rules(missing)
    return len(missing)
