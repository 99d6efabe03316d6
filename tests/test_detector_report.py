"""core/detector_report.py: plan B9's matrix from planted speech-detector scores (thresholds,
per-SNR metrics, psychometric DT50, worst clips, latency), its files, and the evaluate and
plot helpers it added."""
from __future__ import annotations

import json
import typing

import numpy as np
import pandas as pd
import pytest

from core.config import ComparisonConfig
from core.detector_report import OBJECTIVES, balanced_accuracy_at_snr, build_report, write_report
from core.evaluate import calibrate_threshold, psychometric_accuracy, psychometric_level, score_calibration
from core.plots import plot_metric_by_group, plot_psychometric_curves, plot_reliability_grid

SNRS = (-10.0, -5.0, 0.0, 5.0, 10.0, 20.0)
COSTS = {"load_s": 0.0, "resample_s": 0.0, "features_s": 0.0, "model_s": 0.0}


def planted_clips(per_cell: int = 10, snrs: tuple[float, ...] = SNRS, durations: tuple[int, ...] = (200, 1000)) -> pd.DataFrame:
    """Balanced val and test clips: per_cell per split x SNR x duration x class."""
    rows = [{"label": label, "split": split, "snr_db": snr, "duration_ms": float(duration)}
            for split in ("val", "test") for snr in snrs for duration in durations
            for label in ("SPEECH", "NONSPEECH") for _ in range(per_cell)]
    return pd.DataFrame(rows).assign(clip_id=lambda f: np.arange(1, len(f) + 1), path=lambda f: [f"/audio/{i}.wav" for i in f.clip_id])


def scores_for(clips: pd.DataFrame, detector: str, score: np.ndarray, **costs: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"clip_id": clips.clip_id, "detector": detector, "score": score, **COSTS, **costs})


def sharp_above(clips: pd.DataFrame, rng: np.random.Generator, *, snr_db: float) -> np.ndarray:
    """Perfect scores (0.9 speech, 0.1 non-speech) at SNR >= snr_db; coin flips below."""
    sure = np.where(clips.label == "SPEECH", 0.9, 0.1)
    return np.where(clips.snr_db >= snr_db, sure, rng.integers(0, 2, len(clips)).astype(float))


@pytest.fixture
def clips() -> pd.DataFrame:
    return planted_clips()


def test_a_detector_at_chance_below_5_db_has_its_dt50_between_0_and_5_db(clips):
    scores = scores_for(clips, "sharp", sharp_above(clips, np.random.default_rng(1), snr_db=5))
    report = build_report(scores=scores, clips=clips, bootstrap_draws=40, seed=3)
    curve = report["detectors"]["sharp"]["psychometric"]["overall"]
    assert curve["levels"] == list(SNRS) and curve["n"] == [40] * 6
    assert curve["accuracy"][3:] == [1.0, 1.0, 1.0] and max(curve["accuracy"][:3]) < 0.65
    assert 0.0 < curve["dt50"] < 5.0 and curve["dt50"] < curve["dt75"] < 5.0
    assert curve["threshold_accuracy"] == {"dt50": 0.75, "dt75": 0.875}
    assert psychometric_accuracy(curve["dt50"], **curve["params"]) == pytest.approx(0.75)
    interval = curve["interval_95"]
    assert interval["draws"] == 40 and interval["failed"] == 0 and interval["dt50_reached"] == 40
    assert interval["dt50"][0] <= curve["dt50"] <= interval["dt50"][1] and interval["dt50"][1] <= 5.0
    assert set(report["detectors"]["sharp"]["psychometric"]["per_duration"]) == {"200", "1000"}
    again = build_report(scores=scores, clips=clips, bootstrap_draws=40, seed=3)
    assert again["detectors"]["sharp"]["psychometric"] == report["detectors"]["sharp"]["psychometric"]  # seeded


def test_the_dev_threshold_is_applied_unchanged_to_test():
    clips = pd.DataFrame({"clip_id": range(1, 13), "split": ["val"] * 6 + ["test"] * 6,
                          "label": ["SPEECH"] * 3 + ["NONSPEECH"] * 3 + ["SPEECH"] * 3 + ["NONSPEECH"] * 3})
    # Dev separates between 0.5 and 0.55; test would rather cut between 0.35 and 0.4.
    score = np.array([0.55, 0.7, 0.9, 0.1, 0.3, 0.5, 0.4, 0.8, 0.9, 0.2, 0.3, 0.35])
    entry = build_report(scores=scores_for(clips, "d", score), clips=clips, bootstrap_draws=0)["detectors"]["d"]
    threshold = entry["threshold"]
    assert threshold["dev"] == pytest.approx(0.525) and threshold["dev_value"] == 1.0
    assert threshold["test_optimal"] == pytest.approx(0.375) and threshold["test_optimal_value"] == 1.0
    assert threshold["gap"] == pytest.approx(0.15)
    assert threshold["test_value_at_dev"] == pytest.approx(5 / 6) and threshold["test_value_lost"] == pytest.approx(1 / 6)
    dev_said = score[:6] >= threshold["dev"]
    assert dev_said.tolist() == [True, True, True, False, False, False]  # the dev decisions, reproduced
    test = entry["test"]
    assert test["per_class"] == {"SPEECH": pytest.approx(2 / 3), "NONSPEECH": 1.0}
    assert test["accuracy"] == pytest.approx(5 / 6) and test["balanced_accuracy"] == pytest.approx(5 / 6)
    assert test["confusion"] == {"labels": ["SPEECH", "NONSPEECH"], "counts": [[2, 1], [0, 3]]}


def test_worst_clips_are_the_planted_confidently_wrong_ones(clips):
    score = np.where(clips.label == "SPEECH", 0.8, 0.2)
    speech = clips.index[(clips.split == "test") & (clips.label == "SPEECH")]
    other = clips.index[(clips.split == "test") & (clips.label == "NONSPEECH")]
    planted = {other[0]: 0.99, other[1]: 0.97, speech[0]: 0.02, speech[1]: 0.4}  # 0.4: wrong, but barely
    score[list(planted)] = list(planted.values())
    entry = build_report(scores=scores_for(clips, "d", score), clips=clips, bootstrap_draws=0, worst_clips=3)["detectors"]["d"]
    worst = entry["worst_clips"]
    assert [w["clip_id"] for w in worst] == [int(clips.clip_id[i]) for i in (other[0], speech[0], other[1])]
    assert worst[0] == {"clip_id": int(clips.clip_id[other[0]]), "label": "NONSPEECH", "score": 0.99, "predicted": "SPEECH",
                        "snr_db": -10.0, "duration_ms": 200.0, "path": f"/audio/{clips.clip_id[other[0]]}.wav"}
    every = build_report(scores=scores_for(clips, "d", score), clips=clips, bootstrap_draws=0)["detectors"]["d"]
    assert len(every["worst_clips"]) == 4  # only wrong clips are listed


def test_latency_percentiles_are_exact_on_planted_costs():
    clips = planted_clips(per_cell=1, snrs=(0.0, 5.0, 10.0), durations=(500,))  # 12 clips
    ms = np.arange(1, len(clips) + 1) / 1000
    scores = scores_for(clips, "d", np.where(clips.label == "SPEECH", 0.9, 0.1), load_s=ms, model_s=2 * ms)
    latency = build_report(scores=scores, clips=clips, bootstrap_draws=0)["detectors"]["d"]["latency_ms"]
    assert latency["clips"] == 12
    assert latency["load"] == {"p50": pytest.approx(6.5), "p95": pytest.approx(11.45)}  # numpy's linear percentiles of 1..12
    assert latency["model"] == {"p50": pytest.approx(13.0), "p95": pytest.approx(22.9)}
    assert latency["resample"] == {"p50": 0.0, "p95": 0.0}
    assert latency["total"] == {"p50": pytest.approx(19.5), "p95": pytest.approx(34.35)}


def test_breakdowns_calibration_and_unscored_clips(clips):
    score = np.where(clips.label == "SPEECH", 0.75, 0.25)
    score[(clips.snr_db == -10) & (clips.label == "NONSPEECH")] = 0.75  # wrong at -10 dB
    score[0] = np.nan  # a val clip the detector could not read
    entry = build_report(scores=scores_for(clips, "d", score), clips=clips, bootstrap_draws=0)["detectors"]["d"]
    assert entry["unscored"] == {"val": 1, "test": 0}
    per_snr = {row["snr_db"]: row for row in entry["test"]["per_snr"]}
    assert per_snr[-10.0]["per_class"] == {"SPEECH": 1.0, "NONSPEECH": 0.0} and per_snr[-10.0]["balanced_accuracy"] == 0.5
    assert per_snr[20.0]["accuracy"] == 1.0 and per_snr[20.0]["n"] == 40
    assert [row["duration_ms"] for row in entry["test"]["per_duration"]] == [200.0, 1000.0]
    calibration = entry["test"]["calibration"]
    # Bin (0.2, 0.3]: 100 non-speech clips at 0.25 -> 0% speech; bin (0.7, 0.8]: 120 speech + 20 non-speech at 0.75.
    assert calibration["ece"] == pytest.approx(100 / 240 * 0.25 + 140 / 240 * abs(120 / 140 - 0.75))
    assert calibration["mce"] == pytest.approx(0.25)


def test_a_curve_needs_three_snr_levels_and_snr_metadata():
    two = planted_clips(per_cell=2, snrs=(0.0, 10.0))
    entry = build_report(scores=scores_for(two, "d", np.where(two.label == "SPEECH", 0.9, 0.1)), clips=two)["detectors"]["d"]
    assert entry["psychometric"]["overall"] == {"note": "only 2 SNR level(s) (0, 10 dB): a curve needs at least 3"}
    bare = two.drop(columns=["snr_db", "duration_ms"])
    report = build_report(scores=scores_for(bare, "d", np.full(len(bare), 0.5)), clips=bare)
    assert report["detectors"]["d"]["psychometric"] == {"overall": {"note": "no clip carries snr_db metadata: no "
                                                                            "psychometric curve"}}
    assert "per_snr" not in report["detectors"]["d"]["test"] and report["snr_levels"] == []


def test_balanced_accuracy_at_low_snr_uses_the_given_thresholds(clips):
    rng = np.random.default_rng(2)
    scores = pd.concat([scores_for(clips, "sharp", sharp_above(clips, rng, snr_db=5)),
                        scores_for(clips, "flat", np.full(len(clips), 0.6))])
    low = balanced_accuracy_at_snr(scores=scores, clips=clips, thresholds={"sharp": 0.5, "flat": 0.5}, max_snr_db=0)
    assert low["clips"] == 120 and low["split"] == "test" and low["max_snr_db"] == 0.0
    assert low["detectors"]["flat"] == 0.5  # calls everything speech: SPEECH 1, NONSPEECH 0
    test_low = (clips.split == "test") & (clips.snr_db <= 0)
    said = scores[scores.detector == "sharp"].score.to_numpy()[test_low] >= 0.5
    truth = (clips.label == "SPEECH").to_numpy()[test_low]
    assert low["detectors"]["sharp"] == pytest.approx((said[truth].mean() + (~said[~truth]).mean()) / 2)
    none = balanced_accuracy_at_snr(scores=scores, clips=clips, thresholds={"flat": 0.5}, max_snr_db=-20)
    assert none == {"max_snr_db": -20.0, "split": "test", "clips": 0, "detectors": {"flat": None}}


def test_the_report_is_written_as_json_markdown_and_pictures(clips, tmp_path):
    rng = np.random.default_rng(4)
    scores = pd.concat([scores_for(clips, "sharp", sharp_above(clips, rng, snr_db=5)),
                        scores_for(clips, "blind", rng.random(len(clips)))])
    report = build_report(scores=scores, clips=clips, bootstrap_draws=10)
    paths = write_report(tmp_path / "report", report)
    assert set(paths) == {"json", "markdown", "reliability", "psychometric", "psychometric_200ms", "psychometric_1000ms", "snr"}
    assert json.loads(paths["json"].read_text()) == json.loads(json.dumps(report))
    for key in ("reliability", "psychometric", "snr"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = paths["markdown"].read_text()
    summary = markdown.split("## Summary (test)\n\n")[1].split("\n\n")[0].splitlines()
    assert summary[0].startswith("| detector | accuracy | balanced accuracy | SPEECH | NONSPEECH | ECE | MCE | DT50")
    assert summary[2].startswith("| sharp | ") and summary[3].startswith("| blind | ")
    per_snr = markdown.split("## Balanced accuracy per SNR (test)\n\n")[1].split("\n\n")[0].splitlines()
    assert per_snr[0] == "| detector | -10 dB | -5 dB | 0 dB | 5 dB | 10 dB | 20 dB |"
    assert per_snr[2].startswith("| sharp | ") and per_snr[2].endswith(" | 100.0% | 100.0% | 100.0% |")
    assert "![Accuracy against SNR](psychometric.png)" in markdown and "### blind" in markdown


def test_bad_input_is_refused_naming_what_is_wrong(clips):
    scores = scores_for(clips, "d", np.full(len(clips), 0.5))
    with pytest.raises(ValueError, match=r"^objective: 'f1' is not one of accuracy, balanced_accuracy, youden$"):
        build_report(scores=scores, clips=clips, objective="f1")
    with pytest.raises(ValueError, match=r"^scores: missing columns \['model_s'\]$"):
        build_report(scores=scores.drop(columns="model_s"), clips=clips)
    with pytest.raises(ValueError, match=r"^clips: labels \['music'\] are neither speech_label nor nonspeech_label"):
        build_report(scores=scores, clips=clips.assign(label=clips.label.replace("NONSPEECH", "music")))
    with pytest.raises(ValueError, match=r"^clips: the test split needs clips of both SPEECH and NONSPEECH, has \['SPEECH'\]$"):
        build_report(scores=scores, clips=clips[(clips.split == "val") | (clips.label == "SPEECH")])
    with pytest.raises(ValueError, match=r"^scores: score must lie in \[0, 1\]"):
        build_report(scores=scores.assign(score=1.5), clips=clips)
    with pytest.raises(ValueError, match=r"^bootstrap_draws: -1 must be an integer >= 0$"):
        build_report(scores=scores, clips=clips, bootstrap_draws=-1)


def test_the_config_offers_the_reports_objectives():
    assert typing.get_args(typing.get_type_hints(ComparisonConfig)["objective"]) == OBJECTIVES


# --- what core/evaluate.py and core/plots.py gained ----------------------------------------------

def test_the_accuracy_objective_finds_the_hand_computed_threshold():
    # Cuts at 0.6 and at 0.3 both call 4 of 5 right; ties go to the higher one (halfway to 0.4).
    result = calibrate_threshold(scores=np.array([0.1, 0.3, 0.4, 0.6, 0.8]),
                                 y_true_binary=np.array([False, True, False, True, True]), objective="accuracy")
    assert result == {"objective": "accuracy", "threshold": pytest.approx(0.5), "value": pytest.approx(0.8)}


def test_score_calibration_bins_the_score_as_a_probability():
    scores = np.array([0.25] * 4 + [0.75] * 4)
    calibrated = score_calibration(scores=scores, y_true_binary=np.array([1, 0, 0, 0, 1, 1, 1, 0]), n_bins=4)
    # Bins are (lower, upper]: 0.25 falls in the first, 0.75 in the third.
    assert calibrated["ece"] == 0.0 and calibrated["mce"] == 0.0 and [b["count"] for b in calibrated["bins"]] == [4, 0, 4, 0]
    off = score_calibration(scores=scores, y_true_binary=np.array([0, 0, 0, 0, 1, 1, 1, 1]), n_bins=4)
    assert off["ece"] == pytest.approx(0.25) and off["bins"][0]["accuracy"] == 0.0
    with pytest.raises(ValueError, match=r"^scores: must lie in \[0, 1\]"):
        score_calibration(scores=np.array([1.2]), y_true_binary=np.array([1]))


def test_psychometric_level_inverts_the_curve():
    params = {"mid": 2.0, "scale": 1.5, "chance": 0.5}
    level = psychometric_level(accuracy=0.875, **params)
    assert psychometric_accuracy(level, **params) == pytest.approx(0.875)
    assert psychometric_level(accuracy=0.5, **params) is None
    with pytest.raises(ValueError, match=r"^scale: -1.0 must be > 0"):
        psychometric_level(accuracy=0.7, mid=0.0, scale=-1.0, chance=0.5)


def test_the_comparison_plots_refuse_what_they_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match=r"^calibrations: "):
        plot_reliability_grid(tmp_path / "r.png", calibrations={})
    with pytest.raises(ValueError, match=r"^curves: "):
        plot_psychometric_curves(tmp_path / "p.png", curves={"a": {"levels": [0, 1, 2]}})
    with pytest.raises(ValueError, match=r"^series: expected \{name: one value per group\} for the 2 groups$"):
        plot_metric_by_group(tmp_path / "b.png", groups=["0 dB", "5 dB"], series={"a": [0.5]}, ylabel="accuracy")
    assert plot_metric_by_group(tmp_path / "b.png", groups=["0 dB"], series={"a": [None]}, ylabel="x").is_file()
