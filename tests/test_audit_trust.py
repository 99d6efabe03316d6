"""How far an audit trusts its model (issue 11): calibration, per-class thresholds, the trust
check and queue sizing on synthetic probabilities with known answers; the speech synthesiser
the short-clip bench builds its dataset with."""
from __future__ import annotations

import sys

import numpy as np
import pytest
from cleanlab.count import get_confident_thresholds, num_label_issues

from core.config import AuditConfig, ConfigError
from core.evaluate import TEMPERATURE_BOUNDS, apply_temperature, classification_report, fit_temperature
from core.extreme_off import extreme_off_counts, extreme_off_proposals, find_extreme_off, per_class_thresholds
from core.label_issues import estimate_label_noise, label_issue_proposals, label_issue_queue_size
from core.model_trust import MIN_CALIBRATION_CLIPS, held_out_calibration, trust_lines, trust_report, trusted_mask
from pipelines import speech_synth
from pipelines.speech_synth import SAMPLE_RATE_HZ, SpeechSynthUnavailable, Voice, synthesize


def softmax(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def drawn_from(rng: np.random.Generator, *, n: int = 4000, n_classes: int = 5, sharpness: float = 1.0):
    """Labels drawn from softmax(z) (so softmax(z) is calibrated), and softmax(sharpness * z)."""
    z = rng.normal(0, 1.5, (n, n_classes))
    calibrated = softmax(z)
    y = np.array([rng.choice(n_classes, p=p) for p in calibrated])
    return y, softmax(sharpness * z)


# --- temperature scaling ---------------------------------------------------------------------------

@pytest.mark.parametrize("sharpness", [3.0, 0.7])  # overconfident, underconfident
def test_temperature_fit_undoes_a_known_miscalibration(rng, sharpness):
    y, probs = drawn_from(rng, sharpness=sharpness)
    fit = fit_temperature(y_true=y, probs=probs)
    assert fit["temperature"] == pytest.approx(sharpness, rel=0.1)  # softmax(s z / s) = softmax(z), the truth
    assert fit["nll_after"] < fit["nll_before"] and fit["ece_after"] < fit["ece_before"] / 2
    assert fit["n_samples"] == len(y)
    calibrated = apply_temperature(probs=probs, temperature=fit["temperature"])
    assert calibrated.shape == probs.shape and np.allclose(calibrated.sum(1), 1.0)
    assert (calibrated.argmax(1) == probs.argmax(1)).all()  # accuracy is untouched
    report = classification_report(y_true=y, probs=calibrated, labels=list("abcde"))
    assert report["calibration"]["ece"] == pytest.approx(fit["ece_after"])  # the same ECE the reports show


def test_temperature_stays_in_bounds_and_at_one_when_nothing_beats_it(rng):
    y = np.array([0, 1, 0, 1, 0, 1])
    perfect = np.array([[0.9, 0.1], [0.1, 0.9]] * 3)  # all right: the likelihood rises as T falls
    assert fit_temperature(y_true=y, probs=perfect)["temperature"] == pytest.approx(TEMPERATURE_BOUNDS[0], rel=1e-3)
    y, probs = drawn_from(rng)
    assert fit_temperature(y_true=y, probs=probs)["temperature"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="temperature: 0 must be a number > 0"):
        apply_temperature(probs=probs, temperature=0)


def test_held_out_calibration_needs_enough_clips(rng):
    y, probs = drawn_from(rng, sharpness=3.0)
    few = held_out_calibration(labels=y[:MIN_CALIBRATION_CLIPS - 1], pred_probs=probs[:MIN_CALIBRATION_CLIPS - 1])
    assert few == {"temperature": 1.0, "n_samples": 19, "skipped": "19 val clips, fewer than the 20 a fit needs"}
    off = held_out_calibration(labels=y, pred_probs=probs, enabled=False)
    assert off["temperature"] == 1.0 and off["skipped"] == "calibration is off"
    fitted = held_out_calibration(labels=y, pred_probs=probs, source="out-of-fold")
    assert fitted["fitted_on"] == "out-of-fold" and fitted["temperature"] > 2


# --- per-class thresholds ------------------------------------------------------------------------

def test_per_class_thresholds_follow_each_classes_own_confidence():
    # class 0: the model is sure on its own clips (mean p 0.95); class 1: unsure (mean 0.7);
    # class 2: no held-out clips at all.
    probs = np.array([[0.96, 0.02, 0.02], [0.94, 0.04, 0.02], [0.20, 0.70, 0.10], [0.25, 0.70, 0.05]])
    labels = np.array([0, 0, 1, 1])
    limits = per_class_thresholds(labels=labels, pred_probs=probs)
    confident = get_confident_thresholds(labels, probs)[:2]
    assert confident == pytest.approx([0.95, 0.70])
    assert limits["min_top_prob"] == pytest.approx([1 - 3 * 0.05, 0.5, 1.0])  # 0.85; 0.1 floored at 0.5; unknown
    assert limits["max_label_prob"] == pytest.approx([0.15, 1 / 3, 0.0])  # 3 x 0.05; 0.9 capped at 1/C; unknown
    held = np.array([
        [0.10, 0.86, 0.04],  # labelled 0, p 0.10 <= 0.15, top 1 at 0.86 >= 0.5: flagged
        [0.80, 0.12, 0.08],  # labelled 1, p 0.12 <= 1/3, top 0 at 0.80 < 0.85: not sure enough of 0
        [0.05, 0.05, 0.90],  # labelled 0, top 2: nothing is known about class 2
        [0.90, 0.05, 0.05],  # labelled 1, p 0.05, top 0 at 0.90 >= 0.85: flagged
    ])
    flagged = find_extreme_off(labels=np.array([0, 1, 0, 1]), pred_probs=held, **limits)
    assert flagged.tolist() == [3, 0]
    assert find_extreme_off(labels=np.array([0, 1, 0, 1]), pred_probs=held).tolist() == [2, 3, 0]  # fixed 0.1 / 0.7
    reason = extreme_off_proposals(clip_ids=[5, 6, 7, 8], labels=np.array([0, 1, 0, 1]), pred_probs=held,
                                   classes=["a", "b", "c"], **limits).reason.tolist()
    assert reason[0] == "extreme-off (label p <= 0.333, top p >= 0.85): labelled b (p 0.05), model says a (p 0.90)"
    with pytest.raises(ValueError, match=r"min_top_prob: expected one probability in \[0, 1\] or 3"):
        find_extreme_off(labels=np.array([0]), pred_probs=held[:1], min_top_prob=[0.5, 0.5])


# --- the trust check ---------------------------------------------------------------------------------

def test_trust_check_suppresses_a_weak_class_and_says_so():
    classes = ["siren", "horn", "dog"]
    # Held-out: siren 5/5 right, horn 2 of 5 right (0.4), dog 4/5 (0.8: exactly the floor).
    labels = np.array([0] * 5 + [1] * 5 + [2] * 5)
    predicted = np.array([0] * 5 + [1, 1, 0, 0, 2] + [2, 2, 2, 2, 0])
    probs = np.full((15, 3), 0.05)
    probs[np.arange(15), predicted] = 0.9
    trust = trust_report(labels=labels, pred_probs=probs, classes=classes, min_accuracy=0.8, source="val")
    assert trust["accuracy"] == pytest.approx({"siren": 1.0, "horn": 0.4, "dog": 0.8})
    assert trust["untrusted"] == ["horn"]
    assert trust_lines(trust) == ["the model is too weak on class horn (val accuracy 0.40) to judge its labels; "
                                  "train a better model first"]
    mask = trusted_mask(trust, classes)
    assert mask.tolist() == [True, False, True]
    # A horn labelled clip the model calls siren, and a siren labelled clip it calls horn: both
    # would be extreme-off, neither is judged; the dog clip it calls siren still is.
    audited = np.array([[0.95, 0.03, 0.02], [0.02, 0.95, 0.03], [0.95, 0.02, 0.03]])
    audited_labels = np.array([1, 0, 2])
    assert find_extreme_off(labels=audited_labels, pred_probs=audited).tolist() == [1, 0, 2]
    assert find_extreme_off(labels=audited_labels, pred_probs=audited, trusted=mask).tolist() == [2]
    counts = extreme_off_counts(labels=audited_labels, pred_probs=audited, classes=classes, trusted=mask)
    assert counts == {"siren": 0, "dog": 1}  # horn was not judged: no count that reads as "none"
    ranked = label_issue_proposals(clip_ids=[1, 2, 3], labels=audited_labels, pred_probs=audited, classes=classes,
                                   limit=3, trusted=mask)
    assert ranked.clip_id.tolist() == [3]
    absent = trust_report(labels=labels[:5], pred_probs=probs[:5], classes=classes, min_accuracy=0.8, source="val")
    assert absent["untrusted"] == ["horn", "dog"]
    assert trust_lines(absent, who="the fold models")[0] == ("the fold models cannot be checked on class horn "
                                                             "(no val clips): its labels are not judged")


# --- queue size from the estimated noise ------------------------------------------------------------

def test_noise_estimate_finds_the_planted_share_per_class(rng):
    n, n_classes = 2000, 4
    truth = rng.integers(0, n_classes, n)
    logits = rng.normal(0, 1, (n, n_classes))
    logits[np.arange(n), truth] += 4.0
    probs = softmax(logits)
    labels = truth.copy()
    flipped = rng.choice(np.flatnonzero(truth == 2), 60, replace=False)  # 60 errors, all labelled 3 but truly 2
    labels[flipped] = 3
    noise = estimate_label_noise(labels=labels, pred_probs=probs)
    # cleanlab's confident joint counts the errors at least as sure of their true class as that
    # class's own clips are on average, then rescales: here 45 of the 60 (a known low bias).
    assert 0.6 * 60 <= noise["issues"][3] <= 1.2 * 60 and noise["issues"].sum() == noise["issues"][3]
    assert noise["noise_rate"][3] == pytest.approx(noise["issues"][3] / (labels == 3).sum())
    assert noise["noise_rate"][[0, 1, 2]].max() < 0.02
    expected = num_label_issues(labels, probs, estimation_method="off_diagonal_calibrated")
    assert abs(int(noise["issues"].sum()) - expected) <= n_classes  # cleanlab's count, up to per-class rounding


def test_queue_follows_the_estimate_up_to_the_share_and_an_explicit_limit_wins():
    assert label_issue_queue_size(estimated_issues=36, pool_size=1000, max_share=0.1) == 48  # 36 + 2 sqrt(36)
    assert label_issue_queue_size(estimated_issues=30, pool_size=1000, max_share=0.1) == 41  # 30 + 10.95, rounded up
    assert label_issue_queue_size(estimated_issues=370, pool_size=1000, max_share=0.1) == 100
    assert label_issue_queue_size(estimated_issues=95, pool_size=1000, max_share=0.1) == 100  # 95 + 19.5: capped
    assert label_issue_queue_size(estimated_issues=370, pool_size=1000, max_share=0.1, max_label_issues=500) == 500
    assert label_issue_queue_size(estimated_issues=0, pool_size=1000, max_share=0.1) == 0
    with pytest.raises(ValueError, match="max_share: 1.5 must be a probability"):
        label_issue_queue_size(estimated_issues=1, pool_size=10, max_share=1.5)


def test_audit_config_validates_where_it_enters():
    assert AuditConfig().thresholds == "per_class" and AuditConfig().min_class_accuracy == 0.8
    with pytest.raises(ConfigError, match=r"audit.max_queue_share: 2.0 is out of range \[0, 1\]"):
        AuditConfig.from_dict({"max_queue_share": 2.0}, prefix="audit.")
    with pytest.raises(ConfigError, match="audit.thresholds: 'median' is not one of 'per_class', 'fixed'"):
        AuditConfig.from_dict({"thresholds": "median"}, prefix="audit.")
    assert "held-out accuracy" in AuditConfig.field_help()["min_class_accuracy"]  # the CLI's help text


# --- the speech synthesiser ----------------------------------------------------------------------------

def test_speech_synth_speaks_a_word_in_two_voices():
    low = synthesize("seven", voice=Voice("en+m3", rate_wpm=130, pitch=30))
    high = synthesize("seven", voice=Voice("en-us+f2", rate_wpm=260, pitch=75))
    for wave in (low, high):
        assert wave.dtype == np.float32 and wave.ndim == 1
        assert 0.2 < len(wave) / SAMPLE_RATE_HZ < 1.5  # one spoken word
        assert 0.05 < np.abs(wave).max() <= 1.0 and np.sqrt(np.mean(wave ** 2)) > 0.01  # not silent
    assert abs(len(low) - len(high)) > 0.05 * SAMPLE_RATE_HZ  # two speakers, two speaking rates
    with pytest.raises(ValueError, match="voice: eSpeak NG has no voice 'xx-nowhere'"):
        synthesize("seven", voice=Voice("xx-nowhere"))
    with pytest.raises(ValueError, match=r"rate_wpm: 20 must be in \[80, 450\]"):
        Voice("en", rate_wpm=20)


def test_speech_synth_says_how_to_get_espeak_when_it_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # as if the wheel were not installed
    with pytest.raises(SpeechSynthUnavailable, match="speech synthesis needs eSpeak NG: pip install espeakng-loader"):
        speech_synth._load_library()
