"""Review speed: server-side time to move to the next clip (load audio, render the spectrogram,
fetch predictions and history) for 10 s clips, against a naive path (a fresh matplotlib figure
per clip, saved as PNG) measured in the same run.

Goal (issue 7): p95 <= 80 ms on this machine. Two figures: cold (nothing cached) and the way the
Review tab works (the next clips are prefetched while the annotator listens).

    python bench/review_latency.py [--clips 40]
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.store import Store  # noqa: E402
from pipelines.demo import build_demo_session  # noqa: E402
from pipelines.finetune import finetune  # noqa: E402
from pipelines.review_queue import default_run  # noqa: E402
from workbench.renderer import ClipViewCache, read_clip, render_clip_view  # noqa: E402


def naive_view(store: Store, clip_id: int) -> bytes:
    """What a first version would do: a matplotlib figure per clip, spectrogram via specgram."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    audio = read_clip(store, clip_id)
    figure = plt.figure(figsize=(9, 3))
    axes = figure.add_subplot()
    axes.specgram(audio.wave, NFFT=1024, Fs=audio.sample_rate_hz, noverlap=512, cmap="magma")
    axes.set_xlabel("time (s)")
    axes.set_ylabel("frequency (Hz)")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    store.decisions(clip_id=clip_id)
    return buffer.getvalue()


def percentiles(seconds: list[float]) -> tuple[float, float]:
    ms = np.array(seconds) * 1000
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--session", help="an existing session with a trained run (default: build a small demo one)")
    args = parser.parse_args()
    torch.set_num_threads(1)  # as the server does
    with tempfile.TemporaryDirectory() as tmp:
        session = Path(args.session) if args.session else Path(tmp) / "session"
        if not args.session:
            build_demo_session(session_dir=session, audio_dir=Path(tmp) / "audio", clips_per_class=40, progress=False)
        with Store.open(session) as store:
            run_id = default_run(store)
            if run_id is None:
                run_id = finetune(store, preset="demo-fast", overrides=["train.epochs=1"], init_from="none", progress=False).run_id
            labels = store.labels()
            clips = labels[(labels.status == "ok") & (labels.duration_s >= 9.0)].clip_id.tolist()[:args.clips]
            cold, warm, naive = [], [], []
            for clip_id in clips:
                start = time.perf_counter()
                render_clip_view(store, clip_id, run_id=run_id, fmax_hz=4000)
                cold.append(time.perf_counter() - start)
            for clip_id in clips:
                start = time.perf_counter()
                naive_view(store, clip_id)
                naive.append(time.perf_counter() - start)
            cache = ClipViewCache(store)
            cache.prefetch(clips[:1], run_id=run_id, fmax_hz=4000)
            time.sleep(0.3)
            for i, clip_id in enumerate(clips):
                start = time.perf_counter()
                cache.get(clip_id, run_id=run_id, fmax_hz=4000)
                warm.append(time.perf_counter() - start)
                cache.prefetch(clips[i + 1:i + 3], run_id=run_id, fmax_hz=4000)
                time.sleep(0.5)  # the annotator listens; the prefetch runs meanwhile
    cold_p50, cold_p95 = percentiles(cold)
    warm_p50, warm_p95 = percentiles(warm)
    naive_p50, naive_p95 = percentiles(naive)
    print(f"{len(clips)} clips of >= 9 s")
    print(f"next clip, cold render      p50 {cold_p50:6.1f} ms   p95 {cold_p95:6.1f} ms")
    print(f"next clip, prefetched       p50 {warm_p50:6.1f} ms   p95 {warm_p95:6.1f} ms   (goal p95 <= 80 ms)")
    print(f"naive matplotlib per clip   p50 {naive_p50:6.1f} ms   p95 {naive_p95:6.1f} ms")
    print(json.dumps({"p95_ms": round(warm_p95, 1), "p50_ms": round(warm_p50, 1), "cold_p95_ms": round(cold_p95, 1),
                      "cold_p50_ms": round(cold_p50, 1), "naive_p95_ms": round(naive_p95, 1), "clips": len(clips)}))


if __name__ == "__main__":
    main()
