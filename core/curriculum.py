"""The epoch plan of a training run: batch composition and curriculum stages, epoch by epoch.

`EpochPlan` turns a run's TrainConfig into the batches of each epoch: composed batches (A5) or
plain/oversampled shuffles, plus a curriculum stage's repeated hard examples (A7) and its
learning-rate scale. The draws themselves are the samplers' (core/sampling.py); like them, an
epoch's batches depend on (seed, epoch) alone, so a resumed run sees the same batches as an
uninterrupted one.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from core.config import CurriculumStage, TrainConfig
from core.sampling import ComposedBatchSampler, curriculum_extra_indices, oversampled_indices, stage_for_epoch, total_epochs

__all__ = ["EpochPlan"]


class EpochPlan:
    """Which training rows go into which batches, epoch by epoch (samplers + curriculum)."""

    def __init__(self, train: pd.DataFrame, tc: TrainConfig, *, labels: list[str], world_size: int) -> None:
        self.train, self.tc, self.labels, self.world_size = train, tc, labels, world_size
        self.y = train["y"].to_numpy()
        self.hard = np.flatnonzero(train["hard"].to_numpy()) if "hard" in train else np.array([], dtype=int)
        self.n_epochs = total_epochs(tc.curriculum) if tc.curriculum else tc.epochs

    def stage(self, epoch: int) -> CurriculumStage | None:
        return stage_for_epoch(self.tc.curriculum, epoch)[1] if self.tc.curriculum else None

    def stage_info(self, epoch: int) -> dict[str, Any]:
        return {"stage": stage_for_epoch(self.tc.curriculum, epoch)[0] + 1} if self.tc.curriculum else {}

    def lr_scale(self, epoch: int) -> float:
        """The stage's learning rate as a factor of the run's (1 outside a stage that sets one)."""
        stage = self.stage(epoch)
        return stage.lr / self.tc.lr if stage is not None and stage.lr is not None else 1.0

    def batches(self, epoch: int, *, samples: np.ndarray | None = None) -> list[np.ndarray]:
        """Sample-id lists (AugmentFeed ids: training rows, then augmented copies); a multiple of
        world_size so DDP ranks stay in step. samples: the epoch's ids (default: each row once)."""
        tc, seed = self.tc, self.tc.seed
        rng = np.random.default_rng([seed, epoch])
        samples = np.arange(len(self.y)) if samples is None else np.asarray(samples)
        y = self.y[samples % len(self.y)]
        if tc.batch_composition:
            composition = {self.labels.index(c): n for c, n in tc.batch_composition.items() if n > 0}
            sampler = ComposedBatchSampler(y, composition=composition, seed=seed)
            sampler.set_epoch(epoch)
            batches = [samples[np.asarray(b)] for b in sampler]
        else:
            factors = {self.labels.index(c): f for c, f in (tc.oversample or {}).items()}
            order = oversampled_indices(y, factors=factors, seed=seed, epoch=epoch) if factors else rng.permutation(len(y))
            batches = [samples[order[i:i + tc.batch_size]] for i in range(0, len(order), tc.batch_size)]
        stage = self.stage(epoch)
        if stage is not None and stage.hard_examples and len(self.hard):
            pool = self.hard
            if stage.hard_classes:
                wanted = {self.labels.index(c) for c in stage.hard_classes}
                pool = pool[np.isin(self.y[pool], list(wanted))]
            extra = curriculum_extra_indices(pool, repeat=stage.hard_repeat, fraction=stage.hard_fraction, seed=seed, epoch=epoch)
            extra = rng.permutation(extra)
            batches += [extra[i:i + tc.batch_size] for i in range(0, len(extra), tc.batch_size)]
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size
        return [b for b in batches[:usable] if len(b)]
