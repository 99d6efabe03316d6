"""C3 over seeds: differences of means with Welch intervals, and a go/no-go verdict that says
when a difference is seed noise, a gate fails, or a class regresses beyond noise."""
from __future__ import annotations

import math

import pytest

from core.config import GatePolicy
from core.seed_comparison import compare_seeds
from core.study import difference

LENIENT = GatePolicy(key_classes=[], min_key_class_accuracy=None, min_class_accuracy=None, max_relative_regression=0.02)
T_975_4 = 2.7764451051977987  # Student t, 97.5%, 4 degrees of freedom


def report(f1: float, *, a: float = 0.9, b: float = 0.9) -> dict:
    """A classification report of two classes with the numbers the comparison reads."""
    return {"labels": ["a", "b"], "accuracy": (a + b) / 2, "f1_macro": f1, "balanced_accuracy": (a + b) / 2,
            "calibration": {"ece": 0.05},
            "per_class": {"a": {"accuracy": a, "f1": f1, "support": 20}, "b": {"accuracy": b, "f1": f1, "support": 5}}}


def test_a_difference_of_means_comes_with_its_welch_interval():
    d = difference([0.80, 0.81, 0.80], [0.90, 0.91, 0.90])
    half = T_975_4 * math.sqrt(2 * (0.01 / math.sqrt(3)) ** 2 / 3)  # equal spreads: df = 2(n-1) = 4
    assert d["delta"] == pytest.approx(0.10)
    assert (d["ci95_low"], d["ci95_high"]) == (pytest.approx(0.10 - half), pytest.approx(0.10 + half))
    assert d["within_noise"] is False
    assert difference([0.80, 0.84], [0.81, 0.85])["within_noise"] is True
    assert difference([0.8], [0.9, 0.91]) == {"delta": pytest.approx(0.105), "ci95_low": None, "ci95_high": None,
                                              "within_noise": None}


def test_better_beyond_seed_noise_with_every_gate_passing_is_a_go():
    result = compare_seeds(baseline=[report(f) for f in (0.80, 0.81, 0.80)],
                           candidate=[report(f) for f in (0.90, 0.91, 0.90)], policy=LENIENT)
    assert result["verdict"]["go"] and result["verdict"]["headline"].startswith("go: every gate passes and F1-macro +0.1000")
    assert result["overall"]["f1_macro"]["candidate"]["mean"] == pytest.approx(0.9033333)
    assert result["rare_classes"] == ["b", "a"] and result["per_class"]["b"]["support"] == 5  # fewest clips first


def test_a_difference_within_seed_noise_is_a_no_go_that_says_so():
    result = compare_seeds(baseline=[report(f) for f in (0.80, 0.86, 0.83)],
                           candidate=[report(f) for f in (0.82, 0.87, 0.84)], policy=LENIENT)
    verdict = result["verdict"]
    assert not verdict["go"] and verdict["within_seed_noise"] is True
    assert "is within seed noise: the candidate is not shown to be better" in verdict["headline"]


def test_a_failing_gate_or_a_class_regressing_beyond_noise_is_a_no_go():
    strict = LENIENT.with_overrides({"min_f1_macro": 0.95})
    gated = compare_seeds(baseline=[report(f) for f in (0.80, 0.81, 0.80)],
                          candidate=[report(f) for f in (0.90, 0.91, 0.90)], policy=strict)
    assert gated["verdict"]["headline"].startswith("no-go: gate f1_macro fails on the candidate's mean over seeds")
    regressed = compare_seeds(baseline=[report(0.80, b=b) for b in (0.90, 0.91, 0.90)],
                              candidate=[report(0.90, b=b) for b in (0.70, 0.71, 0.70)], policy=LENIENT)
    assert regressed["per_class"]["b"]["accuracy_relative_change"] == pytest.approx((2.11 - 2.71) / 2.71)
    assert any(r.startswith("b accuracy 0.9033 -> 0.7033 (-22.1% relative") and "beyond seed noise" in r
               for r in regressed["verdict"]["reasons"])
    noisy = compare_seeds(baseline=[report(0.80, b=b) for b in (0.95, 0.60, 0.90)],
                          candidate=[report(0.90, b=b) for b in (0.80, 0.62, 0.90)], policy=LENIENT)
    assert noisy["verdict"]["go"] and "within seed noise" in noisy["verdict"]["notes"][0]  # reported, not held against it


def test_one_seed_cannot_tell_a_difference_from_noise():
    result = compare_seeds(baseline=[report(0.80)], candidate=[report(f) for f in (0.90, 0.91)], policy=LENIENT)
    assert not result["verdict"]["go"] and "with one seed on a side" in result["verdict"]["headline"]
    with pytest.raises(ValueError, match="every run must predict the same classes"):
        compare_seeds(baseline=[{**report(0.8), "labels": ["a", "c"]}], candidate=[report(0.9)], policy=LENIENT)
