"""Near-duplicate search over clip embeddings: each clip's nearest neighbours, how similar a
near-duplicate must be, and the pairs above that.

Embeddings are L2-normalised rows, so the inner product is the cosine similarity (1 = the same
direction; higher = more alike). Up to EXACT_MAX_CLIPS clips the search is exact (faiss
IndexFlatIP); above that an HNSW graph (faiss IndexHNSWFlat) answers in about N log N instead
of N^2 (an IVF index was as fast at 20,000 clips but needs k-means training and a nlist/nprobe
pair to tune; the graph needs neither): bench/duplicates.py measures its time at 100,000 clips and its recall against exact search.

The threshold is the session's own (derive_threshold): planted copies of a sample of its clips
give the similarities a duplicate reaches, each clip's nearest other clip what distinct clips
reach, and the threshold is the one that separates the two best.
"""
from __future__ import annotations

import dataclasses

import faiss
import numpy as np
import pandas as pd

__all__ = ["EXACT_MAX_CLIPS", "Neighbours", "Threshold", "aligned_similarity", "derive_threshold", "nearest", "normalise",
           "pairs_above"]

# Exact search costs N^2 * dims. On the 2 shared cores (load ~11) 500 queries against 20,000
# clips of 192 dims took 1.0 s, so all 20,000 about 40 s, where the graph took 8 s; at 5,000
# clips exact search takes about 2.5 s and is exact.
EXACT_MAX_CLIPS = 5_000
# HNSW graph: links per node, and the candidate lists while building and searching. On 20,000
# clustered 192-dim vectors M=16/40/64 found 99.96% of the exact top-10 in 7.9 s, M=32/80/128
# 100% in 21 s: the smaller graph, since the check after the search reads the pairs again anyway.
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 40
HNSW_EF_SEARCH = 64


def normalise(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (float32, contiguous, as faiss takes them); an all-zero row stays zero."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if vectors.ndim != 2:
        raise ValueError(f"vectors: expected shape (clips, dims), got {vectors.shape}")
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return np.ascontiguousarray(vectors / np.where(norms > 0, norms, 1.0), dtype=np.float32)


@dataclasses.dataclass
class Neighbours:
    """Each clip's k nearest other clips: indices (N, k) into the embeddings, -1 where there are
    fewer than k others, and their cosine similarities (N, k), most similar first."""
    indices: np.ndarray
    similarities: np.ndarray
    exact: bool

    def nearest_similarity(self) -> np.ndarray:
        """(N,) similarity of each clip to its nearest other clip (-1 when it has none)."""
        return np.where(self.indices[:, 0] >= 0, self.similarities[:, 0], -1.0)


def nearest(embeddings: np.ndarray, *, k: int = 10, exact: bool | None = None) -> Neighbours:
    """The k nearest other clips of every row of embeddings (unit rows, normalise()).
    exact: None = exact up to EXACT_MAX_CLIPS rows, HNSW above; True/False forces one."""
    if k < 1:
        raise ValueError(f"k: must be at least 1, got {k}")
    vectors = normalise(embeddings)
    exact = len(vectors) <= EXACT_MAX_CLIPS if exact is None else exact
    index = _index(vectors.shape[1], exact=exact)
    index.add(vectors)
    asked = min(k + 1, len(vectors))  # one more: each clip finds itself
    similarities, indices = index.search(vectors, asked)
    return _drop_self(indices, similarities, k=k, exact=exact)


def _index(dims: int, *, exact: bool) -> faiss.Index:
    if exact:
        return faiss.IndexFlatIP(dims)
    index = faiss.IndexHNSWFlat(dims, HNSW_M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    index.hnsw.efSearch = HNSW_EF_SEARCH
    return index


def _drop_self(indices: np.ndarray, similarities: np.ndarray, *, k: int, exact: bool) -> Neighbours:
    """Remove each row's own index (not always first: an identical copy ties with it)."""
    rows = np.arange(len(indices))[:, None]
    own = indices == rows
    # Rows that did not find themselves (HNSW can miss) drop their least similar answer instead.
    drop_last = ~own.any(axis=1)
    own[drop_last, -1] = True
    keep = ~own
    width = indices.shape[1] - 1
    kept_indices = indices[keep].reshape(len(indices), width)
    kept_sims = similarities[keep].reshape(len(indices), width)
    pad = k - width
    if pad > 0:
        kept_indices = np.pad(kept_indices, ((0, 0), (0, pad)), constant_values=-1)
        kept_sims = np.pad(kept_sims, ((0, 0), (0, pad)), constant_values=-1.0)
    return Neighbours(indices=kept_indices[:, :k], similarities=kept_sims[:, :k].astype(np.float32), exact=exact)


@dataclasses.dataclass
class Threshold:
    """The similarity from which two clips count as near-duplicates, and what it was derived from:
    copy_recall = share of the planted copies at or above it (higher = fewer duplicates missed),
    neighbour_share = share of clips whose nearest other clip is at or above it (an upper bound
    on how many clips get a candidate: the duplicates the session really holds, plus false ones)."""
    value: float
    copy_recall: float
    neighbour_share: float
    copies: int
    clips: int

    def to_dict(self) -> dict[str, float | int]:
        return dataclasses.asdict(self)


def derive_threshold(copy_similarities: np.ndarray, neighbour_similarities: np.ndarray) -> Threshold:
    """The threshold that best separates planted copies from nearest neighbours (Youden's J:
    share of copies at or above it minus share of neighbours at or above it, largest), taken in
    the middle of the range where J is largest, so neither side's closest values decide it alone.

    copy_similarities: each planted copy's similarity to its original; neighbour_similarities:
    each clip's similarity to its nearest other clip (the session's real duplicates among them
    only lower J's maximum, they do not move where it lies as long as they are a minority)."""
    copies = np.sort(np.asarray(copy_similarities, dtype=np.float64))
    neighbours = np.sort(np.asarray(neighbour_similarities, dtype=np.float64))
    if len(copies) == 0 or len(neighbours) == 0:
        raise ValueError(f"derive_threshold: needs planted copies and neighbours, got {len(copies)} and {len(neighbours)}")
    candidates = np.unique(np.concatenate([copies, neighbours]))
    j = _share_at_or_above(copies, candidates) - _share_at_or_above(neighbours, candidates)
    best = np.flatnonzero(j >= j.max() - 1e-12)
    # J is a step function: any t in (previous candidate, candidate] scores as the candidate, so
    # the best range runs from the candidate before the first best one (exclusive) up to the
    # last best one; take its middle.
    low = candidates[best[0] - 1] if best[0] > 0 else candidates[0]
    value = float((low + candidates[best[-1]]) / 2)
    return Threshold(value=round(value, 6), copy_recall=float(_share_at_or_above(copies, [value])[0]),
                     neighbour_share=float(_share_at_or_above(neighbours, [value])[0]), copies=len(copies),
                     clips=len(neighbours))


def _share_at_or_above(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    below = np.searchsorted(sorted_values, np.asarray(thresholds, dtype=np.float64), side="left")
    return 1.0 - below / len(sorted_values)


def pairs_above(neighbours: Neighbours, threshold: float) -> pd.DataFrame:
    """Every unordered pair of rows (a < b) that are neighbours at similarity >= threshold, once,
    most similar first: columns a, b (row indices), similarity."""
    rows = np.repeat(np.arange(len(neighbours.indices)), neighbours.indices.shape[1])
    cols = neighbours.indices.ravel()
    sims = neighbours.similarities.ravel()
    hit = (cols >= 0) & (sims >= threshold)
    a, b = np.minimum(rows[hit], cols[hit]), np.maximum(rows[hit], cols[hit])
    pairs = pd.DataFrame({"a": a, "b": b, "similarity": sims[hit].astype(float)})
    pairs = pairs.sort_values("similarity", ascending=False).drop_duplicates(["a", "b"])
    return pairs.reset_index(drop=True)


def aligned_similarity(a: np.ndarray, b: np.ndarray, *, max_lag: int) -> float:
    """How alike two clips' fine structure is (patterns (bands, frames), clip_embedding), at the
    best of the time lags up to max_lag frames either way: the cosine of the two patterns over
    their overlap, each re-centred there, in [-1, 1] (1 = one moves exactly as the other).
    Lags that leave less than half the shorter clip overlapping are not tried; -1 when none is left."""
    shorter = min(a.shape[1], b.shape[1])
    best = -1.0
    for lag in range(-max_lag, max_lag + 1):
        x, y = (a[:, lag:], b) if lag >= 0 else (a, b[:, -lag:])
        n = min(x.shape[1], y.shape[1])
        if n < max(2, shorter // 2):
            continue
        x = x[:, :n] - x[:, :n].mean(axis=1, keepdims=True)
        y = y[:, :n] - y[:, :n].mean(axis=1, keepdims=True)
        scale = float(np.sqrt((x * x).sum() * (y * y).sum()))
        if scale > 0:
            best = max(best, float((x * y).sum()) / scale)
    return best
