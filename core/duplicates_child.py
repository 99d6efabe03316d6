"""The near-duplicate search's child job: embed every frozen clip, find each one's nearest
neighbours, check the close ones frame by frame, with both thresholds learnt from planted copies.

    python -m core.duplicates_child RUN_DIR

Under DESIGN.md's one-writer rule it reads only its run folder (job.json: DuplicatesJob;
manifest.parquet: clip_id, path, split) and writes only there (events.jsonl, pairs.parquet,
result.json). A clip that cannot be read is left out and named in a warning.

1. Embed (core.clip_embedding) in batches; while a batch is in memory, copies of the clips drawn
   for calibration are planted (another gain, a small time shift) and embedded too. The
   session's mean vector is taken off every vector (what all clips share says nothing about
   which two are copies) and each is scaled to unit length. Dimensions are not scaled to unit
   variance: on a 40-clip session that blew up dimensions where clips hardly differ, and copies
   fell to a similarity of 0.33 (0.97 when only centred).
2. Search: each clip's nearest neighbours (core.near_duplicates.nearest). Pooled embeddings
   cannot tell two recordings of the same kind of noise apart, so this stage only proposes:
   its threshold keeps all but SEARCH_MISS of the planted copies.
3. Check: each proposed pair's fine structure is compared at the best small time lag
   (aligned_similarity). Its threshold separates the copies from each calibration clip's
   nearest other clip best (derive_threshold); a pair above both is a near-duplicate.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.audio import AudioError
from core.checkpoint import load_checkpoint
from core.child_job import JobContext, JobSpec, command_line, run_child_job
from core.clip_embedding import MAX_SHIFT_SHARE, LogMelFingerprint, ModelEmbedder, draw_copy, plant_copy
from core.near_duplicates import aligned_similarity, derive_threshold, nearest, normalise, pairs_above
from core.run_folder import MANIFEST_FILE

PAIRS_FILE = "pairs.parquet"
BATCH = 64
# The search proposes what all but this share of the planted copies reach; the check decides.
SEARCH_MISS = 0.01


@dataclasses.dataclass
class DuplicatesJob(JobSpec):
    """What the writer froze for one near-duplicate search (job.json)."""
    run_id: str
    embedding: str                 # "model" or "logmel"
    checkpoint: str | None         # the model's checkpoint folder when embedding is "model"
    neighbours: int                # nearest neighbours looked at per clip
    calibration_clips: int         # clips copied to calibrate the threshold (fewer when the session is smaller)
    copy_gain_db: float            # planted copies: gain drawn from [-copy_gain_db, copy_gain_db]
    copy_shift_s: float            # planted copies: start moved by up to this, either way
    seed: int


def run_duplicates(run_dir: str | Path) -> dict[str, Any]:
    """Embed, search and check one run's clips; returns result.json's content (also written)."""
    return run_child_job(run_dir, lambda context: _search(context, DuplicatesJob.load(context.run_dir)))


def _search(context: JobContext, job: DuplicatesJob) -> dict[str, Any]:
    manifest = pd.read_parquet(context.run_dir / MANIFEST_FILE)
    checker = LogMelFingerprint()
    embedder = ModelEmbedder(load_checkpoint(job.checkpoint)) if job.embedding == "model" else checker
    context.events.write("start", clips=len(manifest), embedding=embedder.name)
    rng = np.random.default_rng(job.seed)
    drawn = rng.choice(len(manifest), size=min(job.calibration_clips, len(manifest)), replace=False)
    plans = {int(i): draw_copy(rng, max_gain_db=job.copy_gain_db, max_shift_s=job.copy_shift_s) for i in drawn}
    started = time.perf_counter()
    embedded = _embed_all(context, manifest, embedder, checker, plans, job)
    embed_s = time.perf_counter() - started
    if len(embedded.clip_ids) < 2 or not embedded.copy_rows:
        raise ValueError(f"only {len(embedded.clip_ids)} of {len(manifest)} clips could be read: too few to compare")

    context.events.write("phase", phase="search")
    started = time.perf_counter()
    centre = embedded.vectors.mean(axis=0)
    vectors, copies = normalise(embedded.vectors - centre), normalise(embedded.copies - centre)
    copy_similarity = np.einsum("ij,ij->i", vectors[embedded.copy_rows], copies)
    found = nearest(vectors, k=min(job.neighbours, len(vectors) - 1))
    search_threshold = float(np.quantile(copy_similarity, SEARCH_MISS))
    proposed = pairs_above(found, search_threshold)
    search_s = time.perf_counter() - started

    context.events.write("phase", phase="check", pairs=len(proposed))
    started = time.perf_counter()
    paths = manifest.set_index("clip_id")["path"]
    patterns = _Patterns(checker, [paths[c] for c in embedded.clip_ids])
    match = _Matcher(job.copy_shift_s / checker.frame_s)
    rows = np.asarray(embedded.copy_rows)
    copy_match = np.array([match(patterns[r], p) for r, p in zip(rows, embedded.copy_patterns)])
    nearest_rows = found.indices[rows, 0]
    neighbour_match = np.array([match(patterns[r], patterns[n]) for r, n in zip(rows, nearest_rows) if n >= 0])
    check = derive_threshold(copy_match, neighbour_match)
    proposed["match"] = [match(patterns[a], patterns[b]) for a, b in zip(proposed["a"], proposed["b"])]
    pairs = proposed[proposed["match"] >= check.value]
    check_s = time.perf_counter() - started

    ids = np.asarray(embedded.clip_ids, dtype=np.int64)
    pd.DataFrame({"clip_a": ids[pairs["a"].to_numpy()], "clip_b": ids[pairs["b"].to_numpy()],
                  "similarity": pairs["similarity"].to_numpy(), "match": pairs["match"].to_numpy()}
                 ).to_parquet(context.run_dir / PAIRS_FILE)
    if embedded.unreadable:
        context.events.write("warning", message=f"{len(embedded.unreadable)} clips could not be read and are left out",
                             clips=sorted(embedded.unreadable)[:20])
    neighbour_similarity = found.similarities[rows, 0]
    passes = (neighbour_similarity >= search_threshold)[nearest_rows >= 0] & (neighbour_match >= check.value)
    # How well the embedding itself tells copies apart: the chance that a copy is closer to its
    # original than a clip is to its nearest other clip (an undertrained model scores near 0.5;
    # the session's own duplicates among the neighbours lower it a little).
    everyone = np.sort(found.nearest_similarity())
    separation = float(np.mean(np.searchsorted(everyone, copy_similarity) / len(everyone)))
    threshold = {"search": round(search_threshold, 6), "check": check.value, "copies": len(rows),
                 "separation": round(separation, 4),
                 "copy_recall": float(np.mean((copy_similarity >= search_threshold) & (copy_match >= check.value))),
                 "neighbour_share": float(np.mean(passes)) if len(passes) else 0.0}
    return {"status": "succeeded", "embedding": embedder.name, "dims": int(vectors.shape[1]),
            "embedded": len(ids), "unreadable": embedded.unreadable, "proposed": len(proposed), "pairs": len(pairs),
            "threshold": threshold, "exact_search": found.exact, "neighbours": int(found.indices.shape[1]),
            "stage_seconds": {"embed": round(embed_s, 2), "search": round(search_s, 3), "check": round(check_s, 3)}}


class _Matcher:
    """aligned_similarity at the lags a planted copy can be shifted by: up to max_shift_frames, and
    never more than MAX_SHIFT_SHARE of the shorter clip (plant_copy), plus one frame for the shift
    within a frame. More lags than a copy needs only give chance a better try on short clips."""

    def __init__(self, max_shift_frames: float) -> None:
        self._most = max_shift_frames

    def __call__(self, a: np.ndarray, b: np.ndarray) -> float:
        frames = min(a.shape[1], b.shape[1])
        lag = int(np.ceil(min(self._most, MAX_SHIFT_SHARE * frames))) + 1
        return aligned_similarity(a, b, max_lag=lag)


class _Patterns:
    """Clips' fine-structure patterns by row, read when first asked for (only the clips the check
    needs are read a second time)."""

    def __init__(self, checker: LogMelFingerprint, paths: list[str]) -> None:
        self._checker, self._paths, self._known = checker, paths, {}

    def __getitem__(self, row: int) -> np.ndarray:
        row = int(row)
        if row not in self._known:
            self._known[row] = self._checker.patterns([self._checker.read(self._paths[row])])[0]
        return self._known[row]


@dataclasses.dataclass
class _Embedded:
    clip_ids: list[int]
    vectors: np.ndarray
    copies: np.ndarray
    copy_rows: list[int]           # row in vectors of each copy's original
    copy_patterns: list[np.ndarray]
    unreadable: dict[str, str]


def _embed_all(context: JobContext, manifest: pd.DataFrame, embedder, checker: LogMelFingerprint,
               plans: dict[int, tuple[float, float]], job: DuplicatesJob) -> _Embedded:
    ids, vectors, copies, copy_rows, copy_patterns, unreadable = [], [], [], [], [], {}
    for start in range(0, len(manifest), BATCH):
        context.check_stop("cancelled before every clip was embedded")
        waves, planted = [], []
        for position, row in enumerate(manifest.iloc[start:start + BATCH].itertuples(), start=start):
            try:
                wave = embedder.read(row.path)
                heard = wave if embedder is checker else checker.read(row.path)
            except (AudioError, OSError) as exc:
                unreadable[str(row.path)] = str(exc)
                continue
            if position in plans:
                gain_db, shift = plans[position]
                copy_rows.append(len(ids))  # the row this clip is about to take
                planted.append(plant_copy(wave, sample_rate_hz=embedder.sample_rate_hz, gain_db=gain_db, shift=shift,
                                          max_shift_s=job.copy_shift_s))
                copy_patterns += checker.patterns([plant_copy(heard, sample_rate_hz=checker.sample_rate_hz,
                                                              gain_db=gain_db, shift=shift, max_shift_s=job.copy_shift_s)])
            waves.append(wave)
            ids.append(int(row.clip_id))
        if waves:
            vectors.append(embedder(waves))
        if planted:
            copies.append(embedder(planted))
        context.events.write("progress", done=min(start + BATCH, len(manifest)), total=len(manifest))
    dims = vectors[0].shape[1] if vectors else 0
    return _Embedded(clip_ids=ids, vectors=np.concatenate(vectors) if vectors else np.zeros((0, dims), np.float32),
                     copies=np.concatenate(copies) if copies else np.zeros((0, dims), np.float32),
                     copy_rows=copy_rows, copy_patterns=copy_patterns, unreadable=unreadable)


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.duplicates_child", run=run_duplicates)


if __name__ == "__main__":
    sys.exit(main())
