"""Near-duplicate search (issue 17): speed at 100,000 clips, and planted-copy recall on real sessions.

Scale: 100,000 unit vectors of the fingerprint's 192 dims, clustered as clips of a few kinds of
sound are (--kinds centres, clips spread around them), with --planted rows replaced by copies of
other rows plus a little noise (what gain and a small shift do to a fingerprint). The search as
the child job runs it at that size (faiss HNSW, core.near_duplicates.nearest) against the exact
baseline (faiss IndexFlatIP) on the same data: time of each (the exact one measured on --sample
queries plus the planted copies' originals, and extrapolated to every clip: its cost is linear in
the queries), the share of the exact top-10 the graph finds on those queries, and the planted
copies each finds at the search stage's threshold (all but SEARCH_MISS of the copies' similarities).

Quality (--session DIR, repeatable): a copy of the session gets --copies planted copies (gain up
to 6 dB, start moved up to 0.1 s: core.clip_embedding.plant_copy) of random train clips,
imported into test; then `find_duplicates` runs as the CLI runs it. Reported per session:
planted recall (copies paired with their original), other pairs found (duplicates the session
already held, or false candidates: an upper bound on the latter), the thresholds, and the share
of test clips with a train near-duplicate before planting.

    python bench/duplicates.py [--clips 100000] [--session sessions/demo --session sessions/speech]

The last line printed is one JSON object (seconds_100k, exact_seconds_100k, recall, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.audio import load  # noqa: E402
from core.clip_embedding import draw_copy, plant_copy  # noqa: E402
from core.duplicates_child import SEARCH_MISS  # noqa: E402
from core.near_duplicates import nearest, normalise  # noqa: E402
from core.store import Store  # noqa: E402
from pipelines.duplicates import find_duplicates  # noqa: E402
from pipelines.importing import import_dataset  # noqa: E402

DIMS = 192


def scale(clips: int, *, kinds: int, planted: int, sample: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((kinds, DIMS)).astype(np.float32)
    vectors = centres[rng.integers(kinds, size=clips)] + 0.5 * rng.standard_normal((clips, DIMS)).astype(np.float32)
    originals = rng.choice(clips - planted, size=planted, replace=False)
    vectors[clips - planted:] = vectors[originals] + 0.05 * rng.standard_normal((planted, DIMS)).astype(np.float32)
    vectors = normalise(vectors - vectors.mean(axis=0))
    copy_similarity = np.einsum("ij,ij->i", vectors[originals], vectors[clips - planted:])
    threshold = float(np.quantile(copy_similarity, SEARCH_MISS))

    started = time.perf_counter()
    graph = nearest(vectors, k=10, exact=False)
    seconds = time.perf_counter() - started
    print(f"HNSW over {clips} clips: {seconds:.1f} s", flush=True)

    # The exact baseline answers the sample and the planted copies' originals; its cost is linear
    # in the queries (every query reads every clip), so the time for all clips is extrapolated.
    queries = np.unique(np.concatenate([rng.choice(clips, size=min(sample, clips), replace=False), originals]))
    index = faiss.IndexFlatIP(DIMS)
    started = time.perf_counter()
    index.add(vectors)
    _, exact_ids = index.search(vectors[queries], 11)
    exact_seconds = (time.perf_counter() - started) * clips / len(queries)
    exact_top = {int(q): [i for i in row if i != q][:10] for q, row in zip(queries, exact_ids)}
    agree = np.mean([len(set(graph.indices[q]) & set(exact_top[int(q)])) / 10 for q in queries])

    def found_by(neighbours_of) -> float:
        """Share of planted copies among their original's 10 neighbours, at or above the threshold."""
        copy_rows = range(clips - planted, clips)
        return float(np.mean([c in neighbours_of(int(o)) and vectors[o] @ vectors[c] >= threshold
                              for o, c in zip(originals, copy_rows)]))

    graph_recall = found_by(lambda o: set(graph.indices[o].tolist()))
    exact_recall = found_by(lambda o: set(exact_top[o]))
    at_100k = clips == 100_000
    return {"clips": clips, "dims": DIMS, "seconds": round(seconds, 2), "exact_seconds": round(exact_seconds, 2),
            "seconds_100k": round(seconds, 2) if at_100k else None,
            "exact_seconds_100k": round(exact_seconds, 2) if at_100k else None, "exact_queries_timed": len(queries),
            "ann_recall_at_10": round(float(agree), 4), "recall": round(graph_recall, 4),
            "exact_recall": round(exact_recall, 4), "search_threshold": round(threshold, 4)}



def quality(session: Path, *, copies: int, seed: int, work: Path, neighbours: int = 10) -> dict:
    """Plant copies of train clips into test in a copy of session; search; score the planted pairs."""
    target = work / session.name
    shutil.copytree(session, target, ignore=shutil.ignore_patterns("workbench.lock", "runs", "cache"))
    rng = np.random.default_rng(seed)
    with Store.open(target) as store:
        before = _test_share(store)
        state = store.labels()
        train = state[(state.split == "train") & (state.status == "ok") & state.parent_clip_id.isna()]
        picked = train.sample(n=min(copies, len(train)), random_state=seed)
        roots = store.dataset_roots()
        rows = []
        for row in picked.itertuples():
            wave = load(roots[row.dataset_id] / row.path, sample_rate_hz=16000)
            gain_db, shift = draw_copy(rng, max_gain_db=6, max_shift_s=0.1)
            name = f"copy_of_{row.clip_id}.wav"
            _write(work / "planted" / session.name / name,
                   plant_copy(wave, sample_rate_hz=16000, gain_db=gain_db, shift=shift, max_shift_s=0.1))
            rows.append({"path": name, "label": row.label, "split": "test", "group": f"planted_{row.clip_id}",
                         "original": int(row.clip_id)})
        folder = work / "planted" / session.name
        pd.DataFrame(rows).drop(columns="original").to_csv(folder / "manifest.csv", index=False)
        import_dataset(store, folder / "manifest.csv", layout="manifest", name="planted", progress=False)
        ids = {Path(p).name: int(c) for p, c in zip(store.clips().path, store.clips().id)}
        planted = {frozenset((r["original"], ids[r["path"]])) for r in rows}
        started = time.perf_counter()
        outcome = find_duplicates(store, progress=False, neighbours=neighbours)
        seconds = time.perf_counter() - started
        pairs = store.duplicate_pairs(run_id=outcome.run_id)
    found = {frozenset(p) for p in zip(pairs.clip_a, pairs.clip_b)}
    return {"session": str(session), "clips": outcome.embedded, "planted": len(planted),
            "recall": round(len(found & planted) / len(planted), 4), "other_pairs": len(found - planted),
            "other_cross_split_pairs": int(sum(1 for a, b, sa, sb in zip(pairs.clip_a, pairs.clip_b, pairs.split_a,
                                                                          pairs.split_b)
                                               if sa != sb and frozenset((a, b)) not in planted)),
            "test_share_before_planting": before, "threshold": outcome.threshold, "seconds": round(seconds, 1),
            "lines": outcome.lines()}


def _test_share(store: Store) -> float | None:
    runs = store.runs(kind="duplicates")
    runs = runs[runs.status == "succeeded"]
    return None if runs.empty else store.run(runs.id.iloc[0])["summary"].get("test_share_with_train_duplicate")


def _write(path: Path, wave: np.ndarray) -> None:
    import soundfile as sf
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), wave.clip(-1, 1), 16000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=100_000)
    parser.add_argument("--kinds", type=int, default=500, help="centres the vectors cluster around")
    parser.add_argument("--planted", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=1000, help="queries compared with exact search")
    parser.add_argument("--session", action="append", default=[], help="session to plant copies into (repeatable)")
    parser.add_argument("--copies", type=int, default=50, help="planted copies per session")
    parser.add_argument("--neighbours", type=int, default=10, help="nearest neighbours per clip in the sessions' searches")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    report = scale(args.clips, kinds=args.kinds, planted=args.planted, sample=args.sample, seed=args.seed)
    print(f"scale: {args.clips} clips x {DIMS} dims: HNSW {report['seconds']} s, exact {report['exact_seconds']} s "
          f"(extrapolated from {report['exact_queries_timed']} queries); HNSW finds {report['ann_recall_at_10']:.1%} "
          f"of the exact top-10; planted recall {report['recall']:.1%} (exact search {report['exact_recall']:.1%})")
    with tempfile.TemporaryDirectory(prefix="earmark-dup-bench-") as work:
        report["quality"] = []
        for session in args.session:
            entry = quality(Path(session).resolve(), copies=args.copies, seed=args.seed, work=Path(work),
                            neighbours=args.neighbours)
            report["quality"].append({k: v for k, v in entry.items() if k != "lines"})
            print(f"quality {session}: planted recall {entry['recall']:.0%} of {entry['planted']}, "
                  f"{entry['other_pairs']} other pairs ({entry['other_cross_split_pairs']} across splits), "
                  f"{entry['seconds']} s")
            print("  " + "\n  ".join(entry["lines"]))
    report["load_average"] = {"before": [round(x, 2) for x in load_before], "after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
