"""core/features.py: log-mel, clip waveforms, normalisation statistics, the feature cache."""
from __future__ import annotations

import fcntl
from dataclasses import replace
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import torchaudio

from conftest import tone, write_wav
from core import features
from core.config import FeatureConfig
from core.features import (FeatureCache, LogMel, NotCachedError, clip_waveform, compute_norm_stats,
                           feature_cache_key, normalize)

SR = 16000


@pytest.fixture
def cfg() -> FeatureConfig:
    """Small and fast: 1 s clips, 32 mels, 63 frames."""
    return FeatureConfig(sample_rate_hz=SR, n_mels=32, n_fft=512, hop_length=256, max_length_s=1.0)


def write_clips(folder: Path, freqs: list[float], *, seconds: float = 1.0) -> list[Path]:
    return [write_wav(folder / f"tone_{i}_{int(f)}.wav", tone(f, seconds=seconds)) for i, f in enumerate(freqs)]


def reference_features(path: Path, feature_cfg: FeatureConfig) -> np.ndarray:
    wave = clip_waveform(path, feature_cfg, rng=np.random.default_rng(0))
    return LogMel(feature_cfg)(torch.from_numpy(wave)[None])[0].numpy()


def bump_mtime(path: Path) -> None:
    """Move mtime 1 s on, so the change shows even on filesystems with coarse timestamps."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


# --- LogMel ---------------------------------------------------------------------------------

def test_log_mel_shape_dtype_and_db_range(cfg):
    waves = torch.from_numpy(np.stack([tone(440), tone(2000, amplitude=0.01), np.zeros(SR)]).astype(np.float32))
    out = LogMel(cfg)(waves)
    assert out.shape == (3, cfg.n_mels, cfg.n_frames) == (3, 32, 63)
    assert out.dtype == torch.float32
    assert torch.isfinite(out).all()
    peaks = out.amax(dim=(1, 2))
    assert 10 < peaks[0] < 60  # a 0.3-amplitude tone, power re 1.0
    assert peaks[1] < peaks[0] - 25  # 30x quieter amplitude = ~30 dB
    assert (out.amin(dim=(1, 2)) >= peaks - cfg.top_db - 1e-3).all()


def test_top_db_is_cut_per_clip_not_per_batch(cfg):
    loud, quiet = tone(440, amplitude=0.5), tone(440, amplitude=0.5e-4) + 1e-6 * np.random.default_rng(0).standard_normal(SR)
    log_mel = LogMel(cfg)
    batch = log_mel(torch.tensor(np.stack([loud, quiet]), dtype=torch.float32))
    alone = log_mel(torch.tensor(quiet[None], dtype=torch.float32))
    torch.testing.assert_close(batch[1], alone[0])
    assert batch[1].min() >= batch[1].max() - cfg.top_db
    assert batch[1].min() < batch[0].max() - cfg.top_db  # a shared cut would clamp it at the loud peak - 80


@pytest.mark.parametrize("freq_hz", [300.0, 1000.0, 3000.0, 6000.0])
def test_tone_energy_peaks_in_the_mel_band_holding_its_frequency(freq_hz):
    feature_cfg = FeatureConfig(sample_rate_hz=SR, n_mels=40, n_fft=1024, hop_length=256, max_length_s=1.0)
    out = LogMel(feature_cfg)(torch.tensor(tone(freq_hz)[None], dtype=torch.float32))[0]
    fbanks = torchaudio.functional.melscale_fbanks(
        n_freqs=513, f_min=0.0, f_max=SR / 2, n_mels=40, sample_rate=SR)
    expected_band = int(fbanks[round(freq_hz / (SR / 1024))].argmax())
    assert int(out.mean(dim=1).argmax()) == expected_band


def test_f_min_acts_as_high_pass_on_a_low_tone(cfg):
    wave = torch.tensor(tone(200)[None], dtype=torch.float32)
    # Edge frames are left out: reflect padding puts a broadband kink at each end.
    full = LogMel(cfg)(wave)[..., 2:-2]
    high_passed = LogMel(replace(cfg, f_min_hz=500.0))(wave)[..., 2:-2]
    assert high_passed.max() < full.max() - 40


def test_log_mel_rejects_wrong_shapes(cfg):
    with pytest.raises(ValueError, match=r"waves must have shape \(batch, samples\).*got \(16000,\)"):
        LogMel(cfg)(torch.zeros(SR))
    with pytest.raises(ValueError, match="at least 257 samples"):
        LogMel(cfg)(torch.zeros(1, 100))


# --- clip_waveform ------------------------------------------------------------------------

def test_clip_waveform_crops_long_clips_per_policy(tmp_path, cfg):
    ramp = (np.arange(int(2.5 * SR)) % 20000 / 40000).astype(np.float32)  # distinct sample values
    path = write_wav(tmp_path / "long.wav", ramp, subtype="FLOAT")
    start = clip_waveform(path, replace(cfg, crop="start"))
    center = clip_waveform(path, replace(cfg, crop="center"))
    np.testing.assert_array_equal(start, ramp[:SR])
    np.testing.assert_array_equal(center, ramp[SR // 4 * 3:SR // 4 * 3 + SR])  # (40000 - 16000) // 2
    random_cfg = replace(cfg, crop="random")
    first = clip_waveform(path, random_cfg, rng=np.random.default_rng(7))
    again = clip_waveform(path, random_cfg, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, again)
    offset = int(np.flatnonzero(ramp == first[0])[0])
    np.testing.assert_array_equal(first, ramp[offset:offset + SR])
    with pytest.raises(ValueError, match="rng"):
        clip_waveform(path, random_cfg)


def test_clip_waveform_pads_short_clips_and_resamples(tmp_path, cfg):
    short = tone(440, seconds=0.25)
    path = write_wav(tmp_path / "short.wav", short, subtype="FLOAT")
    zeros = clip_waveform(path, cfg)
    repeat = clip_waveform(path, replace(cfg, pad="repeat"))
    assert zeros.shape == repeat.shape == (SR,) and zeros.dtype == np.float32
    np.testing.assert_allclose(zeros[:4000], short, atol=1e-7)
    assert not zeros[4000:].any()
    np.testing.assert_allclose(repeat, np.tile(short, 4), atol=1e-7)
    resampled = clip_waveform(write_wav(tmp_path / "cd.wav", tone(440, sample_rate_hz=44100), 44100), cfg)
    assert resampled.shape == (SR,)
    np.testing.assert_allclose(resampled[1000:-1000], tone(440)[1000:-1000], atol=2e-3)


# --- normalisation --------------------------------------------------------------------------

def synthetic_features(rng, n_clips=40, n_mels=6, n_frames=9) -> np.ndarray:
    """Bands with different means and spreads, like dB features."""
    means = np.linspace(-60, 10, n_mels)[None, :, None]
    stds = np.linspace(1, 20, n_mels)[None, :, None]
    return (means + stds * rng.standard_normal((n_clips, n_mels, n_frames))).astype(np.float32)


def test_norm_stats_from_training_rows_standardise_training_features(rng):
    data = synthetic_features(rng)
    train_rows = np.arange(0, 40, 2)
    data[1::2] += 1000.0  # other splits must not leak into the statistics
    stats = compute_norm_stats(data, rows=train_rows, chunk_rows=3)
    normalised = normalize(data[train_rows], stats)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(normalised.std(axis=(0, 2)), 1.0, atol=1e-4)
    unchunked = compute_norm_stats(data, rows=train_rows, chunk_rows=1000)
    np.testing.assert_allclose(stats["mean"], unchunked["mean"], rtol=1e-9)
    np.testing.assert_allclose(stats["std"], unchunked["std"], rtol=1e-9)


def test_norm_stats_floor_constant_bands_and_normalize_torch(rng):
    data = synthetic_features(rng)
    data[:, 2, :] = -80.0
    stats = compute_norm_stats(data)
    assert stats["std"][2] == features.MIN_STD_DB
    batch = torch.from_numpy(data[:4]).to(torch.float64)
    out = normalize(batch, stats)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
    assert torch.isfinite(out).all() and (out[:, 2] == 0).all()
    np.testing.assert_allclose(out.numpy(), normalize(data[:4], stats), atol=1e-5)


def test_norm_inputs_are_validated(rng):
    data = synthetic_features(rng)
    with pytest.raises(ValueError, match=r"features must have shape \(clips, n_mels, n_frames\), got \(40, 6\)"):
        compute_norm_stats(data[:, :, 0])
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 40\), got values from 3 to 40"):
        compute_norm_stats(data, rows=[3, 40])
    with pytest.raises(ValueError, match="rows is empty"):
        compute_norm_stats(data, rows=[])
    stats = compute_norm_stats(data)
    with pytest.raises(ValueError, match="stats must hold 5 values per key"):
        normalize(data[:, :5], stats)
    with pytest.raises(ValueError, match="must be positive"):
        normalize(data, {"mean": stats["mean"], "std": [0.0] * 6})


# --- the feature cache ----------------------------------------------------------------------

def test_cache_builds_once_and_serves_the_same_features(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [300, 600, 1200, 2400])
    cache = FeatureCache(tmp_path / "cache", cfg)
    first = cache.build(paths, progress=False)
    assert (first.computed, first.reused, first.failed) == (4, 0, {})
    features_first = cache.get(paths)
    assert features_first.shape == (4, cfg.n_mels, cfg.n_frames) and features_first.dtype == np.float32
    np.testing.assert_allclose(features_first[2], reference_features(paths[2], cfg), atol=0.05)  # float16 storage

    second = FeatureCache(tmp_path / "cache", cfg).build(paths + [paths[0]], progress=False)
    assert (second.computed, second.reused, second.failed) == (0, 4, {})
    np.testing.assert_array_equal(cache.get(paths), features_first)
    np.testing.assert_array_equal(cache.take(cache.rows(paths[::-1])), features_first[::-1])
    assert all(p in cache for p in paths) and tmp_path / "other.wav" not in cache
    assert (cache.folder / "config.json").is_file()


def test_changed_file_invalidates_only_that_clip(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [300, 600, 1200, 2400])
    cache = FeatureCache(tmp_path / "cache", cfg)
    cache.build(paths, progress=False)
    before = cache.get(paths)
    write_wav(paths[1], tone(5000))
    bump_mtime(paths[1])
    assert paths[1] not in cache and paths[0] in cache
    with pytest.raises(NotCachedError, match=r"1 of 4 clips are not in the feature cache .*tone_1_600\.wav"):
        cache.get(paths)
    bump_mtime(paths[3])  # touched, same content: recomputed all the same

    report = cache.build(paths, progress=False)
    assert (report.computed, report.reused) == (2, 2)
    after = cache.get(paths)
    np.testing.assert_array_equal(after[[0, 2, 3]], before[[0, 2, 3]])
    assert int(after[1].mean(axis=1).argmax()) > int(before[1].mean(axis=1).argmax()) + 10  # 5 kHz now
    np.testing.assert_allclose(after[1], reference_features(paths[1], cfg), atol=0.05)


def test_config_changes_pick_their_own_folder(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [440])
    cache = FeatureCache(tmp_path / "cache", cfg)
    high_passed = FeatureCache(tmp_path / "cache", replace(cfg, f_min_hz=500))
    assert high_passed.folder != cache.folder
    cache.build(paths, progress=False)
    assert paths[0] not in high_passed
    assert high_passed.build(paths, progress=False).computed == 1
    assert not np.array_equal(cache.get(paths), high_passed.get(paths))
    # Normalisation is applied after reading, and 500 == 500.0: both reuse a folder.
    assert FeatureCache(tmp_path / "cache", replace(cfg, normalize=False)).folder == cache.folder
    assert feature_cache_key(replace(cfg, f_min_hz=500)) == feature_cache_key(replace(cfg, f_min_hz=500.0))


def test_unusable_files_are_reported_and_the_rest_builds(tmp_path, cfg):
    good = write_clips(tmp_path / "audio", [300, 900])
    corrupt = tmp_path / "audio" / "not_audio.wav"
    corrupt.write_text("this is a text file, not audio\n" * 20)
    missing = tmp_path / "audio" / "gone.wav"
    cache = FeatureCache(tmp_path / "cache", cfg)
    report = cache.build([good[0], corrupt, missing, good[1]], progress=False)
    assert report.computed == 2
    assert set(report.failed) == {str(corrupt), str(missing)}
    assert report.failed[str(corrupt)].startswith("unreadable")
    assert report.failed[str(missing)].startswith("missing")
    assert cache.get(good).shape == (2, cfg.n_mels, cfg.n_frames)
    again = cache.build([good[0], corrupt], progress=False)  # failures are retried, not remembered
    assert (again.computed, again.reused, list(again.failed)) == (0, 1, [str(corrupt)])


def test_build_validates_workers(tmp_path, cfg):
    with pytest.raises(ValueError, match="workers must be >= 1, got 0"):
        FeatureCache(tmp_path, cfg).build([], workers=0)


def test_killed_build_leaves_the_previous_index(tmp_path, cfg, monkeypatch):
    paths = write_clips(tmp_path / "audio", [300, 600, 1200])
    cache = FeatureCache(tmp_path / "cache", cfg)
    cache.build(paths[:2], progress=False)
    before = cache.get(paths[:2])

    def killed(*args):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(features.os, "replace", killed)  # dies after writing rows, before publishing
        with pytest.raises(KeyboardInterrupt):
            cache.build(paths, progress=False)
    reader = FeatureCache(tmp_path / "cache", cfg)
    np.testing.assert_array_equal(reader.get(paths[:2]), before)
    assert paths[2] not in reader
    assert reader.build(paths, progress=False).computed == 1
    row_bytes = cfg.n_mels * cfg.n_frames * 2
    assert (cache.folder / features.DATA_FILE).stat().st_size == 3 * row_bytes  # the orphan row was cut off


def test_second_builder_waits_for_the_lock(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [300, 600])
    cache = FeatureCache(tmp_path / "cache", cfg)
    cache.folder.mkdir(parents=True)
    reports = []
    with open(cache.folder / features.LOCK_FILE, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        builder = threading.Thread(target=lambda: reports.append(cache.build(paths, progress=False)))
        builder.start()
        time.sleep(0.3)
        assert builder.is_alive() and not reports
    builder.join(timeout=30)
    assert reports[0].computed == 2


def read_until_stopped(cache_dir: str, cfg_dict: dict, paths: list[str], flags: str) -> list[float]:
    """Runs in another process: reads the same clips until told to stop, returns each checksum."""
    cache = FeatureCache(cache_dir, FeatureConfig.from_dict(cfg_dict))
    Path(flags, f"started_{os.getpid()}").touch()
    sums = []
    while not Path(flags, "stop").exists() or len(sums) < 3:
        sums.append(float(cache.get(paths).astype(np.float64).sum()))
    return sums


def test_parallel_build_matches_serial(tmp_path, cfg):
    threads = torch.get_num_threads()
    paths = write_clips(tmp_path / "audio", [200, 400, 800, 1600, 3200, 6400])
    parallel = FeatureCache(tmp_path / "parallel", cfg)
    assert parallel.build(paths, workers=2, progress=False).computed == 6
    serial = FeatureCache(tmp_path / "serial", cfg)
    serial.build(paths, workers=1, progress=False)
    np.testing.assert_array_equal(parallel.get(paths), serial.get(paths))
    assert torch.get_num_threads() == threads  # the build's one-thread setting is undone


@pytest.mark.slow  # starts two reader processes (each imports torch)
def test_reader_processes_see_consistent_features_while_a_build_appends(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [200, 400, 800, 1600])
    extra = write_clips(tmp_path / "more", [250, 500, 1000, 2000, 4000, 7000])
    parallel = FeatureCache(tmp_path / "parallel", cfg)
    parallel.build(paths, progress=False)
    expected = float(parallel.get(paths).astype(np.float64).sum())
    flags = tmp_path / "flags"
    flags.mkdir()
    with ProcessPoolExecutor(max_workers=2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        readers = [pool.submit(read_until_stopped, str(tmp_path / "parallel"), cfg.to_dict(),
                               list(map(str, paths)), str(flags)) for _ in range(2)]
        deadline = time.monotonic() + 60
        while len(list(flags.glob("started_*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert parallel.build(extra, workers=2, progress=False).computed == 6  # appends, replaces the index
        (flags / "stop").touch()
        for reader in readers:
            sums = reader.result(timeout=60)
            assert sums == [expected] * len(sums)
    assert parallel.get(extra).shape == (6, cfg.n_mels, cfg.n_frames)


def test_norm_stats_stream_from_the_cache_memmap(tmp_path, cfg):
    paths = write_clips(tmp_path / "audio", [300, 600, 1200, 2400, 4800])
    cache = FeatureCache(tmp_path / "cache", cfg)
    cache.build(paths, progress=False)
    train_rows = cache.rows(paths[:3])
    stats = compute_norm_stats(cache.array, rows=train_rows, chunk_rows=2)
    assert len(stats["mean"]) == len(stats["std"]) == cfg.n_mels
    normalised = normalize(cache.take(train_rows), stats)
    np.testing.assert_allclose(normalised.mean(axis=(0, 2)), 0.0, atol=1e-3)
    np.testing.assert_allclose(normalised.std(axis=(0, 2)), 1.0, atol=1e-3)
