"""What augmentation costs against the training step it feeds (issue 5).

Measures on this machine, per 10 s clip at 16 kHz (best of --repeats, one thread of work):
  - each registered transform with the plans' settings (A4, B2, D3), and the read + log-mel
    that any waveform augmentation on the fly adds before a transform even runs;
  - each as a fraction of one training step of the demo-fast CNN on a batch of 32 (the cost
    if every clip of the batch got it);
  - the sirens preset as training runs it: a synthetic 6-class set of 10 s clips, A5's composed
    batches with two siren copies each, AugmentFeed measuring what on-the-fly augmentation adds
    to a real batch against the sirens CNN's step, and the choice it makes (on the fly, or
    copies rendered once before training).
The last line printed is one JSON object; `augment_cost_vs_model_step` is the sirens ratio.

    python bench/augment.py [--repeats 5] [--clips-per-class 12]
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
import pandas as pd
import soundfile as sf
import torch
import torch.nn.functional as F
from audiomentations import BandStopFilter

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.augment import AugmentFeed, NoiseBank, build_pipeline  # noqa: E402
from core.augment.band_stop import stop_band_hz  # noqa: E402
from core.augment.cost import time_model_step  # noqa: E402
from core.config import load_preset  # noqa: E402
from core.features import FeatureCache, LogMel, clip_waveform, compute_norm_stats, torch_threads  # noqa: E402
from core.models import build_model  # noqa: E402
from core.curriculum import EpochPlan  # noqa: E402

SR = 16000
CLIP_S = 10.0
# What 'auto' features fix on the bench's clips (CLIP_S long, sampled at SR): a run would fit them.
BENCH_FEATURES = [f"features.max_length_s={CLIP_S}", "features.f_max_hz=null"]
SIRENS_LABELS = ["alert_sounds", "collision_sounds", "emergency_sirens", "environmental_sounds", "human_scream",
                 "road_traffic"]
# The plans' settings: A4 (sirens), B2 (noise bank, SpecAugment 2+2), plus level/noise helpers.
TRANSFORMS = [
    ("time_stretch", {"rates": [0.95, 1.05]}),
    ("pitch_shift", {"semitones": [-1.0, 1.0]}),
    ("gain_dips", {}),
    ("band_stop", {"q": 4.0}),
    ("gain", {}),
    ("gaussian_snr", {}),
    ("background_noise", {"min_snr_db": -5.0, "max_snr_db": 20.0}),
    ("spec_augment", {"freq_masks": 2, "freq_width": 15, "time_masks": 2, "time_width": 35}),
]


def best_s(fn, *, repeats: int) -> float:
    """Best of several calls in seconds: the machine is shared, the minimum is the least disturbed."""
    fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def siren_like(rng: np.random.Generator, label_index: int, seconds: float) -> np.ndarray:
    """A tone per class (a swept one for sirens) in noise: enough structure for real transforms."""
    t = np.arange(int(seconds * SR)) / SR
    base = 300.0 * (label_index + 1)
    sweep = 0.3 * base * np.sin(2 * np.pi * 0.5 * t) if label_index == 2 else 0.0
    phase = 2 * np.pi * np.cumsum(base + sweep) / SR
    return (0.3 * np.sin(phase) + 0.03 * rng.standard_normal(t.size)).astype(np.float32)


def write_noise_bank(folder: Path, rng: np.random.Generator) -> NoiseBank:
    for category in ("music", "speech", "noise"):
        (folder / category).mkdir(parents=True)
        sf.write(str(folder / category / "a.wav"), (0.1 * rng.standard_normal(30 * SR)).astype(np.float32), SR)
    return NoiseBank(folder, sample_rate_hz=SR)


def per_transform_s(clip: Path, bank: NoiseBank, *, repeats: int) -> dict[str, float]:
    """Seconds per 10 s clip: draw + apply of each transform, and the read + log-mel base."""
    sirens = load_preset("sirens-focused", BENCH_FEATURES)
    wave = clip_waveform(clip, sirens.features)
    log_mel = LogMel(sirens.features)
    with torch.inference_mode():
        spec = log_mel(torch.from_numpy(wave)[None])[0]
    costs = {}
    rng = np.random.default_rng(0)
    for name, params in TRANSFORMS:
        step = build_pipeline([{"name": name, "params": params}], sample_rate_hz=SR, noise_bank=bank).steps[0]
        x = spec if step.transform.domain == "spec" else wave
        costs[name] = best_s(lambda: step.transform.apply(x, step.transform.randomize(rng, shape=tuple(x.shape))),
                             repeats=repeats)

    def read_and_log_mel() -> None:
        with torch.inference_mode():
            log_mel(torch.from_numpy(clip_waveform(clip, sirens.features))[None])
    costs["read + log-mel (on-the-fly base)"] = best_s(read_and_log_mel, repeats=repeats)
    return costs


def model_step_s(preset: str, *, batch: int = 32) -> float:
    """One training step of a preset's model on a batch of normalised log-mel features."""
    config = load_preset(preset, BENCH_FEATURES)
    model = build_model(config.model, feature_cfg=config.features, labels=SIRENS_LABELS)
    features = torch.randn(batch, config.features.n_mels, config.features.n_frames)
    targets = torch.randint(0, len(SIRENS_LABELS), (batch,))
    return time_model_step(model, features, targets, loss_fn=F.cross_entropy, repeats=3)


def band_stop_in_band_db() -> dict[str, float]:
    """Energy change inside the Q 4 band around 1.5 kHz on white noise: ours vs audiomentations'."""
    noise = (0.1 * np.random.default_rng(0).standard_normal(int(CLIP_S * SR))).astype(np.float32)
    low, high = stop_band_hz(1500.0, 4.0)

    def drop(out: np.ndarray) -> float:
        freqs = np.fft.rfftfreq(noise.size, 1 / SR)
        band = (freqs >= low) & (freqs < high)
        return float(10 * np.log10((np.abs(np.fft.rfft(out))[band] ** 2).sum() / (np.abs(np.fft.rfft(noise))[band] ** 2).sum()))

    ours = build_pipeline([{"name": "band_stop", "params": {"q": 4.0}}], sample_rate_hz=SR).steps[0].transform
    theirs = BandStopFilter(min_center_freq=1500, max_center_freq=1500, min_bandwidth_fraction=0.25,
                            max_bandwidth_fraction=0.25, min_rolloff=24, max_rolloff=24, p=1.0)
    theirs.parameters = {"should_apply": True, "rolloff": 24, "center_freq": 1500.0, "bandwidth": 375.0}
    return {"earmark_db": round(drop(ours.apply(noise, {"center_hz": 1500.0, "q": 4.0, "attenuation_db": 30.0})), 1),
            "audiomentations_db": round(drop(theirs.apply(noise, SR)), 1)}


def sirens_decision(folder: Path, *, clips_per_class: int) -> dict:
    """The sirens preset's augmentation decision as training makes it, on synthetic 10 s clips."""
    config = load_preset("sirens-focused", BENCH_FEATURES)
    rng = np.random.default_rng(1)
    paths, labels = [], []
    for index, label in enumerate(SIRENS_LABELS):
        for i in range(clips_per_class):
            path = folder / label / f"{i:03d}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(str(path), siren_like(rng, index, CLIP_S), SR)
            paths.append(str(path))
            labels.append(label)
    cache = FeatureCache(folder / "cache", config.features)
    cache.build(paths, progress=False)
    train = pd.DataFrame({"clip_id": range(len(paths)), "path": paths, "label": labels, "row": cache.rows(paths),
                          "y": [SIRENS_LABELS.index(label) for label in labels], "hard": False})
    plan = EpochPlan(train, config.train, labels=SIRENS_LABELS, world_size=1)
    feed = AugmentFeed(train, config, cache=cache, norm_stats=compute_norm_stats(cache.array),
                       stages=[plan.stage(e) for e in range(plan.n_epochs)], workers=2)
    model = build_model(config.model, feature_cfg=config.features, labels=SIRENS_LABELS)
    batches = {e: plan.batches(e, samples=feed.sample_ids(e)) for e in range(plan.n_epochs)}
    decision = feed.prepare(folder, decide=True, batches=batches, time_model_step=lambda x, rows: time_model_step(
        model, x, torch.from_numpy(train["y"].to_numpy()[rows]), loss_fn=F.cross_entropy))
    feed.close(folder)
    return decision.to_dict()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed calls per transform (the best counts).")
    parser.add_argument("--clips-per-class", type=int, default=12, help="Synthetic 10 s clips per class for the sirens run.")
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory(prefix="earmark-bench-augment-") as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        clip = folder / "clip.wav"
        sf.write(str(clip), siren_like(rng, 2, CLIP_S), SR)
        with torch_threads(1):  # as training renders clips: one torch thread per clip thread
            costs = per_transform_s(clip, write_noise_bank(folder / "bank", rng), repeats=args.repeats)
        demo_step = model_step_s("demo-fast")
        sirens_step = model_step_s("sirens-focused")
        band_stop = band_stop_in_band_db()
        sirens = sirens_decision(folder / "sirens", clips_per_class=args.clips_per_class)

    print(f"\nper 10 s clip at {SR} Hz; share of one demo-fast CNN step ({demo_step * 1e3:.0f} ms, batch 32) "
          f"if all 32 clips get it")
    print(f"{'transform':34s} {'ms/clip':>9s} {'x32 / step':>11s}")
    for name, seconds in costs.items():
        print(f"{name:34s} {seconds * 1e3:9.2f} {seconds * 32 / demo_step:11.3f}")
    print(f"band-stop Q 4 at 1.5 kHz, energy change inside the band: ours {band_stop['earmark_db']} dB, "
          f"audiomentations BandStopFilter {band_stop['audiomentations_db']} dB")
    print(f"\nsirens-focused on the fly: {sirens['augment_s_per_batch']:.3f} s added per batch of {sirens['batch_size']} "
          f"vs a {sirens['model_step_s']:.3f} s CNN step -> {sirens['augment_cost_vs_model_step']:.2f}x; "
          f"mode: {sirens['mode']} ({sirens['reason']})")
    if sirens["mode"] == "offline":
        print(f"  {sirens['copies']} copies rendered once in {sirens['render_s']:.1f} s")
    print(json.dumps({
        "clip_s": CLIP_S, "sample_rate_hz": SR,
        "per_transform_ms_per_clip": {k: round(v * 1e3, 3) for k, v in costs.items()},
        "per_transform_fraction_of_demo_fast_step_batch32": {k: round(v * 32 / demo_step, 4) for k, v in costs.items()},
        "demo_fast_step_s": round(demo_step, 4), "sirens_step_s": round(sirens_step, 4),
        "band_stop_in_band_db": band_stop,
        "sirens_mode": sirens["mode"], "sirens_augment_s_per_batch": round(sirens["augment_s_per_batch"], 4),
        "sirens_model_step_s": round(sirens["model_step_s"], 4),
        "augment_cost_vs_model_step": sirens["augment_cost_vs_model_step"],
    }))


if __name__ == "__main__":
    main()
