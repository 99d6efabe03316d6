"""Which clips each epoch sees, and in what order: composed batches (A5), class
oversampling, hard-example repeats (A7) and curriculum stages. core/curriculum.py's EpochPlan
puts them together into each epoch's batches.

Every draw comes from a generator derived from (seed, epoch, stream), never from state
carried between epochs, so epoch 3 of a resumed run is the same as epoch 3 of an
uninterrupted one. Labels are int class ids (N,) indexing the training set; what is
returned are positions into it.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from core.config import CurriculumStage

__all__ = ["ComposedBatchSampler", "curriculum_extra_indices", "oversampled_indices", "stage_for_epoch",
           "total_epochs"]

# Separate random streams per use, so the same (seed, epoch) never correlates two draws.
_COMPOSED_STREAM, _OVERSAMPLE_STREAM, _CURRICULUM_STREAM = 0, 1, 2


def _epoch_rng(seed: int, epoch: int, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, stream])


class ComposedBatchSampler(Sampler[list[int]]):
    """Batches with a fixed number of clips per class (A5: 10/5/5/4/4/4 of 32).

    composition: class id -> clips per batch; classes left out (or given 0) are never drawn.
    Each class cycles through its clips in a fresh shuffle, reshuffling whenever its pool
    runs out, so a class with few clips is oversampled: it repeats across batches. A batch
    holds one clip twice only where it straddles two passes or the class has fewer clips
    than its slot.

    An epoch is `num_batches` batches; by default just enough that the class with the most
    clips per slot, max_c ceil(n_c / k_c), shows each of its clips once; every other class
    is then seen at least once too. Batches list indices grouped by class, in the
    composition's order. Call set_epoch(epoch) before iterating to draw that epoch's batches.
    """

    def __init__(self, labels: Sequence[int], *, composition: dict[int, int], seed: int,
                 num_batches: int | None = None) -> None:
        super().__init__()
        label_array = _check_labels(labels)
        self.composition = _check_composition(composition, label_array)
        self.pools = {c: np.flatnonzero(label_array == c) for c in self.composition}
        if num_batches is None:
            num_batches = max(-(-len(self.pools[c]) // k) for c, k in self.composition.items())
        self.num_batches = _check_int("num_batches", num_batches, low=1)
        self.seed = _check_int("seed", seed, low=0)
        self.epoch = 0

    @property
    def batch_size(self) -> int:
        return sum(self.composition.values())

    def set_epoch(self, epoch: int) -> None:
        self.epoch = _check_int("epoch", epoch, low=0)

    def __len__(self) -> int:
        return self.num_batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.epoch_batches().tolist()

    def epoch_batches(self) -> np.ndarray:
        """This epoch's batches as int64 (num_batches, batch_size)."""
        rng = _epoch_rng(self.seed, self.epoch, _COMPOSED_STREAM)
        columns = [_cycled(self.pools[c], k * self.num_batches, rng).reshape(self.num_batches, k)
                   for c, k in self.composition.items()]
        return np.concatenate(columns, axis=1)


def _cycled(pool: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """n draws from pool: whole reshuffled passes, one after another."""
    passes = -(-n // len(pool))
    return np.concatenate([rng.permutation(pool) for _ in range(passes)])[:n]


def oversampled_indices(labels: Sequence[int], *, factors: dict[int, float], seed: int, epoch: int) -> np.ndarray:
    """One epoch's shuffled order, int64, in which class c appears factors[c] times as often.

    Classes not in factors keep factor 1. A factor f >= 0 gives every clip of the class
    floor(f) copies plus one more copy for round(frac(f) * n_c) of its clips, drawn without
    replacement (so 1.5 repeats half the class once more, 0 drops the class).
    """
    label_array = _check_labels(labels)
    present = set(np.unique(label_array).tolist())
    for c, f in factors.items():
        if c not in present:
            raise ValueError(f"factors: class {c!r} has no clips in labels; classes present: {sorted(present)}")
        if isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < float("inf"):
            raise ValueError(f"factors: class {c} has factor {f!r}; allowed: a finite number >= 0")
    rng = _epoch_rng(_check_int("seed", seed, low=0), _check_int("epoch", epoch, low=0), _OVERSAMPLE_STREAM)
    parts = []
    for c in sorted(present):
        pool = np.flatnonzero(label_array == c)
        factor = factors.get(c, 1.0)
        whole = int(factor)
        parts.append(np.tile(pool, whole))
        parts.append(rng.choice(pool, size=_round_half_up((factor - whole) * len(pool)), replace=False))
    return rng.permutation(np.concatenate(parts)).astype(np.int64)


def curriculum_extra_indices(hard_indices: Sequence[int], *, repeat: int, fraction: float, seed: int,
                             epoch: int) -> np.ndarray:
    """A7's hard-example repeats: round(fraction * len(hard_indices)) of them (half up),
    drawn without replacement, each `repeat` times, shuffled; int64. The caller adds these
    to the epoch's order (they are extra visits, not replacements)."""
    hard = np.asarray(hard_indices) if len(hard_indices) else np.zeros(0, np.int64)
    if hard.ndim != 1 or not np.issubdtype(hard.dtype, np.integer) or (hard < 0).any():
        raise ValueError(f"hard_indices: expected a 1-D sequence of indices >= 0, got {hard_indices!r}")
    _check_int("repeat", repeat, low=1)
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction: {fraction!r} is out of range; allowed: [0, 1]")
    rng = _epoch_rng(_check_int("seed", seed, low=0), _check_int("epoch", epoch, low=0), _CURRICULUM_STREAM)
    chosen = rng.choice(hard, size=_round_half_up(fraction * len(hard)), replace=False)
    return rng.permutation(np.repeat(chosen, repeat))


def total_epochs(stages: Sequence[CurriculumStage]) -> int:
    return sum(stage.epochs for stage in stages)


def stage_for_epoch(stages: Sequence[CurriculumStage], epoch: int) -> tuple[int, CurriculumStage]:
    """(stage index, stage) for a 0-based global epoch; stages run in order, each for its epochs."""
    if not stages:
        raise ValueError("stages: expected at least one curriculum stage, got none")
    total = total_epochs(stages)
    if _check_int("epoch", epoch, low=0) >= total:
        raise ValueError(f"epoch: {epoch!r} is out of range; the curriculum has epochs 0..{total - 1}")
    stage_ends = np.cumsum([stage.epochs for stage in stages])  # exclusive end epoch of each stage
    index = int(np.searchsorted(stage_ends, epoch, side="right"))
    return index, stages[index]


# --- validation -----------------------------------------------------------------------------

def _round_half_up(x: float) -> int:
    return int(np.floor(x + 0.5))


def _check_int(name: str, value: int, *, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}: {value!r} must be an integer >= {low}")
    return int(value)


def _check_labels(labels: Sequence[int]) -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or len(array) == 0 or not np.issubdtype(array.dtype, np.integer) or (array < 0).any():
        raise ValueError(f"labels: expected a non-empty 1-D sequence of class ids >= 0, got {labels!r}")
    return array


def _check_composition(composition: dict[int, int], labels: np.ndarray) -> dict[int, int]:
    kept = {}
    for c, k in composition.items():
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"composition: class {c!r} has {k!r} clips per batch; allowed: an integer >= 0")
        if k and not (labels == c).any():
            raise ValueError(f"composition: class {c!r} asks for {k} clips per batch but has no clips in labels")
        if k:
            kept[int(c)] = int(k)
    if not kept:
        raise ValueError(f"composition: {composition!r} asks for no clips; give at least one class a count >= 1")
    return kept
