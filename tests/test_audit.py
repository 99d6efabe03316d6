"""Audit: detectors tested by planting known errors, and audit runs through real parts (a real
session, real audio, a real trained model, the audit job as a child process)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import app
from conftest import write_wav
from core import review
from core.checkpoint import save_checkpoint
from core.config import ConfigError, load_preset
from core.extreme_off import (DEFAULT_MAX_LABEL_PROB, DEFAULT_MIN_TOP_PROB, extreme_off_counts, extreme_off_proposals,
                              find_extreme_off)
from core.label_issues import LABEL_QUALITY_METHODS, label_issue_proposals, label_quality, rank_label_issues
from core.models import available_models, build_model
from core.review_sampling import review_curve, sample_spot_check
from core.store import Store, StoreError
from pipelines import audit as audit_pipeline
from pipelines import promotion
from pipelines.crossval import assign_folds
from pipelines.finetune import finetune
from pipelines.importing import import_dataset

CLASSES = ["alert_sounds", "emergency_sirens", "road_traffic"]
FREQ_HZ = {"alert_sounds": 700.0, "emergency_sirens": 1200.0, "road_traffic": 150.0}
# A small, fast model: 1 s clips, narrow CNN.
FAST = ["features.max_length_s=1.0", "features.n_mels=32", "model.cnn_channels=[16, 32, 32, 32]",
        "train.batch_size=8", "train.epochs=6", "train.early_stopping_patience=0"]


# --- detectors on planted errors ---------------------------------------------------------------

def noisy_dataset(rng: np.random.Generator, *, n: int = 300, n_classes: int = 4, n_errors: int = 15):
    """Out-of-sample-like probabilities for n clips and labels with n_errors planted flips."""
    truth = rng.integers(0, n_classes, n)
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), truth] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    labels = truth.copy()
    flipped = rng.choice(n, n_errors, replace=False)
    labels[flipped] = (truth[flipped] + rng.integers(1, n_classes, n_errors)) % n_classes
    return labels, probs, flipped


@pytest.mark.parametrize("method", sorted(LABEL_QUALITY_METHODS))
def test_label_issue_ranking_puts_planted_errors_first(rng, method):
    labels, probs, flipped = noisy_dataset(rng)
    order = rank_label_issues(labels=labels, pred_probs=probs, method=method)
    assert sorted(order.tolist()) == list(range(len(labels)))
    found = set(order[:2 * len(flipped)].tolist()) & set(flipped.tolist())
    assert len(found) >= 0.9 * len(flipped)
    quality = label_quality(labels=labels, pred_probs=probs, method=method)
    assert quality.shape == (len(labels),) and ((quality >= 0) & (quality <= 1)).all()
    assert np.all(np.diff(quality[order]) >= 0)  # lower = more likely mislabelled, first


def test_label_issue_proposals_carry_rank_score_and_reason():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.05, 0.95]])
    labels = np.array([0, 0, 1, 1])
    proposals = label_issue_proposals(clip_ids=[10, 11, 12, 13], labels=labels, pred_probs=probs,
                                      classes=["a", "b"], method="self_confidence", limit=2, folds=5)
    assert proposals.clip_id.tolist() == [11, 12] and proposals["rank"].tolist() == [1, 2]
    assert proposals.score.tolist() == pytest.approx([0.8, 0.6])  # 1 - p(label): higher = more suspect
    assert (proposals.method == "self_confidence").all()
    assert proposals.reason[0] == ("label issue (self confidence, 5-fold cross-validated): labelled a (p 0.20), "
                                   "model says b (p 0.80)")
    assert label_issue_proposals(clip_ids=[1, 2, 3, 4], labels=labels, pred_probs=probs, classes=["a", "b"],
                                 limit=0).empty


def test_extreme_off_thresholds_are_inclusive_and_ordered():
    probs = np.array([
        [0.10, 0.70, 0.20],  # label 0 at exactly the defaults: flagged
        [0.11, 0.80, 0.09],  # label prob just above 0.1: not flagged
        [0.02, 0.69, 0.29],  # top just below 0.7: not flagged
        [0.01, 0.01, 0.98],  # far off: flagged first
        [0.90, 0.05, 0.05],  # correct
    ])
    labels = np.array([0, 0, 0, 1, 0])
    assert (DEFAULT_MAX_LABEL_PROB, DEFAULT_MIN_TOP_PROB) == (0.1, 0.7)
    assert find_extreme_off(labels=labels, pred_probs=probs).tolist() == [3, 0]
    assert find_extreme_off(labels=labels, pred_probs=probs, max_label_prob=0.2, min_top_prob=0.5).tolist() == [3, 2, 0, 1]
    counts = extreme_off_counts(labels=labels, pred_probs=probs, classes=["a", "b", "c"])
    assert counts == {"a": 1, "b": 1, "c": 0}
    proposals = extreme_off_proposals(clip_ids=np.arange(5) + 100, labels=labels, pred_probs=probs, classes=["a", "b", "c"])
    assert proposals.clip_id.tolist() == [103, 100] and proposals.score.tolist() == pytest.approx([0.99, 0.9])
    assert proposals.reason[0] == "extreme-off (label p <= 0.1, top p >= 0.7): labelled b (p 0.01), model says c (p 0.98)"


def test_bad_inputs_name_the_parameter():
    probs = np.array([[0.5, 0.5], [0.2, 0.8]])
    with pytest.raises(ValueError, match="method: 'entropy' is not one of self_confidence, normalized_margin"):
        rank_label_issues(labels=np.array([0, 1]), pred_probs=probs, method="entropy")
    with pytest.raises(ValueError, match=r"labels: class ids \[2\] are outside \[0, 1\]"):
        find_extreme_off(labels=np.array([0, 2]), pred_probs=probs)
    with pytest.raises(ValueError, match="labels: expected 2 integer class ids"):
        find_extreme_off(labels=np.array([0.0, 1.0]), pred_probs=probs)
    with pytest.raises(ValueError, match="pred_probs: values must be probabilities"):
        find_extreme_off(labels=np.array([0, 1]), pred_probs=probs * 3)
    with pytest.raises(ValueError, match="max_label_prob: 1.5 must be a probability"):
        find_extreme_off(labels=np.array([0, 1]), pred_probs=probs, max_label_prob=1.5)
    with pytest.raises(ValueError, match=r"pred_probs: expected shape \(N, 3\)"):
        extreme_off_counts(labels=np.array([0, 1]), pred_probs=probs, classes=["a", "b", "c"])
    with pytest.raises(ValueError, match="limit: -1 must be a whole number"):
        label_issue_proposals(clip_ids=[1, 2], labels=np.array([0, 1]), pred_probs=probs, classes=["a", "b"], limit=-1)


def test_review_curve_precision_and_recall_at_budgets():
    curve = review_curve(is_error_in_order=[True, True, False, True, False], n_errors=4, budgets=[1, 2, 4, 10])
    assert [(c["reviewed"], c["found"]) for c in curve] == [(1, 1), (2, 2), (4, 3), (5, 3)]
    assert [c["precision"] for c in curve] == [1.0, 1.0, 0.75, 0.6]
    assert [c["recall"] for c in curve] == [0.25, 0.5, 0.75, 0.75]
    with pytest.raises(ValueError, match="n_errors"):
        review_curve(is_error_in_order=[True, True], n_errors=1, budgets=[1])


def test_spot_check_sample_is_seeded_and_bounded():
    relabelled = pd.DataFrame({"clip_id": range(20)})
    first = sample_spot_check(relabelled=relabelled, n=5, rng=np.random.default_rng(3))
    again = sample_spot_check(relabelled=relabelled, n=5, rng=np.random.default_rng(3))
    assert first.clip_id.tolist() == again.clip_id.tolist() and first.clip_id.nunique() == 5
    assert len(sample_spot_check(relabelled=relabelled.head(3), n=5, rng=np.random.default_rng(0))) == 3
    with pytest.raises(ValueError, match="rng: expected a numpy Generator"):
        sample_spot_check(relabelled=relabelled, n=5, rng=3)


def test_folds_keep_groups_whole_and_classes_spread():
    labels = [c for c in CLASSES for _ in range(30)]
    groups = [f"{label}-{i // 3}" for label in CLASSES for i in range(30)]
    folds = assign_folds(labels=labels, groups=groups, n_folds=5, seed=0)
    frame = pd.DataFrame({"label": labels, "group": groups, "fold": folds})
    assert (frame.groupby("group").fold.nunique() == 1).all()
    assert set(folds) == set(range(5))
    assert (frame.groupby(["fold", "label"]).size().unstack() >= 3).all().all()
    assert assign_folds(labels=labels, groups=groups, n_folds=5, seed=0).tolist() == folds.tolist()
    with pytest.raises(ConfigError, match="folds: 2 must be a whole number >= 3"):
        assign_folds(labels=labels, groups=groups, n_folds=2, seed=0)
    with pytest.raises(ConfigError, match="5 folds need at least 5 source groups; the pool has 3"):
        assign_folds(labels=labels, groups=[g[:4] for g in groups], n_folds=5, seed=0)


# --- audit runs on a real session ----------------------------------------------------------------

def make_dataset(root: Path, *, per_class: int = 24, seed: int = 0) -> Path:
    """1 s tones per class with small pitch jitter and noise; files named recNN-i (groups of 2)."""
    rng = np.random.default_rng(seed)
    t = np.arange(16000) / 16000
    for label, freq in FREQ_HZ.items():
        for i in range(per_class):
            wave = 0.3 * np.sin(2 * np.pi * freq * (1 + 0.03 * rng.standard_normal()) * t)
            write_wav(root / label / f"rec{i // 2:02d}-{i}.wav", wave + 0.03 * rng.standard_normal(t.size))
    return root


def _plant_and_import(store: Store, dataset: Path) -> tuple[int, int]:
    """Import the dataset and plant a label error it came with: a 150 Hz hum in the test split
    (never trained on) labelled as a siren. Returns (clip id, decision id)."""
    import_dataset(store, dataset, group_pattern=r"^(rec\d+)-", progress=False)
    state = store.labels()
    planted = int(state[(state.split == "test") & (state.label == "road_traffic")].clip_id.iloc[0])
    return planted, store.record_decision(planted, annotator="setup", action="relabel", new_label="emergency_sirens")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One model trained on the planted dataset, shared by the audit tests."""
    root = tmp_path_factory.mktemp("audit")
    dataset = make_dataset(root / "data")
    with Store.open(root / "trained") as store:
        _plant_and_import(store, dataset)
        outcome = finetune(store, preset="demo-fast", overrides=FAST, init_from="none", progress=False)
        assert outcome.status == "succeeded", outcome.result
        return dataset, store.run(outcome.run_id)


@pytest.fixture
def session(trained, tmp_path):
    """A fresh session holding the same clips and planted error, with the shared trained run
    registered (its run folder, checkpoint included, stays where it was trained)."""
    dataset, run = trained
    with Store.open(tmp_path / "session") as store:
        planted, decision = _plant_and_import(store, dataset)
        store.create_run(run["id"], kind="train", preset=run["preset"], config=run["config"], parent_run_id=None,
                         manifest_decision_id=decision, run_dir=run["run_dir"], status="succeeded")
        yield store, run["id"], planted


@pytest.mark.slow
def test_audit_stores_predictions_metrics_plots_and_flags_a_planted_error(session):
    store, run_id, planted = session
    state = store.labels()
    test_clips = state[state.split == "test"]
    held = int(test_clips[test_clips.label == "alert_sounds"].clip_id.iloc[0])
    review.send_to_quarantine(store, held, reason="sounds odd", annotator="ana")
    gone = int(test_clips[test_clips.label == "alert_sounds"].clip_id.iloc[1])
    review.exclude(store, gone, annotator="ana")
    n_test = len(test_clips) - 1  # the excluded clip is not audited at all

    outcome = audit_pipeline.audit(store, run_id=run_id, splits=["test", "val"], progress=False)

    assert outcome.status == "succeeded", outcome.error
    run = store.run(outcome.run_id)
    assert (run["kind"], run["status"], run["parent_run_id"]) == ("audit", "succeeded", run_id)
    predictions = store.predictions(outcome.run_id)
    assert set(predictions.split) == {"test", "val"}
    assert len(predictions) == int(state.split.isin(["test", "val"]).sum()) - 1  # the quarantined clip is predicted too
    assert gone not in set(predictions.clip_id) and held in set(predictions.clip_id)
    assert np.allclose([sum(p) for p in predictions.probs], 1.0, atol=1e-4)
    counts = outcome.counts["test"]
    assert (counts["clips"], counts["quarantined"], counts["excluded"]) == (n_test, 1, 1)
    assert counts["evaluated"] == n_test and counts["quarantined_share"] == pytest.approx(1 / n_test)
    metrics = store.run_metrics(outcome.run_id, split="test")
    value = dict(zip(metrics[metrics.class_label.isna()].name, metrics[metrics.class_label.isna()].value))
    assert value["quarantined"] == 1 and value["evaluated"] == n_test and value["excluded"] == 1
    assert {"accuracy", "f1_macro", "mAP", "ece", "unquarantined_accuracy"} <= set(value)
    assert "true_accuracy" not in value  # no true labels here
    per_class = metrics[metrics.class_label.notna()]
    assert set(per_class.class_label) == set(CLASSES)
    support = per_class[(per_class.name == "support")].set_index("class_label").value
    assert support.sum() == n_test  # the headline counts the quarantined clip as labelled
    apart = per_class[(per_class.name == "unquarantined_support")].set_index("class_label").value
    assert apart.sum() == n_test - 1 and apart["alert_sounds"] == support["alert_sounds"] - 1
    summary = "\n".join(outcome.lines())
    assert "without the quarantined" in summary and f"1 in quarantine ({1 / n_test:.1%} of the split" in summary
    for plot in ("confusion_test.png", "reliability_val.png"):
        assert (outcome.run_dir / "plots" / plot).stat().st_size > 5000

    # The planted error is extreme-off and now waits in the quarantine queue, with reason and score.
    assert outcome.key_classes["test"]["classes"]["emergency_sirens"]["now"] >= 1
    queue = store.quarantine_queue().set_index("clip_id")
    assert planted in queue.index
    entry = queue.loc[planted]
    assert (entry.method, entry.audit_run_id) == ("extreme_off", outcome.run_id)
    assert entry.score > 0.9 and "labelled emergency_sirens" in entry.reason and "model says road_traffic" in entry.reason
    assert queue.loc[held].method == "manual"  # the clip already open was not raised again
    assert set(outcome.proposals.clip_id) == {planted}


@pytest.mark.slow
def test_quarantining_a_candidates_errors_cannot_turn_a_failing_gate_into_a_pass(session):
    store, run_id, planted = session
    run = store.run(run_id)
    strict = {**run["config"], "gates": {**run["config"].get("gates", {}), "min_key_class_accuracy": 1.0,
                                         "min_class_accuracy": 0.0, "min_f1_macro": None, "min_accuracy": None}}
    store.create_run("strict", kind="train", preset=run["preset"], config=strict, parent_run_id=None,
                     manifest_decision_id=run["manifest_decision_id"], run_dir=run["run_dir"], status="succeeded")
    first = audit_pipeline.audit(store, run_id="strict", splits=["test"], progress=False)
    before = promotion.gate_report(store, run_id="strict")
    assert not before["passed"] and before["gates"]["failed"] == ["accuracy[emergency_sirens]"]  # the planted hum
    wrong = store.predictions(first.run_id, split="test").query("predicted != label").clip_id
    open_queue = set(store.quarantine_queue().clip_id)
    for clip in set(wrong) - open_queue:
        review.send_to_quarantine(store, int(clip), reason="the model disagrees", annotator="ana")
    audit_pipeline.audit(store, run_id="strict", splits=["test"], progress=False)
    after = promotion.gate_report(store, run_id="strict")
    assert after["audit_run_id"] != before["audit_run_id"] and after["quarantined_clips"] == len(set(wrong) | open_queue)
    assert not after["passed"] and after["gates"]["failed"] == before["gates"]["failed"]

    def key_value(report):
        return next(c["value"] for c in report["gates"]["criteria"] if c["name"] == "accuracy[emergency_sirens]")
    assert key_value(after) == key_value(before) < 1.0  # the same number: quarantine took no error out of it
    assert "quarantine cannot improve" in after["quarantine_rule"]


@pytest.mark.slow
def test_a_second_audit_reports_extreme_off_counts_against_the_first(session):
    store, run_id, planted = session
    clip = int(store.labels().query("split == 'test' and label == 'alert_sounds'").clip_id.iloc[0])
    store.record_decision(clip, annotator="ana", action="relabel", new_label="road_traffic")
    first = audit_pipeline.audit(store, run_id=run_id, splits=["test"], progress=False)
    assert first.key_classes["test"]["previous_audit"] is None
    # Decided by a person after the model froze its labels: counted, but not proposed (stale disagreement).
    assert set(first.proposals.clip_id) == {planted}
    review.relabel(store, clip, label="alert_sounds", annotator="ana")  # reviewed and put right
    second = audit_pipeline.audit(store, run_id=run_id, splits=["test"], progress=False)
    report = second.key_classes["test"]
    assert report["previous_audit"] == first.run_id
    road = report["classes"]["road_traffic"]
    assert road["previous"] == first.key_classes["test"]["classes"]["road_traffic"]["now"] >= 1
    assert road["change"] == road["now"] - road["previous"] < 0  # fewer extreme-off clips after the review
    assert second.proposals.empty  # the planted clip is still open in the queue: not raised twice
    assert "was" in "\n".join(second.lines())


@pytest.mark.slow
def test_audit_calibrates_on_val_and_judges_with_its_own_thresholds(session):
    store, run_id, planted = session
    outcome = audit_pipeline.audit(store, run_id=run_id, splits=["test"], progress=False)
    assert outcome.status == "succeeded", outcome.error
    assert set(store.predictions(outcome.run_id).split) == {"test"}  # val was frozen to calibrate, not audited
    judging = json.loads((outcome.run_dir / "metrics.json").read_text())["judging"]
    assert judging == outcome.judging == store.run(outcome.run_id)["summary"]["judging"]  # saved with the run
    n_val = int((store.labels().split == "val").sum())
    assert judging["calibration"]["n_samples"] == n_val and judging["calibration"]["temperature"] == 1.0
    assert judging["calibration"]["skipped"] == f"{n_val} val clips, fewer than the 20 a fit needs"
    assert judging["thresholds"]["mode"] == "per_class" and judging["trust"]["untrusted"] == []
    limits = judging["thresholds"]
    assert all(0 < limits["max_label_prob"][c] <= 1 / 3 and 0.5 <= limits["min_top_prob"][c] < 1 for c in CLASSES)
    assert set(outcome.proposals.clip_id) == {planted}
    reason = store.quarantine_queue().set_index("clip_id").loc[planted, "reason"]
    road = limits["min_top_prob"]["road_traffic"]
    assert reason.startswith(f"extreme-off (label p <= {limits['max_label_prob']['emergency_sirens']:.3g}, top p >= {road:.3g})")
    text = "\n".join(outcome.lines())
    assert f"calibration: none ({n_val} val clips, fewer than the 20 a fit needs); temperature 1" in text
    assert "extreme-off thresholds (per class, from the calibrated val clips): label p <= " in text

    fixed = audit_pipeline.audit(store, run_id=run_id, splits=["test"], thresholds="fixed", calibrate=False,
                                 progress=False)
    assert fixed.judging["thresholds"]["max_label_prob"] == dict.fromkeys(CLASSES, 0.1)
    assert fixed.judging["calibration"]["skipped"] == "calibration is off"
    assert "extreme-off thresholds (fixed): label p <= 0.1, top p >= 0.7" in "\n".join(fixed.lines())
    with pytest.raises(ConfigError, match="unknown key 'audit.max_lable_prob'; allowed: calibrate, "):
        audit_pipeline.audit(store, run_id=run_id, max_lable_prob=0.2, progress=False)


@pytest.mark.slow
def test_trust_check_proposes_nothing_in_a_class_the_model_is_too_weak_on(session):
    store, run_id, planted = session
    state = store.labels()
    val = state[state.split == "val"]
    for clip in val[val.label == "alert_sounds"].clip_id:  # the model hears alert sounds; val now calls them traffic
        store.record_decision(int(clip), annotator="setup", action="relabel", new_label="road_traffic")
    n_road, n_alert = int((val.label == "road_traffic").sum()), int((val.label == "alert_sounds").sum())
    outcome = audit_pipeline.audit(store, run_id=run_id, splits=["test"], progress=False)
    assert outcome.status == "succeeded", outcome.error
    trust = outcome.judging["trust"]
    assert trust["untrusted"] == ["alert_sounds", "road_traffic"]
    assert trust["accuracy"]["alert_sounds"] is None  # no val clips of it are left
    assert trust["accuracy"]["road_traffic"] == pytest.approx(n_road / (n_road + n_alert))
    assert outcome.proposals.empty  # the planted hum: the model calls it road traffic, a class it cannot be trusted on
    assert planted not in set(store.quarantine_queue().clip_id)
    assert set(outcome.key_classes["test"]["classes"]) == {"emergency_sirens"}  # only what was judged is counted
    text = "\n".join(outcome.lines())
    assert (f"the model is too weak on class road_traffic (val accuracy {n_road / (n_road + n_alert):.2f}) to judge "
            "its labels; train a better model first") in text
    assert "the model cannot be checked on class alert_sounds (no val clips): its labels are not judged" in text


@pytest.mark.slow
@pytest.mark.parametrize("architecture", available_models())
def test_audit_works_with_every_registered_architecture(session, architecture):
    store, _, _ = session
    preset = "ast-lms" if architecture == "ast" else "demo-fast"
    tiny = ["features.max_length_s=1.0", "features.n_mels=32", "features.n_fft=512", "features.hop_length=160",
            "features.f_min_hz=0", "features.f_max_hz=null", "model.ast_hidden_size=32", "model.ast_layers=1",
            "model.ast_heads=2", "model.cnn_channels=[8, 8, 8, 8]"]  # a saved checkpoint holds concrete features
    config = load_preset(preset, tiny)
    model = build_model(config.model, feature_cfg=config.features, labels=CLASSES)
    run_dir = Path(store.session_dir) / "runs" / f"handmade-{architecture}"
    save_checkpoint(run_dir / "checkpoint", model=model, model_cfg=config.model, feature_cfg=config.features,
                    labels=CLASSES, norm_stats={})
    store.create_run(f"handmade-{architecture}", kind="train", preset=preset, config=config.to_dict(), parent_run_id=None,
                     manifest_decision_id=None, run_dir=run_dir, status="succeeded")
    outcome = audit_pipeline.audit(store, run_id=f"handmade-{architecture}", splits=["test"], progress=False)
    assert outcome.status == "succeeded", outcome.error
    assert len(store.predictions(outcome.run_id)) == outcome.counts["test"]["clips"] > 0


@pytest.mark.slow
def test_label_issue_ranking_with_cross_validation(session):
    store, run_id, planted = session
    state = store.labels()
    train_traffic = state[(state.split == "train") & (state.label == "road_traffic")].clip_id.iloc[:2].astype(int).tolist()
    for clip in train_traffic:  # planted in the training split, where the audited model cannot see them
        store.record_decision(clip, annotator="setup", action="relabel", new_label="emergency_sirens")
    outcome = audit_pipeline.audit(store, run_id=run_id, splits=["train", "val", "test"], label_issues=True, folds=3,
                                   cv_preset="demo-fast", cv_overrides=FAST + ["train.epochs=4"], max_label_issues=5,
                                   progress=False)
    assert outcome.status == "succeeded", outcome.error
    ranking = pd.read_parquet(outcome.run_dir / "crossval" / "label_issues.parquet")
    assert len(ranking) == len(state) and set(ranking.fold) == {1, 2, 3}
    assert set(ranking.nsmallest(5, "quality").clip_id) >= set(train_traffic) | {planted}
    for fold in (1, 2, 3):  # each fold model held out whole groups and trained from scratch
        manifest = pd.read_parquet(outcome.run_dir / "crossval" / "folds" / f"fold-{fold}" / "manifest.parquet")
        held = manifest[manifest.split == "test"]
        assert set(held.clip_id) == set(ranking[ranking.fold == fold].clip_id)
        job = json.loads((outcome.run_dir / "crossval" / "folds" / f"fold-{fold}" / "job.json").read_text())
        assert job["init_checkpoint"] is None
    ranked = outcome.proposals[outcome.proposals.method == "self_confidence"]
    assert set(train_traffic) <= set(ranked.clip_id) and len(ranked) <= 5
    queue = store.quarantine_queue().set_index("clip_id")
    assert queue.loc[train_traffic, "rank"].max() <= 5
    assert outcome.label_issues["folds"] == 3 and outcome.label_issues["ranked"] == len(state)
    li = outcome.label_issues  # sized by max_label_issues here; the noise estimate and the trust check are reported
    assert li["queue"] == {"size": 5, "cap": int(0.1 * len(state)), "max_label_issues": 5}
    assert set(li["noise"]["rate"]) == set(CLASSES) and li["trust"]["source"] == "out-of-fold"
    assert len(li["fold_temperatures"]) == 3
    assert "estimated label noise: alert_sounds " in "\n".join(outcome.lines())


@pytest.mark.slow
def test_spot_check_draws_relabelled_clips_since_a_run(session):
    store, run_id, _ = session
    clips = store.labels().clip_id.astype(int).tolist()[:6]
    for clip in clips[:4]:
        review.relabel(store, clip, label="human_scream", annotator="ana")
    undone = review.relabel(store, clips[4], label="human_scream", annotator="ana")
    review.undo(store, undone, annotator="ana")
    picked = audit_pipeline.spot_check(store, since_run=run_id, n=3, seed=1)
    assert len(picked) == 3 and set(picked.clip_id) <= set(clips[:4])
    assert (picked.label == "human_scream").all() and (picked.annotator == "ana").all()
    assert set(audit_pipeline.spot_check(store, since_run=run_id, n=10, seed=1).clip_id) == set(clips[:4])
    assert audit_pipeline.spot_check(store, since_run=run_id, n=3, seed=1).clip_id.tolist() == picked.clip_id.tolist()


@pytest.mark.slow
def test_bad_requests_are_refused_before_any_work(session):
    store, run_id, _ = session
    with pytest.raises(StoreError, match="no production model yet"):
        audit_pipeline.audit(store, progress=False)
    with pytest.raises(StoreError, match="no run with id 'nope'"):
        audit_pipeline.audit(store, run_id="nope", progress=False)
    with pytest.raises(ConfigError, match="splits"):
        audit_pipeline.audit(store, run_id=run_id, splits=["holdout"], progress=False)
    with pytest.raises(ConfigError, match="unknown preset"):
        audit_pipeline.audit(store, run_id=run_id, label_issues=True, cv_preset="nope", progress=False)
    with pytest.raises(ConfigError, match="max_label_prob"):
        audit_pipeline.audit(store, run_id=run_id, max_label_prob=2.0, progress=False)
    assert store.runs(kind="audit").empty


@pytest.mark.slow
def test_cli_audit_and_one_line_errors(session, capsys):
    store, run_id, _ = session
    session_dir = str(store.session_dir)
    store.close()
    for args, message in [  # one bad request per command, in-process (tests/test_cli.py runs the real entry point)
        (["audit", "--run", "nope"], "earmark: error: no run with id 'nope'"),
        (["promote", "--run", run_id, "--actor", "ana"], f"earmark: error: run {run_id} has no audit of the test split"),
        (["rollback", "--actor", "ana", "--reason", "a test"], "earmark: error: no production model yet"),
        (["rollback", "--actor", "ana", "--reason", " "], "earmark: error: reason: a rollback needs a reason"),
        (["spotcheck"], "earmark: error: no production model yet"),
        (["compare", "nope", run_id], "earmark: error: no run with id 'nope'"),
    ]:
        code = app.main([args[0], "--session", session_dir] + args[1:])
        out, err = capsys.readouterr()
        assert code == 2, (args, out, err)
        assert err.startswith(message) and len(err.strip().splitlines()) == 1, err
    code = app.main(["audit", "--session", session_dir, "--run", run_id, "--splits", "test", "--json",
                     "--thresholds", "fixed", "--min-class-accuracy", "0.9"])
    out, err = capsys.readouterr()
    assert code == 0, err
    line = json.loads(out.strip().splitlines()[-1])
    assert line["status"] == "succeeded" and line["counts"]["test"]["clips"] > 0
    assert line["judging"]["thresholds"]["mode"] == "fixed" and line["judging"]["trust"]["min_accuracy"] == 0.9
