"""A grid study end to end (issue 16): how long a 3-config x 2-seed grid of demo-fast takes on
the siren demo, how far val accuracy moves between seeds of one config, and how much of each
trial's time goes outside training.

A fresh demo session (600 siren-task clips) in a temporary folder; `earmark grid` over
train.lr 0.001 / 0.002 / 0.004 (the preset's own rate and one either side) at seeds 42 and 123,
every trial from scratch. Figures:
    study_minutes           wall time of the study (goal < 15 on 2 cores)
    val_accuracy_seed_std   std of val accuracy over the seeds of a config, mean over the configs
                            (beside it the same for test: on the demo, val accuracy on the given
                            labels saturates, so the seeds' spread shows on test)
    overhead_share          the share of the trials' wall time spent outside the training
                            processes' own clocks (manifest freeze, run folder, child start and
                            imports, ingest) (goal < 0.10)
The last line printed is one JSON object.

    python bench/study.py [--seeds 42,123] [--grid FILE] [--set KEY=VALUE] [--clips-per-class 100]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.store import Store  # noqa: E402
from core.study import parse_grid, parse_seeds, read_grid  # noqa: E402
from pipelines.demo import build_demo_session  # noqa: E402
from pipelines.study import run_grid  # noqa: E402

GRID = {"grid": {"train.lr": [0.001, 0.002, 0.004]}}
SEEDS = "42,123"
GOAL_MINUTES, GOAL_OVERHEAD_SHARE = 15.0, 0.10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", help="grid file (default: train.lr 0.001, 0.002, 0.004)")
    parser.add_argument("--seeds", default=SEEDS, help=f"comma-separated seeds (default {SEEDS})")
    parser.add_argument("--set", action="append", default=[], help="demo-fast override for every trial (key=value)")
    parser.add_argument("--clips-per-class", type=int, default=100, help="demo clips per class (default 100: 600 clips)")
    args = parser.parse_args()
    grid = read_grid(args.grid) if args.grid else parse_grid(GRID)
    with tempfile.TemporaryDirectory() as tmp:
        demo = build_demo_session(session_dir=Path(tmp) / "session", clips_per_class=args.clips_per_class, progress=False)
        with Store.open(demo.session_dir) as store:
            started = time.perf_counter()
            outcome = run_grid(store, preset="demo-fast", grid=grid, seeds=parse_seeds(args.seeds), overrides=args.set,
                               progress=False)
            minutes = (time.perf_counter() - started) / 60
    print("\n".join(outcome.lines()))
    report = outcome.report
    stds = {c["name"]: c["val_accuracy_std"] for c in report["configs"] if c["val_accuracy_std"] is not None}
    test_stds = [c["test_accuracy_std"] for c in report["configs"] if c["test_accuracy_std"] is not None]
    timing = report["timing"]
    for trial in report["trials"]:
        print(f"  {trial['name']} seed {trial['seed']}: {trial['wall_s']:.1f} s, training process {trial['child_s']:.1f} s, "
              f"overhead {trial['overhead_s']:.1f} s; val accuracy {trial['val_accuracy']}")
    seed_std = statistics.mean(stds.values()) if stds else None
    print(json.dumps({
        "study_minutes": round(minutes, 2), "goal_study_minutes": GOAL_MINUTES,
        "val_accuracy_seed_std": None if seed_std is None else round(seed_std, 4),
        "val_accuracy_seed_std_by_config": {name: round(v, 4) for name, v in stds.items()},
        "test_accuracy_seed_std": round(statistics.mean(test_stds), 4) if test_stds else None,
        "overhead_share": timing["overhead_share"], "goal_overhead_share": GOAL_OVERHEAD_SHARE,
        "overhead_s_per_trial": timing["overhead_s_per_trial"], "trials": len(report["trials"]),
        "succeeded": report["counts"]["succeeded"], "best": report["best"]["name"] if report["best"] else None}))


if __name__ == "__main__":
    main()
