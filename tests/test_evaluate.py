"""Tests for core/evaluate.py and core/plots.py: every expected number is worked out by hand."""
import json
import math

import numpy as np
import pytest

from core import plots
from core.evaluate import (
    apply_threshold,
    bin_names,
    bin_values,
    breakdown,
    calibrate_threshold,
    classification_report,
    compare_reports,
    psychometric_accuracy,
    psychometric_curve,
)

LABELS = ["a", "b", "c"]
# Six clips, argmax predictions [0, 0, 1, 1, 0, 2] against truth [0, 0, 0, 1, 1, 2].
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
PROBS = np.array([
    [0.7, 0.2, 0.1],
    [0.6, 0.3, 0.1],
    [0.2, 0.5, 0.3],  # a called b
    [0.1, 0.8, 0.1],
    [0.4, 0.35, 0.25],  # b called a
    [0.1, 0.1, 0.8],
])
PERFECT = np.eye(3)[Y_TRUE] * 0.9 + 0.1 / 3


def report(probs=PROBS, **options):
    return classification_report(y_true=Y_TRUE, probs=probs, labels=LABELS, **options)


# --- classification_report ----------------------------------------------------------------

def test_headline_metrics_match_hand_computation():
    result = report()
    assert result["n_samples"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)
    # Per-class F1 = 2/3, 1/2, 1; macro is their mean, weighted uses supports 3, 2, 1.
    assert result["f1_macro"] == pytest.approx(13 / 18)
    assert result["f1_weighted"] == pytest.approx(2 / 3)
    # AP: a ranks its positives 1st, 2nd, 4th -> (1 + 1 + 3/4) / 3; b: 1st, 3rd -> (1 + 2/3) / 2; c: 1.
    assert result["mAP"] == pytest.approx((11 / 12 + 5 / 6 + 1) / 3)


def test_per_class_metrics_match_hand_computation():
    per_class = report()["per_class"]
    assert list(per_class) == LABELS
    assert per_class["a"] == pytest.approx({"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "accuracy": 2 / 3,
                                            "support": 3, "average_precision": 11 / 12})
    assert per_class["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "accuracy": 0.5,
                                            "support": 2, "average_precision": 5 / 6})
    assert per_class["c"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0,
                                            "support": 1, "average_precision": 1.0})


def test_confusion_rows_are_true_and_columns_predicted():
    confusion = report()["confusion"]
    assert confusion["counts"] == [[2, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert np.allclose(confusion["normalized"], [[2 / 3, 1 / 3, 0], [0.5, 0.5, 0], [0, 0, 1]])


def test_top_k_accuracy_skips_k_that_covers_every_class():
    # Top-2 misses only clip 2 (true a, two highest are b and c); k=3 would be trivially 1.
    assert report(top_k=(1, 2, 3))["top_k_accuracy"] == pytest.approx({"1": 4 / 6, "2": 5 / 6})


def test_two_class_report_works_with_sklearn_binary_path():
    result = classification_report(y_true=np.array([0, 1, 1, 0]), labels=["speech", "nonspeech"],
                                   probs=np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.9, 0.1]]))
    assert result["accuracy"] == pytest.approx(0.75)
    assert result["top_k_accuracy"] == pytest.approx({"1": 0.75})


@pytest.mark.filterwarnings("error")
def test_class_without_clips_is_undefined_not_zero_and_does_not_warn():
    probs = np.hstack([PROBS, np.zeros((6, 1))])
    result = classification_report(y_true=Y_TRUE, probs=probs, labels=[*LABELS, "d"])
    assert result["per_class"]["d"] == {"precision": None, "recall": None, "f1": None, "accuracy": None,
                                        "support": 0, "average_precision": None}
    # Undefined values stay out of the averages, so they equal the three-class numbers.
    assert result["f1_macro"] == pytest.approx(13 / 18)
    assert result["mAP"] == pytest.approx((11 / 12 + 5 / 6 + 1) / 3)
    assert result["confusion"]["normalized"][3] == [0.0, 0.0, 0.0, 0.0]


@pytest.mark.filterwarnings("error")
def test_class_predicted_but_absent_has_precision_zero_and_no_recall():
    probs = np.array([[0.2, 0.8], [0.1, 0.9]])  # both clips are class 0, both called class 1
    per_class = classification_report(y_true=np.array([0, 0]), probs=probs, labels=["x", "y"])["per_class"]
    assert per_class["y"]["precision"] == 0.0
    assert per_class["y"]["recall"] is None
    assert per_class["x"]["precision"] is None and per_class["x"]["recall"] == 0.0


def test_report_round_trips_through_json():
    result = report()
    assert json.loads(json.dumps(result, allow_nan=False)) == result


def test_ece_and_mce_on_constructed_bins():
    # Confidence 0.9: 3 of 4 right (gap 0.15); confidence 0.7: 1 of 2 right (gap 0.2).
    probs = np.array([[0.1, 0.9]] * 4 + [[0.3, 0.7]] * 2)
    y_true = np.array([1, 1, 0, 1, 1, 0])
    calibration = classification_report(y_true=y_true, probs=probs, labels=["n", "p"], n_bins=5)["calibration"]
    assert calibration["ece"] == pytest.approx(4 / 6 * 0.15 + 2 / 6 * 0.2)
    assert calibration["mce"] == pytest.approx(0.2)
    assert [b["count"] for b in calibration["bins"]] == [0, 0, 0, 2, 4]
    assert calibration["bins"][0] == {"lower": 0.0, "upper": pytest.approx(0.2), "count": 0,
                                      "confidence": None, "accuracy": None}
    assert calibration["bins"][4]["accuracy"] == pytest.approx(0.75)
    assert calibration["bins"][4]["confidence"] == pytest.approx(0.9)


def test_perfectly_calibrated_confident_predictions_have_zero_ece():
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    calibration = classification_report(y_true=np.array([0, 1]), probs=probs, labels=["n", "p"])["calibration"]
    assert calibration["ece"] == 0.0 and calibration["mce"] == 0.0


@pytest.mark.parametrize(("options", "parameter"), [
    ({"probs": PROBS * 2}, "probs"),
    ({"probs": PROBS[:, :2]}, "probs"),
    ({"probs": -PROBS}, "probs"),
    ({"y_true": np.array([0, 0, 0, 1, 1, 3])}, "y_true"),
    ({"y_true": Y_TRUE.astype(float)}, "y_true"),
    ({"y_true": np.array([], dtype=int), "probs": np.zeros((0, 3))}, "y_true"),
    ({"labels": ["a", "a", "c"]}, "labels"),
    ({"n_bins": 0}, "n_bins"),
    ({"top_k": (0,)}, "top_k"),
])
def test_report_rejects_bad_input_naming_the_parameter(options, parameter):
    arguments = {"y_true": Y_TRUE, "probs": PROBS, "labels": LABELS, **options}
    with pytest.raises(ValueError, match=rf"^{parameter}: "):
        classification_report(**arguments)


# --- breakdowns ---------------------------------------------------------------------------

def test_breakdown_per_group():
    result = breakdown(y_true=np.array([0, 0, 1, 1]), y_pred=np.array([0, 1, 1, 1]),
                       groups=["short", "short", "long", "long"], labels=["x", "y"])
    # "short": x has F1 2/3, y (never true, once predicted) F1 0 -> macro 1/3.
    # "long": only y occurs and is always right; x is undefined and left out -> 1.
    assert result == {"long": {"n": 2, "accuracy": 1.0, "f1_macro": 1.0},
                      "short": {"n": 2, "accuracy": 0.5, "f1_macro": pytest.approx(1 / 3)}}


def test_breakdown_sorts_numeric_groups_and_follows_given_order():
    y = np.array([0, 1, 0, 1])
    by_snr = breakdown(y_true=y, y_pred=y, groups=np.array([10, -5, 10, 0]), labels=["x", "y"])
    assert list(by_snr) == [-5, 0, 10]
    assert all(type(key) is int for key in by_snr)  # plain ints, so the dict serialises
    names = bin_names(edges=[0, 3, 5, 10], unit="s")
    by_bin = breakdown(y_true=y, y_pred=y, groups=["5-10 s", "0-3 s", "5-10 s", "0-3 s"], labels=["x", "y"],
                       order=names)
    assert list(by_bin) == ["0-3 s", "5-10 s"]
    with pytest.raises(ValueError, match=r"^order: "):
        breakdown(y_true=y, y_pred=y, groups=["?", "0-3 s", "0-3 s", "0-3 s"], labels=["x", "y"], order=names)


def test_bin_values_names_bins_readably():
    assert bin_values([0.2, 3.0, 4.9, 5.0, 12.0], edges=[0, 3, 5, math.inf], unit="s") == [
        "0-3 s", "3-5 s", "3-5 s", "≥ 5 s", "≥ 5 s"]
    assert bin_values([5.0], edges=[0, 3, 5]) == ["3-5"]  # the last bin includes its upper edge
    assert bin_names(edges=[-math.inf, -5, 0, 5], unit="dB") == ["< -5 dB", "-5 to 0 dB", "0-5 dB"]
    with pytest.raises(ValueError, match=r"^values: "):
        bin_values([6.0], edges=[0, 3, 5])
    with pytest.raises(ValueError, match=r"^edges: "):
        bin_values([1.0], edges=[3, 0])


# --- threshold calibration ----------------------------------------------------------------

SCORES = np.array([0.1, 0.3, 0.4, 0.6, 0.8])
IS_POSITIVE = np.array([False, True, False, True, True])


@pytest.mark.parametrize(("objective", "threshold", "value"), [
    # >= 0.6 catches 2/3 positives, no negatives: balanced accuracy (2/3 + 1) / 2, Youden 2/3.
    ("balanced_accuracy", 0.5, 5 / 6),
    ("youden", 0.5, 2 / 3),
    # >= 0.3 catches all 3 positives and 1 negative: F1 = 6 / 7, the best of the five cuts.
    ("f1", 0.2, 6 / 7),
])
def test_calibrate_threshold_finds_the_hand_computed_optimum(objective, threshold, value):
    result = calibrate_threshold(scores=SCORES, y_true_binary=IS_POSITIVE, objective=objective)
    assert result == {"objective": objective, "threshold": pytest.approx(threshold), "value": pytest.approx(value)}


def test_apply_threshold_reproduces_dev_decisions():
    threshold = calibrate_threshold(scores=SCORES, y_true_binary=IS_POSITIVE, objective="f1")["threshold"]
    assert apply_threshold(scores=SCORES, threshold=threshold).tolist() == [False, True, True, True, True]


def test_threshold_bad_input():
    with pytest.raises(ValueError, match=r"^objective: 'auc' is not one of balanced_accuracy, f1, youden"):
        calibrate_threshold(scores=SCORES, y_true_binary=IS_POSITIVE, objective="auc")
    with pytest.raises(ValueError, match=r"^y_true_binary: "):
        calibrate_threshold(scores=SCORES, y_true_binary=np.ones(5, dtype=bool))
    with pytest.raises(ValueError, match=r"^scores: "):
        calibrate_threshold(scores=[0.1, np.nan, 0.3, 0.4, 0.5], y_true_binary=IS_POSITIVE)
    with pytest.raises(ValueError, match=r"^threshold: "):
        apply_threshold(scores=SCORES, threshold=float("nan"))


# --- psychometric curves ------------------------------------------------------------------

def synthetic_trials(*, mid, scale, chance, trials_per_level=200):
    """Trials whose per-level accuracy follows the logistic exactly (to the nearest trial)."""
    levels, correct = [], []
    for level in (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0):
        n_right = round(trials_per_level * float(psychometric_accuracy(level, mid=mid, scale=scale, chance=chance)))
        levels += [level] * trials_per_level
        correct += [True] * n_right + [False] * (trials_per_level - n_right)
    return np.array(levels), np.array(correct)


def test_psychometric_fit_recovers_dt50_and_dt75():
    levels, correct = synthetic_trials(mid=2.0, scale=3.0, chance=0.0)
    curve = psychometric_curve(levels=levels, correct=correct)
    assert curve["levels"] == [-10.0, -5.0, 0.0, 5.0, 10.0, 20.0]
    assert curve["n"] == [200] * 6
    assert curve["dt50"] == pytest.approx(2.0, abs=0.2)
    assert curve["dt75"] == pytest.approx(2.0 + 3.0 * math.log(3), abs=0.3)  # logistic = 3/4 at mid + scale*ln 3


def test_psychometric_with_two_class_chance_has_no_dt50():
    levels, correct = synthetic_trials(mid=4.0, scale=2.0, chance=0.5)
    curve = psychometric_curve(levels=levels, correct=correct, chance=0.5)
    assert curve["dt50"] is None  # 50% is the floor the curve never rises from
    assert curve["dt75"] == pytest.approx(4.0, abs=0.2)  # 75% is halfway from 0.5 to 1: the midpoint
    assert curve["params"]["chance"] == 0.5


def test_psychometric_bad_input():
    levels, correct = synthetic_trials(mid=0.0, scale=1.0, chance=0.0)
    with pytest.raises(ValueError, match=r"^chance: "):
        psychometric_curve(levels=levels, correct=correct, chance=1.0)
    with pytest.raises(ValueError, match=r"^correct: "):
        psychometric_curve(levels=levels, correct=correct[:-1])
    with pytest.raises(ValueError, match=r"^levels: need at least 3 distinct levels"):
        psychometric_curve(levels=np.array([0.0, 0.0, 5.0]), correct=np.array([True, False, True]))


# --- compare_reports ----------------------------------------------------------------------

def test_compare_reports_deltas():
    comparison = compare_reports(baseline=report(), candidate=report(PERFECT))
    assert comparison["overall"] == pytest.approx({"accuracy": 1 / 3, "f1_macro": 5 / 18, "f1_weighted": 1 / 3,
                                                   "mAP": 1 - (11 / 12 + 5 / 6 + 1) / 3})
    assert comparison["per_class"]["a"] == pytest.approx({"accuracy": 1 / 3, "precision": 1 / 3, "recall": 1 / 3,
                                                          "f1": 1 / 3, "accuracy_relative_change": 0.5})
    assert comparison["per_class"]["c"] == {"accuracy": 0.0, "precision": 0.0, "recall": 0.0, "f1": 0.0,
                                            "accuracy_relative_change": 0.0}
    assert comparison["confusion_diff"] == [[1, -1, 0], [-1, 1, 0], [0, 0, 0]]


def test_relative_change_is_none_when_baseline_accuracy_is_zero():
    probs = PROBS.copy()
    probs[5] = [0.1, 0.8, 0.1]  # c's only clip called b: c's accuracy drops to 0
    comparison = compare_reports(baseline=report(probs), candidate=report())
    assert comparison["per_class"]["c"]["accuracy"] == pytest.approx(1.0)
    assert comparison["per_class"]["c"]["accuracy_relative_change"] is None
    assert comparison["per_class"]["c"]["precision"] is None  # c was never predicted in the baseline


def test_compare_reports_rejects_mismatched_labels_and_non_reports():
    other = classification_report(y_true=Y_TRUE, probs=PROBS, labels=["a", "b", "z"])
    with pytest.raises(ValueError, match=r"^candidate: labels"):
        compare_reports(baseline=report(), candidate=other)
    with pytest.raises(ValueError, match=r"^baseline: not a classification_report"):
        compare_reports(baseline={"accuracy": 1.0}, candidate=report())


# --- plots --------------------------------------------------------------------------------

def assert_png(path, *, min_width_px=400):
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 10_000
    height, width = imread(path).shape[:2]
    assert width >= min_width_px and height >= 300


def test_every_plot_writes_a_png(tmp_path):
    import matplotlib.pyplot as plt

    result = report()
    names = ["emergency_sirens", "environmental_sounds", "alert_sounds"]
    levels, correct = synthetic_trials(mid=2.0, scale=3.0, chance=0.0)
    history = [{"epoch": 1, "train_loss": 1.2, "val_loss": 1.0, "val_accuracy": 0.5},
               {"epoch": 2, "train_loss": 0.8, "val_accuracy": 0.7, "val_f1_macro": 0.6},
               {"epoch": 3, "train_loss": 0.5, "val_loss": 0.7, "val_accuracy": 0.8, "val_f1_macro": 0.75}]
    written = [
        plots.plot_confusion(tmp_path / "counts.png", matrix=result["confusion"]["counts"], labels=names,
                             normalized=False),
        plots.plot_confusion(tmp_path / "sub" / "normalized.png", matrix=result["confusion"]["normalized"],
                             labels=names, normalized=True, title="test"),
        plots.plot_confusion_diff(tmp_path / "diff.png", labels=names,
                                  diff=compare_reports(baseline=result, candidate=report(PERFECT))["confusion_diff"]),
        plots.plot_training_curves(tmp_path / "curves.png", history=history),
        plots.plot_reliability(tmp_path / "reliability.png", bins=result["calibration"]["bins"],
                               ece=result["calibration"]["ece"]),
        plots.plot_psychometric(tmp_path / "psychometric.png", curve=psychometric_curve(levels=levels,
                                                                                       correct=correct)),
    ]
    for path in written:
        assert_png(path)
    assert plt.get_fignums() == []  # nothing went through pyplot's global figure list


def test_training_curves_draw_losses_and_validation_metrics_not_bookkeeping():
    history = [{"epoch": 1, "step": 10, "lr": 1e-3, "stage": 0, "train_loss": 1.2, "val_loss": 1.0, "val_accuracy": 0.5},
               {"epoch": 2, "step": 20, "lr": 5e-4, "stage": 0, "train_loss": 0.8, "val_accuracy": 0.7}]
    panels = plots.training_curve_panels(history)
    assert set(panels["loss"]) == {"train_loss", "val_loss"}
    assert set(panels["validation metrics"]) == {"val_accuracy"}
    assert panels["loss"]["val_loss"] == ([1], [1.0])  # drawn through the rows that have it


def test_plots_reject_bad_input(tmp_path):
    with pytest.raises(ValueError, match=r"^matrix: expected a 3 x 3 matrix"):
        plots.plot_confusion(tmp_path / "x.png", matrix=[[1, 2], [3, 4]], labels=LABELS, normalized=False)
    with pytest.raises(ValueError, match=r"^matrix: normalized=True needs fractions"):
        plots.plot_confusion(tmp_path / "x.png", matrix=report()["confusion"]["counts"], labels=LABELS,
                             normalized=True)
    with pytest.raises(ValueError, match=r"^history: "):
        plots.plot_training_curves(tmp_path / "x.png", history=[])
    with pytest.raises(ValueError, match=r"^bins: "):
        plots.plot_reliability(tmp_path / "x.png", bins=[{"count": 3}])
    with pytest.raises(ValueError, match=r"^curve: "):
        plots.plot_psychometric(tmp_path / "x.png", curve={"levels": [1, 2, 3]})
    assert not (tmp_path / "x.png").exists()
