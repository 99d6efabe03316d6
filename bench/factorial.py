"""Factorial builder speed (B7): the speech demo's sources cut into 2,000 clips and imported.

Issue 14's goal: 2,000 clips (4 durations x 5 SNRs x 2 classes x 50) built and imported into a
fresh session in under 60 s on this 2-core machine. The sources (eSpeak NG speech, synthetic
non-speech, a MUSAN-layout noise bank) are written first and timed apart: the figure is the
builder's (finding windows with WebRTC VAD, splitting, mixing, writing) and the import's.

    python bench/factorial.py [--clips-per-cell 50]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from pipelines.factorial import build_factorial  # noqa: E402
from pipelines.factorial_config import FactorialConfig  # noqa: E402
from pipelines.speech_demo import write_demo_sources  # noqa: E402

GOAL_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips-per-cell", type=int, default=50)
    args = parser.parse_args()
    config = FactorialConfig(clips_per_cell=args.clips_per_cell)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        started = time.perf_counter()
        sources = write_demo_sources(tmp / "demo", seed=0, sample_rate_hz=config.sample_rate_hz)
        sources_s = time.perf_counter() - started
        started = time.perf_counter()
        summary = build_factorial(speech=[sources["speech"]], nonspeech=[sources["nonspeech"]],
                                  noise_bank=sources["bank"], out_dir=tmp / "set", config=config,
                                  session=tmp / "session")
        build_import_s = time.perf_counter() - started
    print("\n".join(summary.lines()))
    print(f"sources written in {sources_s:.1f} s; {summary.clips} clips built and imported in {build_import_s:.1f} s "
          f"(goal < {GOAL_S:.0f} s)")
    print(json.dumps({"clips": summary.clips, "factorial_build_import_s": round(build_import_s, 2),
                      "build_s": round(summary.seconds, 2), "import_s": round(summary.imported.seconds, 2),
                      "sources_s": round(sources_s, 2), "goal_s": GOAL_S, "passed": build_import_s < GOAL_S}))


if __name__ == "__main__":
    main()
