"""Augmentations checked by measuring their effect on synthetic signals, not by "it ran"."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import tone, write_wav
from core.augment import TRANSFORMS, NoiseBank, build_pipeline, preview
from core.augment.band_stop import stop_band_hz
from core.config import ConfigError, ExperimentConfig, FeatureConfig, load_preset
from core.mixup import mixup

SR = 16000


def white_noise(seconds: float, *, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(int(seconds * SR))).astype(np.float32)


def band_energy_db(wave: np.ndarray, low_hz: float, high_hz: float) -> float:
    power = np.abs(np.fft.rfft(wave)) ** 2
    freqs = np.fft.rfftfreq(wave.size, 1 / SR)
    return 10 * np.log10(power[(freqs >= low_hz) & (freqs < high_hz)].sum())


def peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(wave.size), n=4 * wave.size))
    return float(np.fft.rfftfreq(4 * wave.size, 1 / SR)[spectrum.argmax()])


def power_db(wave: np.ndarray) -> float:
    return 10 * np.log10(np.mean(np.square(wave, dtype=np.float64)))


def one(name: str, **params):
    """The single transform of a one-step pipeline."""
    return build_pipeline([{"name": name, "params": params}], sample_rate_hz=SR).steps[0].transform


@pytest.fixture
def noise_bank(tmp_path) -> NoiseBank:
    """A MUSAN-layout bank: a short noise (looped), speech-like tones at 22.05 kHz (resampled), music."""
    rng = np.random.default_rng(5)
    write_wav(tmp_path / "bank" / "noise" / "free-sound" / "hum.wav", 0.2 * rng.standard_normal(SR // 2))
    write_wav(tmp_path / "bank" / "speech" / "talker.wav", tone(300, seconds=3, sample_rate_hz=22050), 22050)
    write_wav(tmp_path / "bank" / "music" / "chords.flac", tone(440, seconds=4) + tone(660, seconds=4))
    (tmp_path / "bank" / "noise" / "broken.wav").write_text("not audio")
    return NoiseBank(tmp_path / "bank", sample_rate_hz=SR)


def test_every_plan_transform_is_registered():
    assert {"time_stretch", "pitch_shift", "gain", "gain_dips", "band_stop", "gaussian_snr", "background_noise",
            "spec_augment"} <= set(TRANSFORMS)


def test_band_stop_lowers_its_band_by_15_db_and_leaves_the_rest_within_1_db():
    transform = one("band_stop", min_center_hz=1000, max_center_hz=2000, q=4)
    wave = white_noise(4.0)
    rng = np.random.default_rng(3)
    for _ in range(4):
        params = transform.randomize(rng, shape=wave.shape)
        assert 1000 <= params["center_hz"] <= 2000 and params["q"] == 4
        out = transform.apply(wave, params)
        low, high = stop_band_hz(params["center_hz"], 4)
        assert high - low == pytest.approx(params["center_hz"] / 4)
        assert band_energy_db(out, low, high) - band_energy_db(wave, low, high) <= -15
        width = high - low  # outside = beyond the transition bands, half a bandwidth each side
        for band in [(50, low - width / 2), (high + width / 2, 7900), (low - width, low - width / 2),
                     (high + width / 2, high + width)]:
            assert abs(band_energy_db(out, *band) - band_energy_db(wave, *band)) <= 1.0, band


@pytest.mark.parametrize("semitones", [1.0, -1.0])
def test_pitch_shift_moves_a_pure_tone_by_the_semitone_ratio_within_1_percent(semitones):
    wave = tone(1000, seconds=2).astype(np.float32)
    out = one("pitch_shift", semitones=[semitones]).apply(wave, {"semitones": semitones})
    assert out.shape == wave.shape
    assert peak_hz(out) / peak_hz(wave) == pytest.approx(2 ** (semitones / 12), rel=0.01)


@pytest.mark.parametrize("rate", [1.05, 0.95])
def test_time_stretch_changes_length_by_one_over_rate_within_1_percent_and_keeps_pitch(rate):
    wave = tone(1000, seconds=2).astype(np.float32)
    transform = one("time_stretch", rates=[0.95, 1.05])
    out = transform.apply(wave, {"rate": rate})
    assert out.size / wave.size == pytest.approx(1 / rate, rel=0.01)
    assert transform.output_length(wave.size, {"rate": rate}) == pytest.approx(out.size, abs=2)
    assert peak_hz(out) == pytest.approx(1000, rel=0.01)


def test_gaussian_noise_lands_at_the_target_snr_within_half_a_db():
    wave = tone(700, seconds=2).astype(np.float32)
    transform = one("gaussian_snr", min_snr_db=-5, max_snr_db=20)
    rng = np.random.default_rng(0)
    for _ in range(5):
        params = transform.randomize(rng, shape=wave.shape)
        assert -5 <= params["snr_db"] <= 20
        out = transform.apply(wave, params)
        assert power_db(wave) - power_db(out - wave) == pytest.approx(params["snr_db"], abs=0.5)


def test_background_noise_from_a_musan_bank_lands_at_the_target_snr_looped_and_resampled(noise_bank):
    assert sorted(noise_bank.files) == ["music", "noise", "speech"]
    assert "noise/broken.wav" in noise_bank.skipped  # listed with its reason, never a crash
    transform = build_pipeline([{"name": "background_noise", "params": {"min_snr_db": -5, "max_snr_db": 20}}],
                               sample_rate_hz=SR, noise_bank=noise_bank).steps[0].transform
    wave = tone(1200, seconds=2).astype(np.float32)
    rng = np.random.default_rng(1)
    seen = set()
    for _ in range(12):
        params = transform.randomize(rng, shape=wave.shape)
        seen.add(params["file"].split("/")[0])
        out = transform.apply(wave, params)
        assert out.shape == wave.shape
        assert power_db(wave) - power_db(out - wave) == pytest.approx(params["snr_db"], abs=0.5)
    assert seen == {"music", "noise", "speech"}
    # a 0.5 s noise fills a 2 s clip (looped); a 22.05 kHz file comes back at 16 kHz, still 300 Hz
    looped = noise_bank.segment("noise/free-sound/hum.wav", offset_s=0.3, n_samples=2 * SR)
    assert looped.shape == (2 * SR,) and np.allclose(looped[:SR // 2], looped[SR // 2:SR])
    speech = noise_bank.segment("speech/talker.wav", offset_s=1.0, n_samples=SR)
    assert peak_hz(speech) == pytest.approx(300, rel=0.01)
    only_music = build_pipeline([{"name": "background_noise", "params": {"categories": ["music"]}}], sample_rate_hz=SR,
                                noise_bank=noise_bank).steps[0].transform
    assert {only_music.randomize(rng, shape=wave.shape)["file"] for _ in range(5)} == {"music/chords.flac"}


def test_gain_dips_last_within_the_configured_range():
    transform = one("gain_dips", min_duration_ms=300, max_duration_ms=800, min_dips=1, max_dips=3,
                    min_depth_db=-30, max_depth_db=-12)
    wave = np.full(5 * SR, 0.5, dtype=np.float32)
    rng = np.random.default_rng(7)
    durations = []
    for _ in range(30):
        params = transform.randomize(rng, shape=wave.shape)
        gain_db = 20 * np.log10(transform.apply(wave, params) / wave)
        assert 1 <= len(params["dips"]) <= 3
        runs = _runs(gain_db < -1e-6)
        assert len(runs) == len(params["dips"])
        for start, end in runs:
            depth = gain_db[start:end].min()
            assert -30 - 1e-3 <= depth <= -12 + 1e-3
            below_half = np.count_nonzero(gain_db[start:end] <= depth / 2)
            durations.append(below_half / SR * 1000)
    assert min(durations) >= 300 - 1000 / SR and max(durations) <= 800 + 1000 / SR
    assert max(durations) - min(durations) > 200  # drawn across the range, not one value
    assert transform.randomize(rng, shape=(SR // 4,))["dips"] == []  # too short for a 300 ms dip


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    edges = np.flatnonzero(np.diff(np.concatenate([[0], mask.astype(int), [0]])))
    return list(zip(edges[::2], edges[1::2]))


def test_spec_augment_masks_exactly_what_it_records_and_the_configured_fraction():
    transform = one("spec_augment", freq_masks=2, freq_width=15, time_masks=2, time_width=35)
    spec = torch.randn(128, 300)
    rng = np.random.default_rng(2)
    params = transform.randomize(rng, shape=tuple(spec.shape))
    out = transform.apply(spec, params)
    expected = torch.zeros_like(spec, dtype=torch.bool)
    for start, width in params["freq"]:
        assert 0 <= width <= 15
        expected[start:start + width, :] = True
    for start, width in params["time"]:
        assert 0 <= width <= 35
        expected[:, start:start + width] = True
    assert torch.equal(out != spec, expected) and torch.all(out[expected] == spec.mean())

    # widths are uniform in [0, F]: one mask covers F/2 bins on average; T=5% of the frames (light variant)
    single = one("spec_augment", freq_masks=1, freq_width=15, time_masks=1, time_width_fraction=0.05)
    draws = [single.randomize(rng, shape=(128, 300)) for _ in range(4000)]
    assert np.mean([d["freq"][0][1] for d in draws]) / 128 == pytest.approx(7.5 / 128, rel=0.05)
    time_widths = [d["time"][0][1] for d in draws]
    assert max(time_widths) == 15 and np.mean(time_widths) / 300 == pytest.approx(0.025, rel=0.05)

    light = build_pipeline([{"name": "spec_augment", "p": 0.5, "params": {"freq_width": 10, "time_width_fraction": 0.05}}],
                           sample_rate_hz=SR)
    applied = [bool(light.randomize_spec(rng, shape=(64, 50))) for _ in range(2000)]
    assert np.mean(applied) == pytest.approx(0.5, abs=0.04)


def test_mixup_soft_labels_sum_to_one():
    generator = torch.Generator().manual_seed(0)
    features, targets = torch.randn(16, 8, 10), torch.randint(0, 4, (16,))
    for _ in range(20):
        _, soft, _ = mixup(features, targets, num_classes=4, alpha=0.4, p=0.5, generator=generator)
        assert torch.allclose(soft.sum(dim=1), torch.ones(16))


ALL_WAVE = [{"name": "time_stretch", "params": {"min_rate": 0.9, "max_rate": 1.1}},
            {"name": "pitch_shift", "params": {"min_semitones": -2, "max_semitones": 2}},
            {"name": "gain_dips", "p": 0.8},
            {"name": "band_stop", "p": 0.8},
            {"name": "gain", "p": 0.8},
            {"name": "gaussian_snr", "p": 0.8},
            {"name": "spec_augment", "params": {"freq_width": 10, "time_width_fraction": 0.05}}]


def test_same_seed_same_output_and_a_recorded_draw_replays(tmp_path):
    path = write_wav(tmp_path / "clip.wav", tone(900, seconds=2) + 0.01 * white_noise(2.0))
    cfg = FeatureConfig(max_length_s=2.0)
    first, again = (preview(path, ALL_WAVE, seed=11, feature_cfg=cfg) for _ in range(2))
    other = preview(path, ALL_WAVE, seed=12, feature_cfg=cfg)
    assert np.array_equal(first.augmented, again.augmented) and first.applied == again.applied
    assert np.array_equal(first.augmented_log_mel, again.augmented_log_mel)
    assert first.applied != other.applied
    pipeline = build_pipeline(ALL_WAVE, sample_rate_hz=SR)
    wave_records = [r for r in first.applied if r["name"] != "spec_augment"]
    assert np.array_equal(pipeline.apply_wave(first.original, wave_records), first.augmented)


def test_preview_gives_before_and_after_with_what_was_applied(tmp_path):
    path = write_wav(tmp_path / "clip.wav", tone(900, seconds=3))
    shown = preview(path, [{"name": "time_stretch", "params": {"rates": [1.05]}}, {"name": "spec_augment"}], seed=0,
                    feature_cfg=FeatureConfig(n_mels=32, max_length_s=10.0))
    assert shown.sample_rate_hz == SR and shown.original.shape == (3 * SR,)
    assert shown.augmented.size == pytest.approx(3 * SR / 1.05, rel=0.01)
    assert [r["name"] for r in shown.applied] == ["time_stretch", "spec_augment"]
    assert shown.original_log_mel.shape[0] == shown.augmented_log_mel.shape[0] == 32
    assert shown.augmented_log_mel.shape[1] < shown.original_log_mel.shape[1]


def test_bad_specs_are_refused_with_messages_that_name_what_to_fix():
    with pytest.raises(ConfigError, match=r"unknown augmentation 'reverb'; registered: background_noise, band_stop"):
        build_pipeline([{"name": "reverb"}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match=r"augment time_stretch: unknown option 'speed'; allowed: rates, min_rate, max_rate"):
        build_pipeline([{"name": "time_stretch", "params": {"speed": 2}}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match=r"augment time_stretch: rates\[1\]=3 is out of range \[0.5, 2.0\]"):
        build_pipeline([{"name": "time_stretch", "params": {"rates": [0.9, 3]}}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match="either rates .* or min_rate/max_rate"):
        build_pipeline([{"name": "time_stretch", "params": {"rates": [0.9], "min_rate": 0.8, "max_rate": 1.2}}],
                       sample_rate_hz=SR)
    with pytest.raises(ConfigError, match="augment gain_dips: min_duration_ms=900.0 must not exceed max_duration_ms=800.0"):
        build_pipeline([{"name": "gain_dips", "params": {"min_duration_ms": 900}}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match="augment background_noise: needs a noise bank; set noise_bank"):
        build_pipeline([{"name": "background_noise"}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match=r"augment band_stop: max_center_hz=7000 is out of range"):
        build_pipeline([{"name": "band_stop", "params": {"max_center_hz": 7000}}], sample_rate_hz=SR)
    with pytest.raises(ConfigError, match=r"augment\.nope\.p: 2.0 is out of range \[0, 1\]"):
        build_pipeline([{"name": "nope", "p": 2}], sample_rate_hz=SR)
    # a preset is checked when it is loaded, not later in the training child
    with pytest.raises(ConfigError, match="unknown augmentation 'reverb'"):
        load_preset("demo-fast", ["augment=[{name: reverb}]"])
    with pytest.raises(ConfigError, match="augment spec_augment: freq_masks=1.5 must be a whole number"):
        load_preset("sirens-focused", ["train.curriculum=[{augment: [{name: spec_augment, params: {freq_masks: 1.5}}]}]"])


def test_presets_carry_the_plans_augmentations():
    sirens = load_preset("sirens-focused")
    assert [s.name for s in sirens.augment] == ["time_stretch", "pitch_shift"]
    assert sirens.augment[0].params["rates"] == [0.95, 1.05] and sirens.augment[1].params["semitones"] == [-1.0, 1.0]
    stages = [s.augment for s in sirens.train.curriculum]
    assert stages[0] is None and stages[1] is None  # A7: epochs 1-2 use the run's list
    assert {s.name: s.p for s in stages[2]} == {"time_stretch": 1.0, "pitch_shift": 1.0, "gain_dips": 0.3, "band_stop": 0.15}
    assert stages[3] == stages[2] and sirens.augment_classes == ["emergency_sirens"] and sirens.mixup_p == 0
    ast = load_preset("ast-lms")
    assert [(s.name, s.p, s.params["freq_width"], s.params["time_width"]) for s in ast.augment] == [("spec_augment", 0.8, 15, 35)]
    assert ast.mixup_alpha == 0.4 and ast.mixup_p == 0.5


def test_the_readme_b2_example_is_a_working_augmentation_list(noise_bank):
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- B2 example.*?-->\n```yaml\n(.*?)```", readme, re.S).group(1)
    example = yaml.safe_load(block) | {"noise_bank": str(noise_bank.folder)}
    config = ExperimentConfig.from_dict(example)
    pipeline = build_pipeline(config.augment, sample_rate_hz=SR, noise_bank=config.noise_bank)
    assert [s.name for s in pipeline.wave_steps] == ["background_noise", "time_stretch", "pitch_shift"]
    light = yaml.safe_load(re.search(r"# (- \{name: spec_augment, p: 0.5.*\})", block).group(1))
    assert build_pipeline(light, sample_rate_hz=SR).steps[0].transform.max_time_width(20) == 1  # T = 5% of 20 frames


def test_a_relative_noise_bank_is_a_folder_of_the_session_read_only_once_the_session_is_known(noise_bank, tmp_path):
    session = tmp_path / "session"
    session.mkdir()
    noise_bank.folder.rename(session / "noise_bank")
    # No session known (the Train tab of another session lists and shows it): nothing is read.
    speech = load_preset("speech-cnn")
    assert speech.noise_bank == "noise_bank" and speech.augment[0].name == "background_noise"
    bound = speech.for_session(session)
    assert bound.noise_bank == str(session.resolve() / "noise_bank") and Path(bound.noise_bank).is_absolute()
    assert bound.augment == speech.augment and speech.noise_bank == "noise_bank"  # the preset itself is unchanged
    assert load_preset("speech-cnn", ["noise_bank=noise_bank"], session_dir=session).noise_bank == bound.noise_bank
    assert bound.for_session(tmp_path / "elsewhere").noise_bank == bound.noise_bank  # absolute: kept as it is

    with pytest.raises(ConfigError) as refused:
        load_preset("speech-cnn", session_dir=tmp_path / "other")
    folder = (tmp_path / "other").resolve() / "noise_bank"
    assert str(refused.value) == (f"noise_bank: {folder} is not a folder; put a noise bank in MUSAN layout there "
                                  "(music/, speech/, noise/), or --set noise_bank=/path/to/musan, or remove "
                                  "background_noise from augment")
    with pytest.raises(ConfigError, match=re.escape(f"noise_bank: {tmp_path / 'gone'} is not a folder; put")):
        load_preset("speech-cnn", [f"noise_bank={tmp_path / 'gone'}"], session_dir=session)
    # Without background_noise nothing needs the bank, so a missing one is no reason to refuse.
    plain = load_preset("speech-cnn", ["augment=[]"], session_dir=tmp_path / "other")
    assert plain.noise_bank == str(folder)
    # A bank the session has is checked against the list, as a preset with an absolute bank always was.
    (session / "noise_bank" / "noise" / "free-sound" / "hum.wav").unlink()  # noise/ keeps only its broken file
    with pytest.raises(ConfigError, match="categories has 'noise', but the noise bank .* has only music, speech"):
        load_preset("speech-cnn", ["augment=[{name: background_noise, params: {categories: [noise]}}]"],
                    session_dir=session)
