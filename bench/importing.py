"""Import speed: a 100,000-row manifest, and probing throughput on real files.

Issue goal: importing a 100,000-row manifest (metadata from the manifest, files checked for
existence) takes under 30 s on this 2-core machine. The second figure is full probing (header,
every sample scanned for NaN/silence) of real WAV files, threaded vs one thread, in the same run.

    python bench/importing.py [--rows 100000] [--probe-files 1500]
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
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from core.store import Store  # noqa: E402
from pipelines.importing import import_dataset  # noqa: E402

LABELS = ["emergency_sirens", "collision_sounds", "alert_sounds", "road_traffic", "human_scream", "environmental_sounds"]


def wav_bytes(seconds: float, rng: np.random.Generator) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, (0.1 * rng.standard_normal(int(16000 * seconds))).astype(np.float32), 16000, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def write_files(root: Path, n: int, payload: bytes) -> list[str]:
    paths = []
    for i in range(n):
        relative = f"audio/{i // 1000:03d}/clip_{i:06d}.wav"
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(payload)
        paths.append(relative)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--probe-files", type=int, default=1500)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        paths = write_files(tmp / "big", args.rows, wav_bytes(0.05, rng))
        manifest = tmp / "big" / "manifest.csv"
        pd.DataFrame({"path": paths, "label": rng.choice(LABELS, args.rows), "duration_s": 0.05,
                      "sample_rate_hz": 16000, "group": [f"g{i // 4}" for i in range(args.rows)],
                      "snr_db": rng.uniform(-5, 20, args.rows).round(1)}).to_csv(manifest, index=False)
        with Store.open(tmp / "session") as store:
            t0 = time.perf_counter()
            summary = import_dataset(store, manifest, progress=False)
            manifest_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            again = import_dataset(store, manifest, progress=False)
            reimport_s = time.perf_counter() - t0
        assert summary.added == args.rows and again.added == 0, (summary.added, again.added)

        probe_root = tmp / "probe"
        probe_paths = write_files(probe_root / "cls", args.probe_files, wav_bytes(5.0, rng))
        (probe_root / "cls" / "audio").rename(probe_root / "cls" / "x")
        timings = {}
        for workers in (1, 4):
            with Store.open(tmp / f"probe_session_{workers}") as store:
                t0 = time.perf_counter()
                import_dataset(store, probe_root, layout="folder", probe_mode="full", workers=workers, progress=False)
                timings[workers] = time.perf_counter() - t0

    figures = {
        "manifest_rows": args.rows,
        "manifest_import_s": round(manifest_s, 2),
        "manifest_reimport_s": round(reimport_s, 2),
        "probe_files": len(probe_paths),
        "probe_files_per_s_threaded": round(len(probe_paths) / timings[4], 1),
        "probe_files_per_s_one_thread": round(len(probe_paths) / timings[1], 1),
    }
    figures["probe_speedup_threaded"] = round(timings[1] / timings[4], 2)
    print(f"{args.rows:,}-row manifest import: {manifest_s:.1f} s (goal < 30 s); re-import (adds nothing): {reimport_s:.1f} s")
    print(f"full probe of 5 s WAVs: {figures['probe_files_per_s_threaded']} files/s threaded vs "
          f"{figures['probe_files_per_s_one_thread']} files/s on one thread")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
