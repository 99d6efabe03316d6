"""The expanded test set (B4): N groups x M clips per class drawn outside train and val, seeded,
refused in one line when it cannot be drawn, recorded as an append-only named clip set, scored
by name in an audit (metrics, predictions, intervals) and read by a gate policy that names it;
and `train --seeds` through the CLI. Real sessions (the small demo), tiny models."""
from __future__ import annotations

import json

import pandas as pd
import pytest

import app
from conftest import LENIENT_GATES, TINY_CNN, copy_session
from core.accuracy_interval import accuracy_interval
from core.config import ConfigError
from core.store import Store, StoreError
from pipelines.audit import audit
from pipelines.crossval import clip_groups
from pipelines.expanded_test import build_expanded_test, eligible_clips, sample_expanded_test
from pipelines.finetune_audit_gates import finetune_audit_gates

NAME = "test_expanded"


def test_accuracy_intervals_wilson_and_by_group():
    value = accuracy_interval([True] * 45 + [False] * 5, [f"g{i % 10}" for i in range(50)])
    assert (value["n"], value["groups"], value["accuracy"]) == (50, 10, 0.9)
    assert value["wilson"] == [pytest.approx(0.78640, abs=1e-5), pytest.approx(0.95652, abs=1e-5)]
    # two speakers, one always right and one always wrong: the clips are no independent draws
    clustered = accuracy_interval([True] * 25 + [False] * 25, ["a"] * 25 + ["b"] * 25, seed=1)
    assert clustered["by_group_width"] > 2 * clustered["wilson_width"] and clustered["by_group"][0] == 0.0
    assert accuracy_interval([True, False], ["a", "a"])["by_group"] is None  # one group: no group interval
    with pytest.raises(ValueError, match="groups: expected one per clip"):
        accuracy_interval([True, False], ["a"])


@pytest.fixture(scope="module")
def expanded(tmp_path_factory, trained_demo_session):
    """The trained small demo with one test clip moved into a training speaker's group (a leak),
    then an expanded test set of 1 group x 2 clips per class, scored with the trained run."""
    session = copy_session(trained_demo_session, tmp_path_factory.mktemp("expanded") / "session")
    with Store.open(session) as store:
        model = store.runs(kind="train").id.iloc[0]
        state = store.labels()
        test = state[state.split == "test"]
        label, group = test.groupby(["label", "source_group"]).size().loc[lambda s: s >= 3].index[0]
        leak = int(test[(test.label == label) & (test.source_group == group)].clip_id.iloc[0])
        store.record_decision(leak, annotator="tester", action="move",
                              set_group=state[state.split == "train"].source_group.iloc[0])
        queued = len(store.quarantine_queue(include_resolved=True))
        outcome = build_expanded_test(store, groups=1, per_group=2, seed=3, actor="tester", score_with=model,
                                      progress=False)
        record = store.clip_set(NAME)
        heard = set(clip_groups(store.labels().query("split in ['train', 'val']")))
        metrics = store.run_metrics(outcome.audit_run_id)
        predictions = store.predictions(outcome.audit_run_id, split=NAME)
        queued_after = len(store.quarantine_queue(include_resolved=True))
        eligible, _ = eligible_clips(store, as_of=record["settings"]["frozen_at_decision"])
    return {"session": session, "outcome": outcome, "record": record, "heard": heard, "leak": leak, "metrics": metrics,
            "predictions": predictions, "queued": (queued, queued_after), "eligible": eligible, "model": model}


def test_the_set_is_n_groups_x_m_clips_per_class_none_from_train_or_val(expanded):
    outcome, record = expanded["outcome"], expanded["record"]
    per_class = outcome.clips.groupby("label").agg(groups=("group", "nunique"), clips=("clip_id", "size"))
    assert len(per_class) == 6 and (per_class["groups"] == 1).all() and (per_class["clips"] == 2).all()
    assert not set(outcome.clips["group"]) & expanded["heard"]
    assert expanded["leak"] not in record["clip_ids"] and outcome.eligible["leaky_clips"] == 1
    assert record["clip_ids"] == sorted(outcome.clips["clip_id"]) and record["actor"] == "tester"
    assert record["settings"]["seed"] == 3 and record["settings"]["per_group"] == 2


def test_the_draw_is_seeded_and_reproducible(expanded):
    eligible, drawn = expanded["eligible"], expanded["outcome"].clips
    again = sample_expanded_test(eligible, groups=1, per_group=2, seed=3)
    pd.testing.assert_frame_equal(again, drawn)
    others = [sample_expanded_test(eligible, groups=1, per_group=2, seed=s)["clip_id"].tolist() for s in range(4, 10)]
    assert any(o != drawn["clip_id"].tolist() for o in others)


def test_the_audit_scores_the_set_by_name_without_queueing_anything(expanded):
    outcome, metrics, predictions = expanded["outcome"], expanded["metrics"], expanded["predictions"]
    assert sorted(predictions.clip_id) == expanded["record"]["clip_ids"]
    accuracy = metrics.query("split == @NAME and name == 'accuracy' and class_label.isna()")["value"].item()
    assert accuracy == pytest.approx((predictions.label == predictions.predicted).mean())
    assert metrics.query("split == @NAME and name == 'clips'")["value"].item() == len(outcome.clips)
    assert expanded["queued"][0] == expanded["queued"][1]  # scoring only: no proposals
    assert set(outcome.intervals) == {"test", NAME} and outcome.intervals[NAME]["n"] == len(outcome.clips)
    assert outcome.intervals[NAME]["accuracy"] == pytest.approx(accuracy)
    assert outcome.intervals[NAME]["groups"] == outcome.clips["group"].nunique()
    assert f"{NAME}  " in "\n".join(outcome.lines()) and "Wilson [" in "\n".join(outcome.lines())


def test_bad_requests_are_refused_in_one_line_and_write_nothing(expanded, tmp_path):
    session = copy_session(expanded["session"], tmp_path / "session")
    with Store.open(session) as store:
        before = store.clip_sets(history=True)
        for options, message in (
                ({"groups": 2, "per_group": 1, "name": "other"}, "--groups: class '.+' has 1 eligible source groups with at least 1 "
                                                 "clips .*allowed at most 1"),
                ({"groups": 1, "per_group": 2}, f"clip set '{NAME}' exists .*replace it \\(--replace\\)"),
                ({"groups": 1, "per_group": 1, "name": "test"}, "is a split's name"),
                ({"groups": 1, "per_group": 1, "name": "Bad name"}, "use lower-case letters"),
                ({"groups": "1", "per_group": "0", "name": "other"}, "--per-group: '0' is not a whole number >= 1"),
                ({"groups": "alert_sounds=1", "per_group": 1, "name": "other"}, "--groups: class '.+' has no count"),
                ({"groups": "nope=1", "per_group": 1, "name": "other"}, "'nope' is not a class")):
            with pytest.raises(ConfigError, match=message) as refused:
                build_expanded_test(store, actor="tester", score_with=None, progress=False, **options)
            assert "\n" not in str(refused.value)
        with pytest.raises(StoreError, match="no run with id 'nope'"):  # the model is checked before the set is written
            build_expanded_test(store, name="other", groups=1, per_group=1, actor="tester", score_with="nope")
        pd.testing.assert_frame_equal(store.clip_sets(history=True), before)


def test_replacing_a_set_appends_a_version_and_keeps_the_old(expanded, tmp_path):
    session = copy_session(expanded["session"], tmp_path / "session")
    old = expanded["record"]
    with Store.open(session) as store:
        new = build_expanded_test(store, groups=1, per_group=1, seed=5, replace=True, actor="tester", score_with=None,
                                  progress=False)
        history = store.clip_sets(history=True)
        assert history["name"].tolist() == [NAME, NAME] and history["replaces"].iloc[0] == old["id"]
        assert store.clip_set(NAME)["clip_ids"] == sorted(new.clips["clip_id"]) and len(new.clips) == 6
        assert store.clip_set(NAME, as_of=new.set_id - 1)["clip_ids"] == old["clip_ids"]
        assert "not scored" in "\n".join(new.lines())
        with pytest.raises(ConfigError, match="splits: .* drawn from train, val, test, test_expanded"):
            audit(store, run_id=expanded["model"], splits=["test", "nope"], progress=False)


def test_a_gate_policy_reads_the_named_set(expanded, tmp_path):
    session = copy_session(expanded["session"], tmp_path / "session")
    with Store.open(session) as store:
        outcome = finetune_audit_gates(store, preset="demo-fast", init_from="none", progress=False,
                                       overrides=[*TINY_CNN, *LENIENT_GATES, f"gates.split={NAME}"])
        assert outcome.status == "succeeded", outcome.error
        audited = store.run(outcome.audit_run_id)["config"]["splits"]
        scored = store.predictions(outcome.audit_run_id, split=NAME)
    assert NAME in audited  # an audit covers every clip set by default
    assert outcome.gates["split"] == NAME and outcome.gates["evaluated_clips"] == len(expanded["record"]["clip_ids"])
    criteria = {c["name"]: c for c in outcome.gates["gates"]["criteria"]}
    for label, part in scored.groupby("label"):  # every class gate reads the class's accuracy on the set
        assert criteria[f"accuracy[{label}]"]["value"] == pytest.approx((part.label == part.predicted).mean())
        assert f"({len(part)} clips)" in criteria[f"accuracy[{label}]"]["detail"]


def test_the_cli_refuses_an_impossible_set_in_one_line(expanded, tmp_path, capsys):
    session = copy_session(expanded["session"], tmp_path / "session")
    code = app.main(["expand-test", "--session", str(session), "--name", "bigger", "--groups", "5", "--per-group", "2",
                     "--no-score", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("earmark: error: --groups: class ") and err.count("\n") == 1


def test_train_with_seeds_reports_mean_std_and_interval_over_seeds(small_demo_session, tmp_path, capsys):
    session = copy_session(small_demo_session, tmp_path / "session")
    sets = [item for override in TINY_CNN for item in ("--set", override)]
    code = app.main(["train", "--session", str(session), "--seeds", "1,2", "--init-from", "none", "--quiet", "--json",
                     *sets])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["counts"]["succeeded"] == 2
    (config,) = report["configs"]
    assert config["name"] == "preset" and config["succeeded"] == 2
    assert config["val_accuracy_std"] is not None and config["val_accuracy_ci95_low"] <= config["val_accuracy_mean"]
    with Store.open(session) as store:
        runs = store.runs()
        seeds = sorted(store.run(r)["config"]["train"]["seed"] for r in runs[runs.kind == "train"].id)
    assert seeds == [1, 2] and (runs.kind == "study").sum() == 1
    assert app.main(["train", "--session", str(session), "--seeds", "1", "--processes", "2"]) == 2
    assert "--processes does not apply to --seeds" in capsys.readouterr().err


def test_clips_without_a_split_are_eligible_and_audited_in_a_set(expanded, tmp_path):
    """A held-out import (no split) is drawn from like the test split, and an audit of the set
    predicts and scores those clips although no split holds them."""
    session = copy_session(expanded["session"], tmp_path / "session")
    with Store.open(session) as store:
        test = store.labels().query("split == 'test'").head(2)
        clips = store.clips().set_index("id").loc[test.clip_id]
        folder = tmp_path / "held-out"
        folder.mkdir()
        for i, path in enumerate(clips["dataset_root"] + "/" + clips["path"]):
            (folder / f"h{i}.wav").write_bytes(open(path, "rb").read())
        dataset = store.add_dataset(name="held-out", root=folder, layout="folder")
        store.add_clips(dataset, pd.DataFrame({"path": ["h0.wav", "h1.wav"], "status": "ok", "split": None,
                                               "original_label": test.label.tolist(), "source_group": "new-speaker",
                                               "duration_s": clips["duration_s"].tolist(),
                                               "sample_rate_hz": clips["sample_rate_hz"].tolist()}))
        held = store.labels().query("source_group == 'new-speaker'")
        eligible, _ = eligible_clips(store)
        assert set(held.clip_id) <= set(eligible.clip_id) and held.split.isna().all()
        members = [*held.clip_id, *test.clip_id]
        store.add_clip_set("held", members, actor="tester")
        outcome = audit(store, run_id=expanded["model"], splits=["held"], propose=False, progress=False)
        assert outcome.status == "succeeded" and outcome.counts["held"]["clips"] == 4
        predicted = store.predictions(outcome.run_id, split="held")
        assert sorted(predicted.clip_id) == sorted(members) and predicted.split.isna().sum() == 2
