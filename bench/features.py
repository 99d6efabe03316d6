"""Feature cache throughput against a naive per-file librosa pipeline (issue 4; D1).

Writes --clips clips of --seconds s at 44.1 kHz (noise + tones) to a temp folder, then
measures in one run, in clips/s:
  naive   librosa.load(sr=16000) + melspectrogram + power_to_db, one file after another;
  cold    FeatureCache.build from empty with --workers threads, and with 1 for comparison;
  warm    FeatureCache.get of every clip at once, and of random batches of --batch clips as
          a training loop reads them (the data file is in the OS page cache by then).
It also times the resamplers core/audio.py could use on one clip (the one it uses: cached).
Goals: warm >= 10x naive, cold > naive. The last line printed is one JSON object.

    python bench/features.py [--clips 200] [--workers 2]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import soxr
import torch
import torchaudio.functional as AF

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio import resample  # noqa: E402
from core.config import FeatureConfig  # noqa: E402
from core.features import FeatureCache  # noqa: E402

SOURCE_RATE_HZ = 44100
# The plan's log-mel (D1) at 16 kHz.
FEATURES = FeatureConfig(sample_rate_hz=16000, n_mels=128, n_fft=2048, hop_length=512, f_min_hz=500.0,
                         max_length_s=10.0)


def write_clips(folder: Path, *, n_clips: int, seconds: float, rng: np.random.Generator) -> list[Path]:
    """Noise plus two random tones per clip, 16-bit WAV at 44.1 kHz."""
    t = np.arange(int(seconds * SOURCE_RATE_HZ)) / SOURCE_RATE_HZ
    paths = []
    for i in range(n_clips):
        freqs = rng.uniform(200, 6000, size=2)
        wave = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * freqs[:, None] * t).sum(axis=0)
        path = folder / f"clip_{i:05d}.wav"
        sf.write(str(path), wave.astype(np.float32), SOURCE_RATE_HZ, subtype="PCM_16")
        paths.append(path)
    return paths


def naive_log_mel(path: Path) -> np.ndarray:
    """The per-file pipeline the cache replaces: same mel parameters (HTK scale, no norm)."""
    y, sr = librosa.load(str(path), sr=FEATURES.sample_rate_hz)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=FEATURES.n_fft, hop_length=FEATURES.hop_length,
                                         n_mels=FEATURES.n_mels, fmin=FEATURES.f_min_hz, htk=True, norm=None)
    return librosa.power_to_db(mel, ref=1.0, top_db=FEATURES.top_db)


def clips_per_s(n_clips: int, seconds: float) -> float:
    return n_clips / seconds


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def best_ms(fn, *, repeats: int = 15) -> float:
    """Best of several calls in ms: the machine is shared, the minimum is the least disturbed."""
    fn()
    return 1e3 * min(timed(fn) for _ in range(repeats))


def resampler_ms(path: Path) -> dict[str, float]:
    """One clip 44.1 -> 16 kHz, one thread: the options for core/audio.py's resample."""
    wave = sf.read(str(path), dtype="float32")[0]
    tensor = torch.from_numpy(wave)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return {
            "torchaudio_functional_ms": best_ms(lambda: AF.resample(tensor, SOURCE_RATE_HZ, 16000)),
            "core_audio_cached_kernel_ms": best_ms(lambda: resample(wave, orig_hz=SOURCE_RATE_HZ, target_hz=16000)),
            "soxr_hq_ms": best_ms(lambda: soxr.resample(wave, SOURCE_RATE_HZ, 16000, quality="HQ")),
        }
    finally:
        torch.set_num_threads(threads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=200, help="Clips to generate.")
    parser.add_argument("--seconds", type=float, default=10.0, help="Length of each clip in seconds.")
    parser.add_argument("--workers", type=int, default=2, help="Worker processes for the cache build.")
    parser.add_argument("--batch", type=int, default=32, help="Clips per batch in the training-loop read.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for the audio and the batch order.")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="earmark-bench-") as tmp:
        folder = Path(tmp)
        (folder / "audio").mkdir()
        paths = write_clips(folder / "audio", n_clips=args.clips, seconds=args.seconds, rng=rng)
        n = len(paths)

        resampling = resampler_ms(paths[0])
        naive = clips_per_s(n, timed(lambda: [naive_log_mel(p) for p in paths]))

        cache = FeatureCache(folder / "cache", FEATURES)
        report = cache.build(paths, workers=args.workers, progress=False)
        if report.computed != n:
            raise SystemExit(f"cold build computed {report.computed} of {n} clips; failed: {report.failed}")
        cold = clips_per_s(n, report.seconds)
        cold_one_worker = clips_per_s(n, FeatureCache(folder / "one_worker", FEATURES).build(
            paths, workers=1, progress=False).seconds)
        rebuild = cache.build(paths, workers=args.workers, progress=False)

        warm_all = clips_per_s(n, min(timed(lambda: cache.get(paths)) for _ in range(5)))
        order = rng.permutation(n)
        batches = [[paths[i] for i in order[start:start + args.batch]] for start in range(0, n, args.batch)]
        warm_batches = clips_per_s(n, min(timed(lambda: [cache.get(b) for b in batches]) for _ in range(5)))

    print(f"\n{n} clips of {args.seconds:g} s at {SOURCE_RATE_HZ} Hz -> log-mel {FEATURES.n_mels} x "
          f"{FEATURES.n_frames} at {FEATURES.sample_rate_hz} Hz, {args.workers} workers")
    rows = [("naive librosa per file", naive), ("cold build, 1 worker", cold_one_worker),
            (f"cold build, {args.workers} workers", cold), ("warm get, all clips", warm_all),
            (f"warm get, batches of {args.batch}", warm_batches)]
    print(f"{'pipeline':34s} {'clips/s':>10s} {'x naive':>8s}")
    for name, value in rows:
        print(f"{name:34s} {value:10.1f} {value / naive:8.1f}")
    print(f"rebuild of an unchanged cache: {rebuild.computed} computed, {rebuild.reused} reused "
          f"in {rebuild.seconds * 1e3:.1f} ms")
    print("resample one clip 44.1 -> 16 kHz, 1 thread: "
          + ", ".join(f"{k.removesuffix('_ms')} {v:.2f} ms" for k, v in resampling.items()))
    print(json.dumps({
        "clips": n, "seconds_per_clip": args.seconds, "workers": args.workers,
        "naive_clips_per_s": round(naive, 1),
        "cold_clips_per_s": round(cold, 1),
        "cold_one_worker_clips_per_s": round(cold_one_worker, 1),
        "warm_get_all_clips_per_s": round(warm_all, 1),
        "warm_batch_clips_per_s": round(warm_batches, 1),
        "warm_speedup_vs_naive": round(warm_batches / naive, 1),
        "cold_speedup_vs_naive": round(cold / naive, 2),
        "resample_ms": {k: round(v, 2) for k, v in resampling.items()},
    }))


if __name__ == "__main__":
    main()
