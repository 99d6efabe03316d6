"""Annotator actions (core.review) and the review queue (pipelines.review_queue) on a real store."""
from __future__ import annotations

import pandas as pd
import pytest

from core import review
from core.relabel_rules import load_rules, seed_rules
from core.store import Store
from pipelines.demo import SIRENS_RULES_FILE
from pipelines.review_queue import build_queue, review_counts

SIRENS_RULES = load_rules(SIRENS_RULES_FILE)


@pytest.fixture
def store(tmp_path):
    with Store.open(tmp_path / "session") as s:
        dataset = s.add_dataset(name="d", root=tmp_path, layout="manifest")
        s.add_clips(dataset, pd.DataFrame({
            "path": [f"c{i}.wav" for i in range(6)], "status": "ok", "split": "test",
            "original_label": ["emergency_sirens", "emergency_sirens", "alert_sounds", "emergency_sirens",
                               "collision_sounds", "road_traffic"]}))
        seed_rules(s, SIRENS_RULES)
        s.raise_quarantine(pd.DataFrame({"clip_id": [1, 2, 3, 4], "method": "extreme_off", "audit_run_id": "a1",
                                         "reason": ["beep", "drone", "siren?", "impact"], "score": [0.9, 0.8, 0.7, 0.6]}),
                           annotator="audit")
        yield s


def test_each_sirens_rule_relabels_or_excludes_as_plan_a_says(store):
    expected = {"true_siren": "emergency_sirens", "non_siren_alert": "alert_sounds", "ambient": "environmental_sounds",
                "collision_artifact": "collision_sounds", "scream_like": "human_scream"}
    assert {r.tag for r in SIRENS_RULES} == set(expected) | {"ambiguous_drone"}
    for tag, label in expected.items():
        review.apply_tag(store, 1, tag=tag, annotator="ana")
        state = store.clip_state(1)
        assert (state["label"], state["quarantined"], state["excluded"]) == (label, False, False), tag
        assert store.decisions(clip_id=1).iloc[0].rule.startswith(f"{tag} -> relabel {label}")
    review.apply_tag(store, 2, tag="ambiguous_drone", annotator="ana")
    drone = store.clip_state(2)
    assert drone["excluded"] and drone["quarantined"] and drone["label"] == "emergency_sirens"


def test_an_edited_rule_applies_from_then_on(store):
    rule = review.rule_for(store, "ambient")
    store.set_rule(type(rule)(rule.tag, "relabel", "road_traffic", True, "edited", rule.hotkey))
    review.apply_tag(store, 3, tag="ambient", annotator="ana")
    state = store.clip_state(3)
    assert state["label"] == "road_traffic" and state["quarantined"]


def test_unknown_tag_and_empty_inputs_are_refused(store):
    with pytest.raises(ValueError, match="known tags"):
        review.apply_tag(store, 1, tag="owl", annotator="ana")
    with pytest.raises(ValueError, match="reason"):
        review.send_to_quarantine(store, 5, reason=" ", annotator="ana")
    with pytest.raises(ValueError, match="label"):
        review.relabel(store, 5, label="", annotator="ana")


def test_two_annotators_never_overwrite_each_other_unknowingly(store):
    seen = store.clip_state(1)["last_decision_id"]
    review.apply_tag(store, 1, tag="non_siren_alert", annotator="ana", seen_decision_id=seen)
    with pytest.raises(review.ReviewConflict, match="already decided by ana"):
        review.apply_tag(store, 1, tag="true_siren", annotator="bob", seen_decision_id=seen)
    assert store.clip_state(1)["label"] == "alert_sounds"
    # ana may follow up on her own decision without a conflict
    review.add_note(store, 1, note="double-checked", annotator="ana")
    review.relabel(store, 1, label="alert_sounds", annotator="ana", seen_decision_id=seen)


def state(store, clip_id):
    row = store.clip_state(clip_id)
    return row["label"], bool(row["excluded"]), bool(row["quarantined"])


def test_a_later_tag_sets_the_whole_state_its_rule_gives(store):
    review.apply_tag(store, 1, tag="ambiguous_drone", annotator="ana")
    assert state(store, 1) == ("emergency_sirens", True, True)
    review.apply_tag(store, 1, tag="ambient", annotator="ana")  # the drone's exclusion does not outlive it
    assert state(store, 1) == ("environmental_sounds", False, False)
    review.apply_tag(store, 1, tag="ambiguous_drone", annotator="ana")  # nor does ambient's label
    assert state(store, 1) == ("emergency_sirens", True, True)


def test_undo_of_a_retag_restores_the_earlier_tags_state(store):
    review.apply_tag(store, 2, tag="ambiguous_drone", annotator="ana")
    ambient = review.apply_tag(store, 2, tag="ambient", annotator="ana")
    review.undo(store, ambient, annotator="ana")
    assert state(store, 2) == ("emergency_sirens", True, True)


def test_relabel_include_exclude_and_keep_after_a_tag(store):
    review.apply_tag(store, 3, tag="ambiguous_drone", annotator="ana")
    review.relabel(store, 3, label="alert_sounds", annotator="ana")  # naming the class includes and releases
    assert state(store, 3) == ("alert_sounds", False, False)
    review.exclude(store, 4, annotator="ana")
    review.apply_tag(store, 4, tag="true_siren", annotator="ana")
    assert state(store, 4) == ("emergency_sirens", False, False)
    review.keep_quarantined(store, 4, annotator="bob")  # keep touches only the quarantine
    assert state(store, 4) == ("emergency_sirens", False, True)
    review.exclude(store, 4, annotator="bob")  # exclude keeps the label, releases
    assert state(store, 4) == ("emergency_sirens", True, False)
    review.include(store, 4, annotator="bob")
    assert state(store, 4) == ("emergency_sirens", False, False)


def test_repeats_last_spots_a_repeated_key_but_not_a_new_decision(store):
    assert not review.repeats_last(store, 1, annotator="ana", action="tag", tag="ambient")
    first = review.apply_tag(store, 1, tag="ambient", annotator="ana")
    assert review.repeats_last(store, 1, annotator="ana", action="tag", tag="ambient")
    assert not review.repeats_last(store, 1, annotator="ana", action="tag", tag="true_siren")
    assert not review.repeats_last(store, 1, annotator="bob", action="tag", tag="ambient")
    assert not review.repeats_last(store, 1, annotator="ana", action="exclude")
    review.undo(store, first, annotator="ana")  # after an undo the same tag is a new decision
    assert not review.repeats_last(store, 1, annotator="ana", action="tag", tag="ambient")
    review.relabel(store, 1, label="alert_sounds", annotator="ana")
    assert review.repeats_last(store, 1, annotator="ana", action="relabel", label="alert_sounds")
    assert not review.repeats_last(store, 1, annotator="ana", action="relabel", label="road_traffic")


def test_seen_zero_means_no_decision_was_seen_so_any_other_is_a_conflict(store):
    assert pd.isna(store.clip_state(5)["last_decision_id"])  # never decided: the view passes seen 0
    review.apply_tag(store, 5, tag="ambient", annotator="bob")
    with pytest.raises(review.ReviewConflict, match="already decided by bob"):
        review.relabel(store, 5, label="road_traffic", annotator="ana", seen_decision_id=0)
    assert state(store, 5)[0] == "environmental_sounds"


def test_undo_restores_label_and_quarantine_and_last_undoable_skips_undone(store):
    first = review.apply_tag(store, 1, tag="non_siren_alert", annotator="ana")
    second = review.exclude(store, 4, annotator="ana")
    assert review.last_undoable(store, annotator="ana")["id"] == second
    review.undo(store, second, annotator="ana")
    assert not store.clip_state(4)["excluded"] and store.clip_state(4)["quarantined"]
    assert review.last_undoable(store, annotator="ana")["id"] == first
    review.undo(store, first, annotator="ana")
    state = store.clip_state(1)
    assert (state["label"], state["quarantined"]) == ("emergency_sirens", True)


def test_queue_filters_sorts_and_counts(store):
    queue = build_queue(store, source="quarantine")
    assert list(queue.clip_id) == [1, 2, 3, 4]  # by audit score
    review.apply_tag(store, 1, tag="non_siren_alert", annotator="ana")
    review.send_to_quarantine(store, 6, reason="sounds like a horn", annotator="bob")
    assert list(build_queue(store, source="quarantine").clip_id) == [2, 3, 4, 6]
    resolved = build_queue(store, source="quarantine", status="resolved")
    assert list(resolved.clip_id) == [1] and resolved.iloc[0].last_annotator == "ana"
    assert list(build_queue(store, source="quarantine", reason="horn").clip_id) == [6]
    # open clips first, then resolved ones
    assert list(build_queue(store, source="quarantine", label="alert_sounds", status="all").clip_id) == [3, 1]
    assert review_counts(store) == {"open": 4, "reviewed": 1, "total": 5}
    with pytest.raises(ValueError, match="source must be one of"):
        build_queue(store, source="everything")


def test_misclassified_and_low_confidence_queues_use_a_runs_predictions(store):
    store.create_run("r1", kind="train", preset="p", config={}, parent_run_id=None, manifest_decision_id=0, run_dir=store.session_dir)
    store.ingest_run_results("r1", predictions=pd.DataFrame({
        "clip_id": [1, 2, 3, 5], "split": "test", "label": ["emergency_sirens", "emergency_sirens", "alert_sounds", "collision_sounds"],
        "predicted": ["alert_sounds", "emergency_sirens", "alert_sounds", "emergency_sirens"],
        "confidence": [0.97, 0.55, 0.99, 0.80], "probs": [[0.1, 0.9]] * 4}))
    store.set_run_status("r1", "succeeded")
    wrong = build_queue(store, source="misclassified", run_id="r1")
    assert list(wrong.clip_id) == [1, 5]  # most confident mistakes first
    unsure = build_queue(store, source="low_confidence", run_id="r1")
    assert list(unsure.clip_id) == [2]
