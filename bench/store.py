"""Session-store speed: acknowledged decision-write latency and current-label reads at scale.

Issue goals on this 2-core machine: p95 of one acknowledged decision write <= 10 ms; current
labels of 100,000 clips with 1,000,000 decisions in the log read in <= 200 ms. The baseline,
measured in the same run, is the naive reading: fetch the whole log into Python and fold it
per clip in a loop.

    python bench/store.py [--clips 100000] [--decisions 1000000] [--writes 500]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.store import Store  # noqa: E402

LABELS = ["emergency_sirens", "collision_sounds", "alert_sounds", "road_traffic", "human_scream", "environmental_sounds"]


def build(store: Store, *, n_clips: int, n_decisions: int, rng: np.random.Generator) -> None:
    dataset_id = store.add_dataset(name="bench", root=store.session_dir, layout="manifest")
    store.add_clips(dataset_id, pd.DataFrame({
        "path": [f"clip_{i:07d}.wav" for i in range(n_clips)],
        "status": "ok", "split": "train",
        "original_label": rng.choice(LABELS, n_clips),
    }))
    store.record_decisions(pd.DataFrame({
        "clip_id": rng.integers(1, n_clips + 1, n_decisions),
        "annotator": rng.choice(["ann", "bob", "audit"], n_decisions),
        "action": "relabel",
        "new_label": rng.choice(LABELS, n_decisions),
    }))


def time_writes(store: Store, *, n_clips: int, n_writes: int, rng: np.random.Generator) -> np.ndarray:
    latencies = []
    for clip_id in rng.integers(1, n_clips + 1, n_writes):
        start = time.perf_counter()
        store.record_decision(int(clip_id), annotator="bench", action="relabel", new_label="alert_sounds",
                              tag="non_siren_alert", rule="non_siren_alert -> relabel alert_sounds")
        latencies.append(time.perf_counter() - start)
    return np.array(latencies) * 1000


def naive_labels(store: Store) -> dict[int, str]:
    """Baseline: the whole log into Python, folded per clip in a loop."""
    current = {int(r.id): r.original_label for r in store.clips().itertuples()}
    log = store.decisions()
    undone = set(log.loc[log.action == "undo", "undoes"].dropna().astype(int))
    for row in log.sort_values("id").itertuples():
        if row.action != "undo" and row.id not in undone and isinstance(row.new_label, str):
            current[int(row.clip_id)] = row.new_label
    return current


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--writes", type=int, default=500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench") as store:
        t0 = time.perf_counter()
        build(store, n_clips=args.clips, n_decisions=args.decisions, rng=rng)
        print(f"built {args.clips:,} clips and {args.decisions:,} decisions in {time.perf_counter() - t0:.1f} s")

        write_ms = time_writes(store, n_clips=args.clips, n_writes=args.writes, rng=rng)
        read_s = []
        for _ in range(5):
            t0 = time.perf_counter()
            labels = store.labels()
            read_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        naive = naive_labels(store)
        naive_s = time.perf_counter() - t0
        agree = all(naive[int(c)] == lab for c, lab in zip(labels.clip_id, labels.label))

    figures = {
        "decision_write_p50_ms": round(float(np.percentile(write_ms, 50)), 3),
        "decision_write_p95_ms": round(float(np.percentile(write_ms, 95)), 3),
        "labels_read_ms": round(1000 * float(np.median(read_s)), 1),
        "naive_labels_read_ms": round(1000 * naive_s, 1),
        "clips": args.clips, "decisions": args.decisions,
        "naive_agrees": agree,
    }
    figures["labels_read_speedup_vs_naive"] = round(figures["naive_labels_read_ms"] / figures["labels_read_ms"], 1)
    print(f"decision write   p50 {figures['decision_write_p50_ms']:.2f} ms   p95 {figures['decision_write_p95_ms']:.2f} ms   (goal p95 <= 10 ms)")
    print(f"current labels   {figures['labels_read_ms']:.0f} ms  (goal <= 200 ms)   naive fold: {figures['naive_labels_read_ms']:.0f} ms   same answer: {agree}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
