"""The synthetic sirens demo: files, determinism, reuse, splits, planted errors, and signals
that actually sound like their classes (checked with simple spectral statistics)."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from scipy import signal

from pipelines.demo_synth import (CLASSES, KINDS, MANIFEST_COLUMNS, TONAL_DRONE,
                                  plan_demo_manifest, synthesize_demo_dataset)

SMALL = 12  # clips per class for the built fixture: 72 clips, a few seconds on 2 cores
SR = 16000
PLANTED_CONFUSIONS = {
    ("emergency_sirens", "alert_sounds"), ("emergency_sirens", "environmental_sounds"),
    ("emergency_sirens", "collision_sounds"), ("alert_sounds", "emergency_sirens"),
    ("collision_sounds", "emergency_sirens"), ("environmental_sounds", "emergency_sirens"),
}  # (true_label, given label)


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("demo") / "small"
    synthesize_demo_dataset(out, seed=0, clips_per_class=SMALL, workers=1, progress=False)
    return out


@pytest.fixture(scope="module")
def small(small_dir) -> pd.DataFrame:
    return pd.read_csv(small_dir / "manifest.csv")


@pytest.fixture(scope="module")
def stats(small_dir, small) -> pd.DataFrame:
    rows = [_spectral_stats(*sf.read(small_dir / path)) for path in small["path"]]
    return pd.concat([small, pd.DataFrame(rows)], axis=1)


# --- helpers -------------------------------------------------------------------------------

def _spectral_stats(x: np.ndarray, sr: int) -> dict[str, float]:
    """Energy shares per band, pitch glide in the siren band, and impact crest factor."""
    f, _, spec = signal.stft(x, fs=sr, nperseg=1024, noverlap=768)
    power = np.abs(spec) ** 2
    total = power.sum()
    siren_band = (f >= 400) & (f < 2000)
    band_energy = power[siren_band].sum(0)
    loud = band_energy >= band_energy.max() * 10 ** -1.5  # frames within 15 dB of the loudest
    # peak pitch per frame, median-filtered so a one-bin wobble of a steady tone is no "glide"
    semitones = signal.medfilt(12 * np.log2(f[siren_band][power[siren_band].argmax(0)]), 5)
    steps = np.abs(np.diff(semitones))[loud[1:] & loud[:-1]]
    frame_energy = power.sum(0)
    return {
        "low_share": power[f < 500].sum() / total,
        "siren_band_share": power[(f >= 500) & (f < 2000)].sum() / total,
        "high_share": power[f >= 2000].sum() / total,
        # share of consecutive loud frames whose peak pitch moves a little: a sweep
        "glide": float(np.mean((steps > 0.05) & (steps < 1.0))) if len(steps) else 0.0,
        "log_crest": float(np.log10(frame_energy.max() / np.median(frame_energy))),
    }


def _wav_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


# --- files and manifest --------------------------------------------------------------------

def test_manifest_columns_types_and_values(small_dir):
    frame = synthesize_demo_dataset(small_dir, seed=0, clips_per_class=SMALL, workers=1, progress=False)
    assert tuple(frame.columns) == MANIFEST_COLUMNS
    assert frame["label_error"].dtype == bool
    assert frame["snr_db"].dtype == np.float64 and frame["duration_s"].dtype == np.float64
    assert set(frame["label"]) == set(CLASSES) and set(frame["true_label"]) == set(CLASSES)
    assert set(frame["split"]) == {"train", "val", "test"}
    assert (frame["label_error"] == (frame["label"] != frame["true_label"])).all()
    for path, label in zip(frame["path"], frame["label"]):
        assert path == f"audio/{label}/{Path(path).name}"
    for true_label, kind in zip(frame["true_label"], frame["kind"]):
        assert kind in KINDS[true_label] or (kind == TONAL_DRONE and true_label == "environmental_sounds")
    assert frame["duration_s"].between(3.0, 10.0).all()
    no_background = frame["kind"].isin(["rain", "wind", *KINDS["road_traffic"]])
    assert frame.loc[no_background, "snr_db"].isna().all()
    assert frame.loc[~no_background, "snr_db"].between(0.0, 25.0).all()
    assert len(frame) == 6 * SMALL
    pd.testing.assert_frame_equal(frame, plan_demo_manifest(seed=0, clips_per_class=SMALL))


def test_audio_files_are_16k_mono_pcm16_with_safe_peaks(small_dir, small):
    on_disk = {p.relative_to(small_dir).as_posix() for p in (small_dir / "audio").rglob("*.wav")}
    assert on_disk == set(small["path"])
    for path, duration in zip(small["path"], small["duration_s"]):
        info = sf.info(small_dir / path)
        assert (info.samplerate, info.channels, info.subtype) == (SR, 1, "PCM_16")
        assert info.frames == round(duration * SR)
        pcm, _ = sf.read(small_dir / path, dtype="int16")
        peak = np.abs(pcm.astype(np.int32)).max()
        assert 0.2 * 32767 < peak <= 0.95 * 32767 + 1, path  # loud enough, never clipped
        audio, _ = sf.read(small_dir / path)
        assert np.isfinite(audio).all()


def test_a_complete_folder_is_reused_without_rewriting(small_dir):
    wav = small_dir / pd.read_csv(small_dir / "manifest.csv")["path"][0]
    stamp = json.loads((small_dir / "demo_stamp.json").read_text())
    before = wav.stat().st_mtime_ns
    synthesize_demo_dataset(small_dir, seed=0, clips_per_class=SMALL, workers=1, progress=False)
    assert wav.stat().st_mtime_ns == before
    assert stamp["seed"] == 0 and stamp["clips_per_class"] == SMALL and stamp["n_clips"] == 6 * SMALL


def test_rebuild_with_a_process_pool_reproduces_every_byte(small_dir, tmp_path):
    """An incomplete copy (a clip missing, a stray clip added) is rebuilt by two worker
    processes: same seed, same bytes; the stray file is gone."""
    copy = tmp_path / "copy"
    shutil.copytree(small_dir, copy)
    (copy / pd.read_csv(copy / "manifest.csv")["path"][3]).unlink()
    stray = copy / "audio" / "alert_sounds" / "s999_00.wav"
    sf.write(stray, np.zeros(SR, dtype=np.int16), SR, subtype="PCM_16")
    synthesize_demo_dataset(copy, seed=0, clips_per_class=SMALL, workers=2, progress=False)
    assert not stray.exists()
    assert _wav_bytes(copy) == _wav_bytes(small_dir)
    assert (copy / "manifest.csv").read_bytes() == (small_dir / "manifest.csv").read_bytes()


def test_another_seed_gives_another_dataset():
    first, second = (plan_demo_manifest(seed=seed, clips_per_class=SMALL) for seed in (0, 1))
    assert not first.equals(second)


@pytest.mark.parametrize("bad, needle", [
    ({"clips_per_class": 5}, "clips_per_class"), ({"sample_rate_hz": 8000}, "sample_rate_hz"),
    ({"workers": 0}, "workers"), ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"),
    ({"progress": "yes"}, "progress"), ({"duration_range_s": (0.5, 4.0)}, "duration_range_s"),
    ({"duration_range_s": (5.0, 2.0)}, "duration_range_s"), ({"duration_range_s": 3.0}, "duration_range_s"),
])
def test_bad_arguments_are_rejected_naming_the_parameter(tmp_path, bad, needle):
    with pytest.raises(ValueError, match=needle):
        synthesize_demo_dataset(tmp_path / "never", **bad)
    assert not (tmp_path / "never").exists()


def test_a_shorter_clip_range_keeps_the_plan_and_only_shortens_the_clips():
    default = plan_demo_manifest(seed=0, clips_per_class=100)
    short = plan_demo_manifest(seed=0, clips_per_class=100, duration_range_s=(2.0, 5.0))
    assert default.duration_s.between(3.0, 10.0).all() and short.duration_s.between(2.0, 5.0).all()
    assert short.duration_s.mean() < 0.6 * default.duration_s.mean()
    pd.testing.assert_frame_equal(short.drop(columns="duration_s"), default.drop(columns="duration_s"))


def test_a_folder_built_with_other_clip_lengths_is_rebuilt(tmp_path):
    out = tmp_path / "demo"
    first = synthesize_demo_dataset(out, clips_per_class=10, duration_range_s=(1.0, 1.5), workers=1, progress=False)
    assert first.duration_s.between(1.0, 1.5).all()
    assert json.loads((out / "demo_stamp.json").read_text())["duration_range_s"] == [1.0, 1.5]
    again = synthesize_demo_dataset(out, clips_per_class=10, duration_range_s=(1.5, 2.0), workers=1, progress=False)
    assert again.duration_s.between(1.5, 2.0).all()
    wavs = sorted((out / "audio").rglob("*.wav"))
    assert len(wavs) == len(again) and all(1.5 <= sf.info(str(w)).duration <= 2.0 + 1e-3 for w in wavs)


# --- sessions, splits, planted errors ----------------------------------------------------------

def test_groups_are_sessions_of_one_class_inside_one_split(small):
    per_group = small.groupby("group").agg(splits=("split", "nunique"), classes=("true_label", "nunique"),
                                           size=("path", "size"))
    assert (per_group["splits"] == 1).all() and (per_group["classes"] == 1).all()
    assert per_group["size"].between(3, 6).all()
    assert (small.groupby("true_label")["split"].nunique() == 3).all()  # every class in every split


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_default_size_plants_about_six_percent_errors_in_every_split(seed):
    plan = plan_demo_manifest(seed=seed, clips_per_class=100)
    assert len(plan) == 600
    assert 0.05 <= plan["label_error"].mean() <= 0.07
    per_split = plan.groupby("split")["label_error"].mean()
    assert per_split.between(0.04, 0.09).all(), per_split
    fractions = plan["split"].value_counts(normalize=True)
    assert abs(fractions["train"] - 0.6) < 0.05 and abs(fractions["test"] - 0.2) < 0.05
    errors = plan[plan["label_error"]]
    assert set(zip(errors["true_label"], errors["label"])) == PLANTED_CONFUSIONS
    drones = plan[plan["kind"] == TONAL_DRONE]
    assert 3 <= len(drones) <= 9 and drones["label_error"].all()
    assert (drones["label"] == "emergency_sirens").all()
    assert plan["label"].value_counts().between(95, 105).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_test_split_siren_label_hides_enough_non_sirens(seed):
    """A perfect model scored on the given labels misses the 0.95 siren target in test."""
    plan = plan_demo_manifest(seed=seed, clips_per_class=100)
    given_siren = plan[(plan["split"] == "test") & (plan["label"] == "emergency_sirens")]
    perfect_model_accuracy = (given_siren["true_label"] == "emergency_sirens").mean()
    assert perfect_model_accuracy <= 0.88
    assert {"alert_sounds", "collision_sounds"} <= set(given_siren["true_label"])


def test_small_dataset_still_has_errors_in_every_split(small):
    assert small.groupby("split")["label_error"].any().all()
    given_siren = small[small["label"] == "emergency_sirens"]
    assert given_siren.groupby("split")["label_error"].any().all()


# --- the signals sound like their class ------------------------------------------------------

def test_traffic_is_low_frequency_and_nothing_else_is(stats):
    medians = stats.groupby("true_label")["low_share"].median()
    assert (stats.loc[stats["true_label"] == "road_traffic", "low_share"] > 0.5).all()
    assert (medians.drop("road_traffic") < 0.3).all(), medians


def test_sirens_fill_the_500_2000_hz_band_and_sweep(stats):
    sirens = stats[stats["true_label"] == "emergency_sirens"]
    assert (sirens["siren_band_share"] > 0.6).all()
    sweeping = sirens[sirens["kind"].isin(["wail", "yelp", "burst"])]
    assert len(sweeping) >= 5 and sweeping["glide"].median() > 0.3


def test_alert_beeps_sit_at_siren_pitch_but_hold_it_steady(stats):
    alerts = stats[stats["true_label"] == "alert_sounds"]
    assert alerts["siren_band_share"].median() > 0.6
    assert alerts["glide"].median() < 0.1
    drones = stats[stats["kind"] == TONAL_DRONE]
    assert len(drones) and (drones["glide"] < 0.05).all()


def test_impacts_are_short_bursts_and_birds_insects_are_high(stats):
    crest = stats.groupby("true_label")["log_crest"].median()
    assert crest["collision_sounds"] > 2.0  # loudest frame > 100x the median frame
    assert crest["emergency_sirens"] < 1.2 and crest["road_traffic"] < 1.2
    chirping = stats[stats["kind"].isin(["birds", "insects"])]
    assert len(chirping) and (chirping["high_share"] > 0.8).all()


@pytest.mark.slow
def test_full_default_build_matches_its_plan(tmp_path):
    frame = synthesize_demo_dataset(tmp_path / "full", progress=False)
    pd.testing.assert_frame_equal(frame, plan_demo_manifest())
    assert len(list((tmp_path / "full" / "audio").rglob("*.wav"))) == 600
