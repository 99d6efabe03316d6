"""Promotion gates and comparisons: planted numbers in, exact verdicts out."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from core.config import ConfigError, ExperimentConfig, GatePolicy, load_preset
from core.evaluate import classification_report
from core.gates import FAIL, NOT_APPLICABLE, PASS, compare_predictions, evaluate_gates, write_comparison

CLASSES = ["alert_sounds", "emergency_sirens", "road_traffic"]


def one_hot_probs(predicted: list[int], *, confidence: float = 0.9) -> np.ndarray:
    probs = np.full((len(predicted), len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs


def report_for(y_true: list[int], predicted: list[int]) -> dict:
    return classification_report(y_true=np.array(y_true), probs=one_hot_probs(predicted), labels=CLASSES)


# 20 clips per class; the candidate calls n_wrong[c] clips of class c road_traffic (or alert for traffic).
def predictions(n_wrong: dict[int, int]) -> tuple[list[int], list[int]]:
    y_true, predicted = [], []
    for c in range(len(CLASSES)):
        for i in range(20):
            y_true.append(c)
            predicted.append((c + 2) % 3 if i < n_wrong.get(c, 0) else c)
    return y_true, predicted


def criterion(verdict: dict, name: str) -> dict:
    return next(c for c in verdict["criteria"] if c["name"] == name)


def test_sirens_defaults_live_in_every_preset():
    gates = load_preset("demo-fast").gates
    assert gates == GatePolicy()
    assert (gates.key_classes, gates.min_key_class_accuracy, gates.min_class_accuracy, gates.max_relative_regression) == \
        (["emergency_sirens"], 0.95, 0.93, 0.02)
    overridden = load_preset("demo-fast", ["gates.min_f1_macro=0.9", "gates.key_classes=[alert_sounds]"]).gates
    assert overridden.min_f1_macro == 0.9 and overridden.key_classes == ["alert_sounds"]
    assert ExperimentConfig.from_dict({}).gates == GatePolicy()  # runs saved before gates existed read the defaults


def test_policy_values_are_validated_with_the_dotted_key():
    with pytest.raises(ConfigError, match=r"gates.min_class_accuracy: 1.5 is out of range \[0, 1\]"):
        load_preset("demo-fast", ["gates.min_class_accuracy=1.5"])
    with pytest.raises(ConfigError, match="gates.max_relative_regression"):
        GatePolicy(max_relative_regression=-0.1)


def test_key_class_and_other_class_thresholds():
    # sirens 19/20 = 0.95 passes the key gate exactly; alert 18/20 = 0.90 fails 0.93; traffic 20/20 passes.
    y, pred = predictions({0: 2, 1: 1})
    verdict = evaluate_gates(policy=GatePolicy(), candidate=report_for(y, pred))
    assert verdict["passed"] is False and verdict["failed"] == ["accuracy[alert_sounds]"]
    sirens = criterion(verdict, "accuracy[emergency_sirens]")
    assert (sirens["status"], sirens["value"], sirens["threshold"]) == (PASS, 0.95, 0.95)
    alert = criterion(verdict, "accuracy[alert_sounds]")
    assert (alert["status"], alert["value"], alert["threshold"]) == (FAIL, 0.9, 0.93)
    assert alert["detail"] == "alert_sounds accuracy (20 clips) 0.9000 < 0.9300"
    assert criterion(verdict, "regression")["status"] == NOT_APPLICABLE  # no production model yet


def test_regression_against_production_is_relative_and_lists_flipped_clips():
    y, base_pred = predictions({})
    _, cand_pred = predictions({1: 1})  # one siren lost: 1.0 -> 0.95 = -5% relative
    clip_ids = np.arange(100, 100 + len(y))
    comparison = compare_predictions(classes=CLASSES, clip_ids=clip_ids, y_true=np.array(y),
                                     baseline_probs=one_hot_probs(base_pred), candidate_probs=one_hot_probs(cand_pred))
    assert comparison["broken"] == [{"clip_id": 120, "label": "emergency_sirens", "baseline": "emergency_sirens",
                                     "candidate": "alert_sounds"}]
    assert comparison["fixed"] == []
    assert comparison["per_class"]["emergency_sirens"]["accuracy_relative_change"] == pytest.approx(-0.05)
    assert comparison["confusion_diff"][1] == [1, -1, 0]
    verdict = evaluate_gates(policy=GatePolicy(key_classes=[]), candidate=report_for(y, cand_pred), comparison=comparison)
    assert verdict["failed"] == ["regression[emergency_sirens]"]
    regression = criterion(verdict, "regression[emergency_sirens]")
    assert regression["value"] == pytest.approx(-0.05) and regression["threshold"] == -0.02
    assert "1.0000 -> 0.9500 (-5.0% relative; at most -2% allowed) on 20 clips" in regression["detail"]
    lenient = evaluate_gates(policy=GatePolicy(key_classes=[], max_relative_regression=0.05),
                             candidate=report_for(y, cand_pred), comparison=comparison)
    assert lenient["passed"], lenient["failed"]  # exactly -5% is allowed at a 5% limit


def test_fixed_clips_and_a_class_with_no_clips():
    y = [0] * 10 + [2] * 10  # no sirens in this split
    base = [2] * 2 + [0] * 8 + [2] * 10
    comparison = compare_predictions(classes=CLASSES, clip_ids=np.arange(20), y_true=np.array(y),
                                     baseline_probs=one_hot_probs(base), candidate_probs=one_hot_probs(y))
    assert [c["clip_id"] for c in comparison["fixed"]] == [0, 1] and comparison["broken"] == []
    verdict = evaluate_gates(policy=GatePolicy(), candidate=report_for(y, y), comparison=comparison)
    assert verdict["passed"]
    assert criterion(verdict, "accuracy[emergency_sirens]")["status"] == NOT_APPLICABLE
    assert criterion(verdict, "regression[emergency_sirens]")["status"] == NOT_APPLICABLE
    assert criterion(verdict, "regression[alert_sounds]")["value"] == pytest.approx(0.25)


def test_c3_go_no_go_criteria():
    y, pred = predictions({0: 4, 2: 1})  # accuracy 55/60, F1 macro 0.916, alert F1 0.889
    policy = GatePolicy(key_classes=[], min_class_accuracy=None, max_relative_regression=None,
                        min_accuracy=0.9, min_f1_macro=0.9, min_rare_class_f1=0.9, rare_classes=["alert_sounds"])
    verdict = evaluate_gates(policy=policy, candidate=report_for(y, pred))
    assert [c["name"] for c in verdict["criteria"]] == ["accuracy", "f1_macro", "rare_class_f1"]
    assert criterion(verdict, "accuracy")["status"] == PASS  # 55/60 = 0.9167
    assert criterion(verdict, "f1_macro")["status"] == PASS
    rare = criterion(verdict, "rare_class_f1")
    assert rare["status"] == FAIL and rare["value"] == pytest.approx(report_for(y, pred)["per_class"]["alert_sounds"]["f1"])
    # Without a list, the rarest classes by support are used.
    y_rare = [0] * 3 + [1] * 20 + [2] * 20
    verdict = evaluate_gates(policy=GatePolicy(key_classes=[], min_class_accuracy=None, max_relative_regression=None,
                                               min_rare_class_f1=0.5, rare_class_count=1), candidate=report_for(y_rare, y_rare))
    assert "rare classes (alert_sounds)" in criterion(verdict, "rare_class_f1")["detail"]


def test_a_key_class_the_model_lacks_is_not_applicable():
    y, pred = predictions({})
    verdict = evaluate_gates(policy=GatePolicy(key_classes=["owls"]), candidate=report_for(y, pred))
    owls = criterion(verdict, "accuracy[owls]")
    assert owls["status"] == NOT_APPLICABLE and "not a class of this model" in owls["detail"]
    assert verdict["passed"]


def test_bad_inputs_are_refused():
    y, pred = predictions({})
    with pytest.raises(ValueError, match="policy: expected a GatePolicy"):
        evaluate_gates(policy={"split": "test"}, candidate=report_for(y, pred))
    with pytest.raises(ValueError, match="candidate: not a classification_report result"):
        evaluate_gates(policy=GatePolicy(), candidate={"accuracy": 1.0})
    with pytest.raises(ValueError, match="clip_ids: expected 60 ids"):
        compare_predictions(classes=CLASSES, clip_ids=[1, 2], y_true=np.array(y),
                            baseline_probs=one_hot_probs(pred), candidate_probs=one_hot_probs(pred))


def test_write_comparison_saves_json_and_png(tmp_path):
    y, base = predictions({})
    _, cand = predictions({0: 3})
    comparison = compare_predictions(classes=CLASSES, clip_ids=np.arange(len(y)), y_true=np.array(y),
                                     baseline_probs=one_hot_probs(base), candidate_probs=one_hot_probs(cand))
    paths = write_comparison(tmp_path / "cmp", comparison, title="test")
    saved = json.loads(paths["json"].read_text())
    assert saved["per_class"]["alert_sounds"]["accuracy_delta"] == pytest.approx(-0.15) and len(saved["broken"]) == 3
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["png"].stat().st_size > 5000


def test_a_production_model_that_cannot_be_compared_fails_the_regression_gate():
    y, pred = predictions({})
    verdict = evaluate_gates(policy=GatePolicy(), candidate=report_for(y, pred), production_run_id="r1")
    regression = criterion(verdict, "regression")
    assert verdict["failed"] == ["regression"] and regression["status"] == FAIL
    assert "production r1 predicts other classes" in regression["detail"]


def test_a_rollback_needs_a_reason_and_its_plan_names_both_runs_before_anything_is_written(tmp_path):
    from core.config import ConfigError
    from core.store import Store, StoreError
    from pipelines.promotion import rollback, rollback_plan
    with Store.open(tmp_path / "session") as store:
        with pytest.raises(StoreError, match="nothing to roll back"):
            rollback_plan(store)
        for run_id in ("r1", "r2"):
            store.create_run(run_id, kind="train", preset="demo-fast", config={}, parent_run_id=None,
                             manifest_decision_id=0, run_dir=tmp_path / run_id, status="succeeded")
            store.record_promotion(run_id, action="promote", actor="ana")
        assert rollback_plan(store) == ("r2", "r1", "production goes from run r2 (not evaluated on test) "
                                                    "to run r1 (not evaluated on test)")
        for blank in (None, "", "   "):
            with pytest.raises(ConfigError, match="a rollback needs a reason"):
                rollback(store, actor="ana", reason=blank)
        assert store.production_run() == "r2" and len(store.promotions()) == 2  # refused: nothing written
        assert rollback(store, actor="ana", reason="  r2 misses sirens  ") == ("r2", "r1")
        assert store.production_run() == "r1" and store.promotions().reason.iloc[0] == "r2 misses sirens"


def binary_report(y_true: list[int], speech_prob: list[float]) -> dict:
    probs = np.array([[1 - p, p] for p in speech_prob])
    return classification_report(y_true=np.array(y_true), probs=probs, labels=["NONSPEECH", "SPEECH"])


def test_detector_gates_read_balanced_accuracy_and_ece():
    # 90 NONSPEECH all right, 10 SPEECH of which 5 right: accuracy 0.95 hides a balanced accuracy of 0.75.
    y = [0] * 90 + [1] * 10
    report = binary_report(y, [0.1] * 90 + [0.9] * 5 + [0.2] * 5)
    assert report["accuracy"] == pytest.approx(0.95) and report["balanced_accuracy"] == pytest.approx(0.75)
    policy = GatePolicy(key_classes=[], min_class_accuracy=None, max_relative_regression=None,
                        min_balanced_accuracy=0.8, max_ece=0.2)
    verdict = evaluate_gates(policy=policy, candidate=report)
    assert verdict["failed"] == ["balanced_accuracy"]
    assert criterion(verdict, "balanced_accuracy")["detail"] == "balanced accuracy 0.7500 < 0.8000"
    # Confidence 0.9 on 95 clips all right (gap 0.1), 0.8 on 5 all wrong (gap 0.8): ECE 0.095 + 0.04.
    assert criterion(verdict, "ece")["value"] == pytest.approx(0.135) and criterion(verdict, "ece")["status"] == PASS
    tight = evaluate_gates(policy=dataclasses.replace(policy, min_balanced_accuracy=None, max_ece=0.1), candidate=report)
    assert tight["failed"] == ["ece"] and criterion(tight, "ece")["detail"] == "ECE 0.1350 > 0.1000"
    with pytest.raises(ConfigError, match=r"gates.max_ece: 2 is out of range"):
        GatePolicy(max_ece=2)


def test_a_speech_detector_must_beat_the_best_vad_at_low_snr():
    policy = GatePolicy(key_classes=[], min_class_accuracy=None, max_relative_regression=None, beat_vads_at_snr_db=0.0)
    report = binary_report([0, 1], [0.1, 0.9])
    missing = evaluate_gates(policy=policy, candidate=report)
    assert missing["failed"] == ["beats_vads"] and "compare detectors first" in criterion(missing, "beats_vads")["detail"]
    baselines = {"max_snr_db": 0.0, "clips": 40, "candidate": 0.8, "detectors": {"webrtc-3": 0.7, "silero": 0.82}}
    lost = criterion(evaluate_gates(policy=policy, candidate=report, vad_baselines=baselines), "beats_vads")
    assert lost["status"] == FAIL and lost["value"] == pytest.approx(-0.02)
    assert lost["detail"] == "balanced accuracy at SNR <= 0 dB on 40 clips: candidate 0.8000 <= best VAD silero 0.8200"
    won = evaluate_gates(policy=policy, candidate=report, vad_baselines={**baselines, "candidate": 0.9})
    assert won["passed"] and criterion(won, "beats_vads")["value"] == pytest.approx(0.08)
    empty = evaluate_gates(policy=policy, candidate=report, vad_baselines={**baselines, "clips": 0, "candidate": None})
    assert criterion(empty, "beats_vads")["status"] == NOT_APPLICABLE
    assert evaluate_gates(policy=GatePolicy(key_classes=[], min_class_accuracy=None, max_relative_regression=None),
                          candidate=report)["criteria"] == []  # siren presets: no detector gates
