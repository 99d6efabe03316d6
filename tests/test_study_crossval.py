"""Grouped cross-validation (issue 16, B4): folds of whole source groups (k-fold and leave one
group out), a run's splits replaced without breaking the training rules, refusals in one line
before anything trains, and a real 3-fold study on the small demo whose report is checked
against its runs' own predictions."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import app
from conftest import TINY_CNN, copy_session, tone, write_wav
from core.checkpoint import CHECKPOINT_DIR
from core.config import ConfigError
from core.store import Store
from pipelines.finetune import resplit_manifest
from pipelines.importing import import_dataset
from pipelines.study_crossval import fold_splits, run_crossval


def pool(groups: list[str], labels: list[str] | None = None) -> pd.DataFrame:
    labels = labels or ["a", "b"] * (len(groups) // 2) + ["a"] * (len(groups) % 2)
    return pd.DataFrame({"clip_id": np.arange(1, len(groups) + 1), "label": labels, "source_group": groups})


def test_k_folds_hold_each_group_out_once_and_validate_on_the_next_fold():
    clips = pool([f"g{i // 2}" for i in range(24)])  # 12 groups of 2 clips
    table = fold_splits(clips, folds=4, seed=3)
    folds = [c for c in table.columns if c.startswith("fold-")]
    assert folds == ["fold-1", "fold-2", "fold-3", "fold-4"]
    assert ((table[folds] == "test").sum(axis=1) == 1).all()  # every clip is held out exactly once
    for k, fold in enumerate(folds):
        assert set(table.loc[table[fold] == "val", "clip_id"]) == set(table.loc[table[folds[(k + 1) % 4]] == "test", "clip_id"])
        for group, rows in table.groupby("group"):
            assert rows[fold].nunique() == 1, f"group {group} is split in {fold}"
    assert table.equals(fold_splits(clips, folds=4, seed=3))  # seeded


def test_leave_one_group_out_tests_one_group_per_fold_and_validates_on_whole_other_groups():
    clips = pool([f"speaker{i // 4}" for i in range(24)])  # 6 speakers
    table = fold_splits(clips, leave_one_group_out=True, seed=0)
    folds = [c for c in table.columns if c.startswith("fold-")]
    assert len(folds) == 6
    for fold in folds:
        assert table.loc[table[fold] == "test", "group"].nunique() == 1
        assert table.loc[table[fold] == "val", "group"].nunique() >= 1 and (table[fold] == "train").any()
        assert (table.groupby("group")[fold].nunique() == 1).all()
    assert sorted(table.loc[table[f] == "test", "group"].iloc[0] for f in folds) == [f"speaker{i}" for i in range(6)]


def test_leave_one_speaker_out_folds_by_the_speakers_and_deals_the_other_sounds_over_the_folds():
    speakers = [f"spk{i // 3}" for i in range(12)]  # 4 speakers x 3 SPEECH clips
    sounds = [f"sound{i // 2}" for i in range(16)]  # 8 non-speech sources x 2 clips
    clips = pool(speakers + sounds + ["spk0"], ["SPEECH"] * 12 + ["NONSPEECH"] * 16 + ["NONSPEECH"])  # one mislabelled
    table = fold_splits(clips, leave_one_group_out=True, group_class="SPEECH", seed=1)
    folds = [c for c in table.columns if c.startswith("fold-")]
    assert len(folds) == 4 and sorted(table.loc[table.left_out, "group"].unique()) == [f"spk{i}" for i in range(4)]
    for fold in folds:
        held = table.loc[table[fold] == "test", "group"]
        assert held[held.str.startswith("spk")].nunique() == 1 and held.str.startswith("sound").sum() == 4
        assert (table.groupby("group")[fold].nunique() == 1).all() and (table[fold] == "train").any()
    assert ((table[folds] == "test").sum(axis=1) == 1).all()  # every sound is tested once, in one fold
    assert table.equals(fold_splits(clips, leave_one_group_out=True, group_class="SPEECH", seed=1))
    for options, message in (({"group_class": "SPEECH", "folds": 3}, "group_class: applies to leave_one_group_out only"),
                             ({"group_class": "MUSIC", "leave_one_group_out": True}, "group_class: 'MUSIC' is not a label")):
        with pytest.raises(ConfigError, match=message):
            fold_splits(clips, **options)


@pytest.mark.parametrize("options, message", [
    ({"folds": 5}, "folds: 5 folds need at least 5 source groups; the pool has 3"),
    ({"folds": 2}, "folds: 2 must be a whole number >= 3"),
    ({"leave_one_group_out": True, "folds": 3}, "folds: give a number of folds or leave_one_group_out, not both"),
    ({}, "folds: give a number of folds or leave_one_group_out"),
])
def test_impossible_folds_are_refused_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        fold_splits(pool(["a", "a", "b", "b", "c", "c"]), **options)


def test_leave_one_group_out_needs_three_groups():
    with pytest.raises(ConfigError, match="leave_one_group_out: needs at least 3 source groups .* have 1$"):
        fold_splits(pool(["one"] * 6), leave_one_group_out=True)


def test_new_splits_keep_the_training_rules():
    manifest = pd.DataFrame({"clip_id": [1, 2, 3, 4, 5], "parent_clip_id": pd.array([None, None, None, 1, 2], dtype="Int64"),
                             "quarantined": [False, True, True, False, False], "split": ["train", "test", "train", "train", "train"]})
    splits = pd.Series({1: "test", 2: "train", 3: "val"})
    resplit = resplit_manifest(manifest, splits)
    # 2 is quarantined and now trains: dropped; 3 is quarantined but only validates: scored as labelled;
    # copy 4 follows its parent 1 into test: dropped; copy 5's parent 2 trains (copies follow the parent's split)
    assert resplit.set_index("clip_id")["split"].to_dict() == {1: "test", 3: "val", 5: "train"}
    with pytest.raises(ValueError, match="splits: 1 of the manifest's clips have no split"):
        resplit_manifest(manifest, splits.drop(3))
    with pytest.raises(ValueError, match="splits: 'holdout' is not a split; allowed: train, val, test"):
        resplit_manifest(manifest, splits.replace({"val": "holdout"}))


# --- a real 3-fold study ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def crossval_study(tmp_path_factory, small_demo_session):
    """The small demo (24 source groups) in 3 folds x 1 seed, two folds trained side by side, fold models
    dropped at the end."""
    session = copy_session(small_demo_session, tmp_path_factory.mktemp("crossval") / "session")
    with Store.open(session) as store:
        outcome = run_crossval(store, preset="demo-fast", folds=3, seeds=[5], overrides=TINY_CNN, keep_models=False,
                               parallel=2, progress=False)
        runs = {t.run_id: store.run(t.run_id) for t in outcome.study.trials}
        predictions = {t.run_id: store.predictions(t.run_id, split="test") for t in outcome.study.trials}
        study_run = store.run(outcome.study_id)
    return outcome, runs, predictions, study_run


def test_each_fold_is_a_run_on_its_own_splits_with_no_group_in_two(crossval_study):
    outcome, runs, _, study_run = crossval_study
    splits = outcome.study.splits()
    assert study_run["kind"] == "study" and study_run["status"] == "succeeded"
    assert [(t.name, t.status) for t in outcome.study.trials] == [(f"fold-{k}", "succeeded") for k in (1, 2, 3)]
    for trial in outcome.study.trials:
        run = runs[trial.run_id]
        assert run["kind"] == "train" and run["config"]["train"]["seed"] == 5
        manifest = pd.read_parquet(Path(run["run_dir"]) / "manifest.parquet")
        expected = splits.set_index("clip_id")[trial.fold]
        assert (manifest.set_index("clip_id")["split"] == expected.reindex(manifest["clip_id"])).all()
        groups = manifest.merge(splits[["clip_id", "group"]], on="clip_id").groupby("group")["split"].nunique()
        assert (groups == 1).all()
        assert not (Path(run["run_dir"]) / CHECKPOINT_DIR).exists()  # keep_models=False: the run and its numbers stay
    assert sorted(splits.loc[splits[f"fold-{k}"] == "test", "clip_id"].size for k in (1, 2, 3)) == [24, 24, 24]


def test_the_report_gives_each_fold_the_spread_over_folds_and_the_worst_group(crossval_study):
    outcome, runs, predictions, _ = crossval_study
    report = outcome.report
    accuracies = []
    for fold, trial in zip(report["folds"], outcome.study.trials):
        metrics = json.loads((Path(runs[trial.run_id]["run_dir"]) / "metrics.json").read_text())["splits"]["test"]["given"]
        assert fold["test_accuracy_mean"] == pytest.approx(metrics["accuracy"])
        assert fold["test_f1_macro_mean"] == pytest.approx(metrics["f1_macro"])
        assert fold["groups"] == 8 and fold["test_clips"] == 24
        accuracies.append(metrics["accuracy"])
    assert report["across_folds"]["test_accuracy"]["mean"] == pytest.approx(np.mean(accuracies))
    assert report["across_folds"]["test_accuracy"]["std"] == pytest.approx(np.std(accuracies, ddof=1))
    groups = outcome.study.splits().set_index("clip_id")["group"]
    scored = pd.concat(predictions.values())
    by_group = (scored["label"] == scored["predicted"]).groupby(scored["clip_id"].map(groups)).mean()
    assert report["worst_group"]["group"] in set(by_group[by_group == by_group.min()].index)
    assert report["worst_group"]["accuracy"] == pytest.approx(by_group.min())
    assert f"Worst group: **{report['worst_group']['group']}**" in outcome.files["markdown"].read_text()
    assert outcome.files["plot"].stat().st_size > 5000
    assert any(line.startswith("  worst group: ") for line in outcome.lines())


def test_a_cross_validation_that_cannot_be_cut_is_refused_before_any_run(tmp_path, capsys):
    for label, freq in (("beep", 600), ("siren", 900)):
        for i in range(4):
            write_wav(tmp_path / "ds" / label / f"rec-{label}{i}.wav", tone(freq + 10 * i, seconds=0.3))
    session = tmp_path / "session"
    with Store.open(session) as store:
        import_dataset(store, tmp_path / "ds", group_pattern=r"^(rec)-", progress=False)  # one source group
    code = app.main(["crossval", "--session", str(session), "--leave-one-group-out", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("earmark: error: leave_one_group_out: needs at least 3 source groups") \
        and err.count("\n") == 1
    code = app.main(["crossval", "--session", str(session), "--folds", "4", "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err == "earmark: error: folds: 4 folds need at least 4 source groups; the pool has 1\n"
    with Store.open(session) as store:
        assert store.runs().empty
