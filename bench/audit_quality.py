"""How well the audit finds label errors: precision and recall at review budgets (issue 6).

Builds a fresh demo session (600 clips, N planted label errors known from the synthetic data),
trains the demo-fast model, audits every split with the cross-validated label-issue ranking,
then asks: if a reviewer listens to the first B proposals of each method, how many planted
errors do they hear (precision = found / reviewed, recall = found / N; higher is better)?
Methods side by side:
  extreme_off          the audited model's confidently-wrong clips (A1), most off first;
  self_confidence      cleanlab on K-fold out-of-sample probabilities (what the queue uses);
  normalized_margin    cleanlab's other score on the same probabilities;
  in_sample            self_confidence on the audited model's own probabilities, to show
                       what cross-validation buys (the model memorised its training labels).
Budgets: N/2, N, 2N, 3N. The quality bar: recall_at_2n >= 0.8 for the queue's method.
The last line printed is one JSON object.

    python bench/audit_quality.py [--folds 5] [--cv-set train.epochs=10] [--session DIR]
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

from core.audit import DEFAULT_LABEL_QUALITY_METHOD, label_quality, review_curve  # noqa: E402
from core.audit_job import EXTREME_OFF_FILE  # noqa: E402
from core.store import Store  # noqa: E402
from pipelines.audit import CROSSVAL_DIR, DEFAULT_CV_OVERRIDES, LABEL_ISSUES_FILE, audit  # noqa: E402
from pipelines.demo import DEFAULT_AUDIO, build_demo_session  # noqa: E402
from pipelines.finetune import finetune  # noqa: E402

QUEUE_METHOD = DEFAULT_LABEL_QUALITY_METHOD


def rankings(store: Store, audit_run_id: str, run_dir: Path) -> dict[str, list[int]]:
    """Clip ids in review order for every method."""
    ranked = pd.read_parquet(run_dir / CROSSVAL_DIR / LABEL_ISSUES_FILE)
    classes = sorted(ranked.label.unique())
    y = ranked.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    oof = np.stack(ranked.probs.to_numpy())
    orders = {method: ranked.clip_id.to_numpy()[np.argsort(label_quality(labels=y, pred_probs=oof, method=method),
                                                            kind="stable")].tolist()
              for method in ("self_confidence", "normalized_margin")}
    extreme = pd.read_parquet(run_dir / EXTREME_OFF_FILE)
    orders = {"extreme_off": extreme.clip_id.tolist(), **orders}
    predictions = store.predictions(audit_run_id)
    in_sample = np.stack(predictions.probs.map(np.asarray).to_numpy())
    y_in = predictions.label.map({c: i for i, c in enumerate(classes)}).to_numpy()
    order = np.argsort(label_quality(labels=y_in, pred_probs=in_sample, method=QUEUE_METHOD), kind="stable")
    orders["in_sample"] = predictions.clip_id.to_numpy()[order].tolist()
    return orders


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--cv-set", action="append", default=[], metavar="KEY=VALUE",
                        help="fold preset overrides, after the audit's own (train.epochs=8)")
    parser.add_argument("--session", type=Path, help="build the session here instead of a temporary folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        session_dir = args.session or Path(scratch) / "session"
        started = time.perf_counter()
        with Store.open(session_dir) as store:
            build_demo_session(session_dir=session_dir, audio_dir=DEFAULT_AUDIO, progress=False, store=store)
            trained = finetune(store, preset="demo-fast", init_from="none", progress=False)
            train_s = time.perf_counter() - started
            audited = audit(store, run_id=trained.run_id, label_issues=True, folds=args.folds, cv_overrides=args.cv_set,
                            progress=False)
            audit_s = time.perf_counter() - started - train_s
            if audited.status != "succeeded":
                raise SystemExit(f"audit {audited.status}: {audited.error}")
            truth = store.clips().set_index("id").metadata.map(lambda m: bool(json.loads(m)["label_error"]))
            orders = rankings(store, audited.run_id, audited.run_dir)
            queued = audited.proposals[audited.proposals.method == QUEUE_METHOD].clip_id.tolist()
    n_errors = int(truth.sum())
    budgets = [n_errors // 2, n_errors, 2 * n_errors, 3 * n_errors]
    curves = {method: review_curve(is_error_in_order=truth[order].to_numpy(), n_errors=n_errors, budgets=budgets)
              for method, order in orders.items()}
    queue_curve = review_curve(is_error_in_order=truth[queued].to_numpy(), n_errors=n_errors, budgets=[2 * n_errors])[0]

    print(f"demo session: {len(truth)} clips, N = {n_errors} planted label errors; "
          f"training {train_s:.0f} s, audit with {args.folds}-fold cross-validation {audit_s:.0f} s")
    print(f"{'budget':>8} " + " ".join(f"{m + ' P/R':>24}" for m in curves))
    for i, budget in enumerate(budgets):
        cells = [f"{_fmt(c[i]['precision'])} / {c[i]['recall']:.2f} ({c[i]['found']:>2})" for c in curves.values()]
        print(f"{budget:>8} " + " ".join(f"{cell:>24}" for cell in cells))
    print(f"the queue holds {len(queued)} {QUEUE_METHOD} proposals (twice the out-of-fold disagreements); "
          f"among its first {2 * n_errors}: recall {queue_curve['recall']:.3f}")
    print(json.dumps({
        "n_errors": n_errors, "queue_method": QUEUE_METHOD, "recall_at_2n": round(curves[QUEUE_METHOD][2]["recall"], 4),
        "queue_recall_at_2n": round(queue_curve["recall"], 4), "queue_size": len(queued),
        "methods": {m: {f"recall_at_{b}": round(c[i]["recall"], 4) for i, b in enumerate(budgets)} |
                    {f"precision_at_{b}": c[i]["precision"] and round(c[i]["precision"], 4) for i, b in enumerate(budgets)}
                    for m, c in curves.items()},
        "folds": args.folds, "cv_overrides": [*DEFAULT_CV_OVERRIDES, *args.cv_set],
        "train_s": round(train_s, 1), "audit_s": round(audit_s, 1),
    }))


if __name__ == "__main__":
    main()
