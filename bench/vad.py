"""VAD hygiene speed (issue 14, B6/B9): WebRTC and Silero over a session's worth of short clips, on one core.

Writes --clips WAV files (16-bit), half at 8 kHz and half at 16 kHz, each 200, 300, 500 or
1000 ms (plan B7's durations): half eSpeak NG speech (several voices, words and phrases, a
window cut from each), half noise (white, pink, brown, mains hum). Then, with one torch thread,
measures each detector as hygiene runs it, reading every file and scoring it
(core.detectors), in multiples of real time (audio seconds / wall seconds, best of --repeats):
  webrtc               WebRTC VAD mode 3, 30 ms frames, one clip after another (goal >= 1000x);
  silero unbatched     Silero VAD one clip after another: the baseline;
  silero batched       the same clips read, then silero_probabilities_batch per rate (goal >= 100x).
The batched fractions are checked against the unbatched ones. Each detector's per-clip cost
(load, resample, features, model; p50 and p95 in ms) is printed from the unbatched runs, and
its speed without the file reading (`*_vad_only_x_realtime`) from the same stage times.
The last line printed is one JSON object.

    python bench/vad.py [--clips 1000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio import fit_length, load, probe, resample  # noqa: E402
from core.detectors import COST_COLUMNS, build_detector  # noqa: E402
from core.vad import silero_probabilities_batch  # noqa: E402
from pipelines.speech_synth import SAMPLE_RATE_HZ, Voice, synthesize  # noqa: E402

RATES_HZ = (8000, 16000)
DURATIONS_MS = (200, 300, 500, 1000)
TEXTS = ("seven", "two three", "hello world", "nine eight four", "the quick brown fox", "good morning")
VOICES = (Voice("en"), Voice("en-us+f2", rate_wpm=190, pitch=70), Voice("en+m3", rate_wpm=130, pitch=30),
          Voice("en-gb-x-rp+m3", rate_wpm=220))
GOALS = {"webrtc_x_realtime": 1000, "silero_x_realtime": 100}


def speech_pool() -> list[np.ndarray]:
    """Every text in every voice, at eSpeak NG's rate."""
    return [synthesize(text, voice=voice) for text in TEXTS for voice in VOICES]


def noise(kind: str, n: int, rate: int, rng: np.random.Generator) -> np.ndarray:
    white = rng.standard_normal(n)
    if kind == "white":
        wave = white
    elif kind == "pink":  # 1/f power: white shaped by 1/sqrt(f) in the spectrum
        spectrum = np.fft.rfft(white) / np.sqrt(np.maximum(np.arange(n // 2 + 1), 1))
        wave = np.fft.irfft(spectrum, n)
    elif kind == "brown":
        wave = np.cumsum(white)
        wave -= np.linspace(wave[0], wave[-1], n)
    else:  # mains hum with harmonics
        t = np.arange(n) / rate
        wave = sum(np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3))
    return (rng.uniform(0.05, 0.5) * wave / (np.abs(wave).max() + 1e-9)).astype(np.float32)


def write_clips(folder: Path, *, n_clips: int, rng: np.random.Generator) -> tuple[list[str], float]:
    """(paths, total audio seconds): alternating speech and noise clips."""
    pool = speech_pool()
    paths, total_s = [], 0.0
    for i in range(n_clips):
        rate = RATES_HZ[(i // 2) % 2]
        n = int(rng.choice(DURATIONS_MS)) * rate // 1000
        if i % 2 == 0:
            spoken = resample(pool[int(rng.integers(len(pool)))], orig_hz=SAMPLE_RATE_HZ, target_hz=rate)
            wave = fit_length(spoken, n, crop="random", rng=rng)
        else:
            wave = noise(("white", "pink", "brown", "hum")[(i // 4) % 4], n, rate, rng)
        path = folder / f"clip_{i:05d}.wav"
        sf.write(str(path), wave, rate, subtype="PCM_16")
        paths.append(str(path))
        total_s += n / rate
    return paths, total_s


def best(fn, *, repeats: int):
    """(wall seconds, result) of the fastest of repeats calls: the machine is shared."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        runs.append((time.perf_counter() - started, result))
    return min(runs, key=lambda run: run[0])


def silero_batched(paths: list[str]) -> np.ndarray:
    """Speech fraction (threshold 0.5) of every clip: each file read as core.detectors reads it
    (header, then samples at their own rate), then one batched pass per rate."""
    rates = [probe(path, scan_samples=False).sample_rate_hz for path in paths]
    waves = [load(path, sample_rate_hz=rate) for path, rate in zip(paths, rates)]
    fractions = np.zeros(len(paths))
    for rate in sorted(set(rates)):
        rows = [i for i, r in enumerate(rates) if r == rate]
        for row, probs in zip(rows, silero_probabilities_batch([waves[i] for i in rows], rate)):
            fractions[row] = float((probs >= 0.5).mean()) if probs.size else 0.0
    return fractions


def cost_ms(scores) -> dict[str, dict[str, float]]:
    return {column.removesuffix("_s"): {"p50": round(1e3 * float(scores[column].quantile(0.5)), 4),
                                        "p95": round(1e3 * float(scores[column].quantile(0.95)), 4)}
            for column in COST_COLUMNS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=1000, help="Clips in the session (about the speech demo's).")
    parser.add_argument("--repeats", type=int, default=3, help="Timed passes per detector; the best counts.")
    parser.add_argument("--seed", type=int, default=0, help="Seed for the clips.")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f} on {os.cpu_count()} cores; torch threads: 1")

    with tempfile.TemporaryDirectory(prefix="earmark-bench-vad-") as tmp:
        paths, audio_s = write_clips(Path(tmp), n_clips=args.clips, rng=np.random.default_rng(args.seed))
        webrtc, silero = build_detector("webrtc-3"), build_detector("silero")
        webrtc_s, webrtc_scores = best(lambda: webrtc.score(paths), repeats=args.repeats)
        unbatched_s, silero_scores = best(lambda: silero.score(paths), repeats=args.repeats)
        batched_s, batched = best(lambda: silero_batched(paths), repeats=args.repeats)
    mismatch = float(np.abs(batched - silero_scores["score"].to_numpy()).max())
    figures = {"webrtc": audio_s / webrtc_s, "silero_unbatched": audio_s / unbatched_s,
               "silero_batched": audio_s / batched_s}
    # The detector alone, reading left out: the stage seconds of the fastest pass, summed.
    vad_only = {name: audio_s / float(scores[["resample_s", "features_s", "model_s"]].to_numpy().sum())
                for name, scores in (("webrtc", webrtc_scores), ("silero_unbatched", silero_scores))}

    print(f"\n{len(paths)} clips, {audio_s:.1f} s of audio at {'/'.join(map(str, RATES_HZ))} Hz, "
          f"{DURATIONS_MS} ms, half speech; files read and scored, best of {args.repeats}")
    for name, x in figures.items():
        alone = f" ({vad_only[name]:.0f}x without reading the files)" if name in vad_only else ""
        print(f"{name:18s} {x:10.0f}x real time{alone}")
    print(f"batched vs unbatched silero: {figures['silero_batched'] / figures['silero_unbatched']:.1f}x; "
          f"largest fraction difference {mismatch:.2g}")
    for name, scores in (("webrtc-3", webrtc_scores), ("silero", silero_scores)):
        speech, other = scores["score"][::2], scores["score"][1::2]
        print(f"{name}: per-clip ms {cost_ms(scores)}; speech clips >= 0.70: {(speech >= 0.7).mean():.2f}, "
              f"noise clips <= 0.05: {(other <= 0.05).mean():.2f}")
    print(json.dumps({
        "clips": len(paths), "audio_s": round(audio_s, 1), "torch_threads": 1,
        "webrtc_x_realtime": round(figures["webrtc"]),
        "silero_x_realtime": round(figures["silero_batched"]),
        "silero_unbatched_x_realtime": round(figures["silero_unbatched"]),
        "webrtc_vad_only_x_realtime": round(vad_only["webrtc"]),
        "silero_unbatched_vad_only_x_realtime": round(vad_only["silero_unbatched"]),
        "silero_batch_speedup": round(figures["silero_batched"] / figures["silero_unbatched"], 2),
        "silero_batched_max_fraction_difference": mismatch,
        "per_clip_cost_ms": {"webrtc-3": cost_ms(webrtc_scores), "silero": cost_ms(silero_scores)},
        "goals": GOALS, "load_average_before": round(load_before, 2),
    }))


if __name__ == "__main__":
    main()
