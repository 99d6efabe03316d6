"""Relabel rule sets as files: the sirens set round-trips, bad files and bad rules are refused
with one line naming the entry, and nothing half-read reaches the store."""
from __future__ import annotations

import pytest

from core.relabel_rules import RuleFileError, dump_rules, load_rules, rules_file, seed_rules
from core.store import Rule, Store


def test_the_sirens_file_holds_the_plans_six_tags_and_round_trips(tmp_path):
    rules = load_rules(rules_file("sirens"))
    assert [r.tag for r in rules] == ["true_siren", "non_siren_alert", "ambient", "collision_artifact",
                                      "scream_like", "ambiguous_drone"]
    assert [r.hotkey for r in rules] == list("123456")
    drone = rules[-1]
    assert (drone.action, drone.target_label, drone.keep_quarantined) == ("exclude", None, True)
    assert load_rules(dump_rules(rules, tmp_path / "copy.yaml")) == rules


@pytest.mark.parametrize("text, message", [
    ("rules: [", "cannot read a rules file"),
    ("tags: []", "expected a top-level 'rules:' list"),
    ("rules:\n  - tag: a\n    action: relabel\n", "rule 1: rule 'a': a relabel rule needs a target_label"),
    ("rules:\n  - tag: a\n    action: delete\n", "rule 1: rule 'a': action must be one of"),
    ("rules:\n  - tag: a\n    action: exclude\n    colour: red\n", "rule 1: unknown field(s) colour"),
    ("rules:\n  - tag: a\n    action: keep\n    hotkey: 12\n", "hotkey must be one digit"),
    ("rules:\n  - tag: a\n    action: keep\n    hotkey: 1\n  - tag: b\n    action: keep\n    hotkey: 1\n",
     "hotkey used by more than one rule: 1"),
    ("rules:\n  - tag: a\n    action: exclude\n    target_label: x\n", "only a relabel rule has a target_label"),
])
def test_a_bad_rules_file_is_refused_naming_the_file_and_entry(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(RuleFileError, match="bad.yaml") as refused:
        load_rules(path)
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_seeding_adds_only_missing_tags_and_keeps_edits(tmp_path):
    with Store.open(tmp_path / "session") as store:
        store.set_rule(Rule("ambient", "relabel", "environmental_sounds", False, "edited here", "3"))
        assert seed_rules(store, load_rules(rules_file("sirens"))) == 5
        assert seed_rules(store, load_rules(rules_file("sirens"))) == 0
        assert {r.tag: r.description for r in store.rules()}["ambient"] == "edited here"
        with pytest.raises(ValueError, match="a relabel rule needs a target_label"):
            store.set_rule(Rule("oops", "relabel", None, False))
        assert "oops" not in {r.tag for r in store.rules()}


def test_seeding_a_set_whose_hotkey_the_session_gave_another_rule_adds_nothing(tmp_path):
    with Store.open(tmp_path / "session") as store:
        store.set_rule(Rule("horn", "relabel", "car_horn", False, "added in the Data tab", "4"))
        with pytest.raises(ValueError, match="rule 'collision_artifact': hotkey 4 is already the key of rule 'horn'"):
            seed_rules(store, load_rules(rules_file("sirens")))
        assert [r.tag for r in store.rules()] == ["horn"]


def _folder_dataset(root):
    from conftest import tone, write_wav
    for label, freq in (("emergency_sirens", 900.0), ("road_traffic", 200.0)):
        for i in range(2):
            write_wav(root / label / f"{label}-{i}.wav", tone(freq, seconds=0.5))
    return root


def test_export_writes_the_rules_and_import_carries_them_to_another_session(tmp_path, capsys):
    import app
    data = _folder_dataset(tmp_path / "data")
    first, second = tmp_path / "first", tmp_path / "second"
    assert app.main(["import", str(data), "--session", str(first), "--quiet",
                     "--relabel-rules", str(rules_file("sirens"))]) == 0
    assert "relabel rules: 6 of 6 added" in capsys.readouterr().out
    with Store.open(first) as store:
        store.set_rule(Rule("ambient", "relabel", "environmental_sounds", False, "edited in the Data tab", "3"))
    manifest = tmp_path / "out" / "manifest.csv"
    assert app.main(["export", "--session", str(first), "--out", str(manifest)]) == 0
    assert "the session's 6 relabel rules to" in capsys.readouterr().out
    exported = load_rules(tmp_path / "out" / "manifest.rules.yaml")
    assert {r.tag: r.description for r in exported}["ambient"] == "edited in the Data tab"

    assert app.main(["import", str(data), "--session", str(second), "--quiet",
                     "--relabel-rules", str(tmp_path / "out" / "manifest.rules.yaml")]) == 0
    with Store.open(second) as store:
        assert store.rules() == exported


def test_a_bad_rules_file_at_import_is_one_line_and_creates_no_session(tmp_path, capsys):
    import app
    data = _folder_dataset(tmp_path / "data")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - tag: a\n    action: relabel\n")
    assert app.main(["import", str(data), "--session", str(tmp_path / "s"), "--relabel-rules", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("earmark: error: ") and "needs a target_label" in err and "\n" not in err
    assert not (tmp_path / "s").exists()
