"""Training batches with augmentation: which samples each epoch holds, and their features.

Without augmentations a batch is cached log-mel rows, normalised: the fast path, unchanged.
With them, per epoch (a curriculum stage may set its own list; A7):
- spectrogram steps (SpecAugment) act on the cached rows after normalisation, per sample, on
  the fly: slice assignments, far cheaper than the model step.
- waveform steps need audio: the clip is read, augmented, cropped or padded back to the
  feature length and turned into log-mel. That happens either on the fly (fresh draws every
  epoch) or offline: every augmented sample rendered once, before the first epoch, and
  reused. `prepare` decides (augment_mode "auto"): on the fly only while the added cost per
  batch is below the model step it feeds, measured on this machine on a real batch.
- augment_copies = N adds N augmented copies of each eligible clip to every epoch, next to
  the clean clip (A7 "clean set + augmentations"); N = 0 augments the drawn clips in place.
- derived clips in the manifest (session copies, `earmark augment-copies`) already carry their
  waveform augmentation: the run then renders none itself.

Offline copies (run-made or session-made) are rendered with every augmentation the preset
names; an epoch uses a copy only if all that was applied to it is in that epoch's list, so
"epoch 3 adds occlusion + band-stop copies" holds for copies as it does on the fly.

Sample ids: id = variant * n + row, row indexing the training frame; variant 0 is the clip as
cached, variant k >= 1 its k-th augmented copy (in place: variant 0 samples are augmented).
Every draw comes from a generator seeded by (seed, stream, epoch, batch, position) on the fly
or (seed, stream, clip id, copy) offline, so runs repeat and DDP ranks agree.
"""
from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch

from core.audio import AudioError
from core.augment.noise_bank import NoiseBank
from core.augment.pipeline import Pipeline, all_specs, build_pipeline, needs_noise_bank
from core.augment.render import augmented_log_mel
from core.config import ConfigError, CurriculumStage, ExperimentConfig
from core.features import FeatureCache, NormStats, feature_transform, normalize, torch_threads

__all__ = ["AugmentDecision", "AugmentFeed", "DECISION_FILE", "COPIES_FILE"]

Mode = Literal["none", "on_the_fly", "offline", "session_copies"]
DECISION_FILE = "augment.json"
COPIES_FILE = "augment-copies.f16"
# Separate random streams, so no two uses of the same (seed, epoch, ...) correlate.
_WAVE_STREAM, _SPEC_STREAM, _OFFLINE_STREAM = 11, 12, 13
# Batches timed per augmentation list when deciding between on the fly and offline.
PROBE_BATCHES = 3


@dataclasses.dataclass(frozen=True)
class AugmentDecision:
    """How a run augments, and why (logged as an 'info' event and kept in result.json).

    augment_s_per_batch: what on-the-fly augmentation adds to a batch (seconds, measured);
    model_step_s: the model step it feeds (seconds, measured); copies: samples rendered
    offline by the run; session_copies: derived clips in the manifest.
    """
    mode: Mode
    reason: str
    batch_size: int
    augment_s_per_batch: float | None = None
    model_step_s: float | None = None
    copies: int = 0
    session_copies: int = 0
    render_s: float | None = None

    @property
    def augment_cost_vs_model_step(self) -> float | None:
        if self.augment_s_per_batch is None or not self.model_step_s:
            return None
        return self.augment_s_per_batch / self.model_step_s

    def to_dict(self) -> dict[str, Any]:
        ratio = self.augment_cost_vs_model_step
        return {**dataclasses.asdict(self), "augment_cost_vs_model_step": None if ratio is None else round(ratio, 4)}


class AugmentFeed:
    """Sample ids and batch features for one run.

    train: the training rows with columns path, row (feature-cache row), label, clip_id, and
    optionally parent_clip_id / augmentations (derived clips: "+"-joined applied names).
    stages: the curriculum stage of each epoch (None without a curriculum).
    """

    def __init__(self, train: pd.DataFrame, config: ExperimentConfig, *, cache: FeatureCache, norm_stats: NormStats,
                 stages: Sequence[CurriculumStage | None], workers: int = 2) -> None:
        self.n = len(train)
        self.config, self.cache, self.norm_stats = config, cache, norm_stats
        self.feature_cfg = config.features
        self.seed = config.train.seed
        self.workers = workers
        self.paths = train["path"].tolist()
        self.cache_rows = train["row"].to_numpy()
        self.clip_ids = train["clip_id"].to_numpy()
        labels = train["label"].astype(str)
        unknown = sorted(set(config.augment_classes) - set(labels))
        if unknown:
            raise ConfigError(f"augment_classes: {unknown} have no training clips; the run's classes are "
                              f"{sorted(set(labels))}")
        in_classes = labels.isin(config.augment_classes).to_numpy() if config.augment_classes else np.ones(self.n, bool)
        self.derived = train["parent_clip_id"].notna().to_numpy() if "parent_clip_id" in train else np.zeros(self.n, bool)
        derived_names = train["augmentations"] if "augmentations" in train else pd.Series([""] * self.n)
        self.derived_names = [frozenset(filter(None, v.split("+"))) if isinstance(v, str) else frozenset()
                              for v in derived_names]
        self.spec_ok = in_classes
        self.wave_ok = in_classes & ~self.derived  # a copy is not augmented again
        self.bank = _open_bank(config)
        built: dict[str, Pipeline] = {}
        self.epoch_pipelines: list[Pipeline] = []
        for stage in stages:
            specs = config.augment if stage is None or stage.augment is None else stage.augment
            key = json.dumps([s.to_dict() for s in specs], sort_keys=True)
            if key not in built:
                built[key] = build_pipeline(specs, sample_rate_hz=self.feature_cfg.sample_rate_hz, noise_bank=self.bank)
            self.epoch_pipelines.append(built[key])
        self.has_wave = any(p.wave_steps for p in self.epoch_pipelines)
        self.active = any(p.steps for p in self.epoch_pipelines)
        self.copies_per_clip = config.augment_copies
        uses_session_copies = any(self._usable(p)[self.derived].any() for p in set(self.epoch_pipelines))
        # Until prepare() decides, waveform steps count as on the fly (that is what it measures).
        self.mode: Mode = "session_copies" if uses_session_copies else "on_the_fly" if self.active else "none"
        self._log_mel = feature_transform(self.feature_cfg)
        self._pool: ThreadPoolExecutor | None = None
        self._slots: dict[tuple[int, int], int] = {}
        self._slot_names: list[frozenset[str]] = []
        self._slot_scales: list[float] = []
        self._rendered: np.ndarray | None = None

    # --- which samples an epoch holds -------------------------------------------------------
    def sample_ids(self, epoch: int) -> np.ndarray:
        """The epoch's samples (ids as in the module docstring), clean rows first."""
        pipeline = self.epoch_pipelines[epoch]
        wave_names = pipeline.names("wave")
        rows = np.flatnonzero(self._usable(pipeline))
        if self.copies_per_clip == 0 or not pipeline.wave_steps or self.mode not in ("on_the_fly", "offline"):
            return rows
        ids = [rows]
        for copy in range(1, self.copies_per_clip + 1):
            eligible = np.flatnonzero(self.wave_ok)
            if self.mode == "offline":
                eligible = np.array([r for r in eligible if self._offline_slot(r, copy, wave_names) is not None], dtype=int)
            ids.append(copy * self.n + eligible)
        return np.concatenate(ids)

    def _usable(self, pipeline: Pipeline) -> np.ndarray:
        """Rows an epoch with this pipeline may hold: every clip, but a session copy only when
        all its augmentations are in the pipeline's list."""
        wave_names = pipeline.names("wave")
        return np.array([not derived or names <= wave_names for derived, names in zip(self.derived, self.derived_names)],
                        dtype=bool)

    def rows_of(self, ids: np.ndarray) -> np.ndarray:
        """The training row of each sample id (its label, its clip)."""
        return np.asarray(ids) % self.n

    # --- what a batch holds ------------------------------------------------------------------
    def features(self, ids: np.ndarray, *, epoch: int, batch_index: int) -> torch.Tensor:
        """Normalised, augmented features float32 (len(ids), n_mels, n_frames) for one batch.

        batch_index: the batch's place in the epoch's full list (the same on every DDP rank).
        """
        ids = np.asarray(ids)
        rows, variants = ids % self.n, ids // self.n
        out = self.cache.take(self.cache_rows[rows])
        pipeline = self.epoch_pipelines[epoch]
        if pipeline.wave_steps and self.mode in ("on_the_fly", "offline"):
            targets = self._wave_targets(rows, variants)
            if self.mode == "on_the_fly":
                self._render_on_the_fly(out, rows, targets, pipeline, epoch=epoch, batch_index=batch_index)
            else:
                wave_names = pipeline.names("wave")
                for j in targets:
                    slot = self._offline_slot(int(rows[j]), max(int(variants[j]), 1), wave_names)
                    if slot is not None:
                        out[j] = self._rendered[slot]
        features = torch.from_numpy(out)
        features = normalize(features, self.norm_stats) if self.norm_stats else features
        if pipeline.spec_steps:
            for j in np.flatnonzero(self.spec_ok[rows]):
                rng = np.random.default_rng([self.seed, _SPEC_STREAM, epoch, batch_index, int(j)])
                features[j] = pipeline.augment_spec(features[j], rng)[0]
        return features

    def time_scales(self, ids: np.ndarray, *, epoch: int, batch_index: int) -> np.ndarray:
        """How much faster than its source clip each sample of a batch plays, float64 (len(ids),):
        the time_stretch rate this run applied to it (Pipeline.time_scale), 1.0 where it applied
        none. features() renders from the same draws, so the two agree. A session copy counts
        as its own source (its audio, and what is measured from it, carries its stretch)."""
        ids = np.asarray(ids)
        rows, variants = ids % self.n, ids // self.n
        scales = np.ones(len(ids))
        pipeline = self.epoch_pipelines[epoch]
        if not (pipeline.wave_steps and self.mode in ("on_the_fly", "offline")):
            return scales
        for j in self._wave_targets(rows, variants):
            if self.mode == "on_the_fly":
                rng = np.random.default_rng([self.seed, _WAVE_STREAM, epoch, batch_index, int(j)])
                scales[j] = pipeline.time_scale(pipeline.randomize_wave(rng, n_samples=self.feature_cfg.n_samples))
            else:
                slot = self._offline_slot(int(rows[j]), max(int(variants[j]), 1), pipeline.names("wave"))
                scales[j] = 1.0 if slot is None else self._slot_scales[slot]
        return scales

    def _wave_targets(self, rows: np.ndarray, variants: np.ndarray) -> np.ndarray:
        """Positions in a batch that waveform steps act on: the copies, or (no copies) the eligible clips."""
        return np.flatnonzero(variants > 0) if self.copies_per_clip else np.flatnonzero(self.wave_ok[rows])

    def _render_on_the_fly(self, out: np.ndarray, rows: np.ndarray, targets: np.ndarray, pipeline: Pipeline, *,
                           epoch: int, batch_index: int) -> None:
        def render(j: int) -> tuple[int, np.ndarray | None]:
            rng = np.random.default_rng([self.seed, _WAVE_STREAM, epoch, batch_index, j])
            applied = pipeline.randomize_wave(rng, n_samples=self.feature_cfg.n_samples)
            if not applied:  # nothing drawn: the cached row is already this sample
                return j, None
            return j, augmented_log_mel(self.paths[rows[j]], applied, pipeline=pipeline, feature_cfg=self.feature_cfg,
                                        log_mel=self._log_mel, rng=rng)
        for j, features in self._map(render, [int(j) for j in targets]):
            if features is not None:
                out[j] = features

    def _map(self, fn: Callable, items: list) -> list:
        """fn over items on `workers` threads, torch held to one thread per op meanwhile, as the
        feature cache does: measured on 2 busy cores, a 10 s log-mel took 9 ms on one torch
        thread and 160 ms on two, which spin against each other and the clip threads."""
        with torch_threads(1):
            if self.workers <= 1 or len(items) <= 1:
                return [fn(item) for item in items]
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers)
            return list(self._pool.map(fn, items))

    # --- on the fly or offline ---------------------------------------------------------------
    def prepare(self, run_dir: Path, *, decide: bool, batches: dict[int, list[np.ndarray]],
                time_model_step: Callable[[torch.Tensor, np.ndarray], float]) -> AugmentDecision:
        """Choose how waveform steps run and, when offline, render the copies into run_dir.

        decide: True in the main process, which measures, renders and writes the decision;
        the others read it (call them after the main process, e.g. in main_process_first).
        batches: each epoch's batches (sample ids), as the plan draws them on the fly.
        time_model_step(features, rows): seconds of one model step on that clean batch.
        """
        run_dir = Path(run_dir)
        if not decide:
            saved = json.loads((run_dir / DECISION_FILE).read_text())
            decision = AugmentDecision(**{k: v for k, v in saved["decision"].items() if k != "augment_cost_vs_model_step"})
            self._load_offline(run_dir, saved)
            self.mode = decision.mode
            return decision
        decision = self._decide(batches, time_model_step)
        saved: dict[str, Any] = {"decision": decision.to_dict()}
        if decision.mode == "offline":
            started = time.perf_counter()
            saved["slots"] = self._render_offline(run_dir / COPIES_FILE)
            decision = dataclasses.replace(decision, copies=len(self._slot_names),
                                           render_s=round(time.perf_counter() - started, 2))
            saved["decision"] = decision.to_dict()
        self.mode = decision.mode
        (run_dir / DECISION_FILE).write_text(json.dumps(saved))
        return decision

    def _decide(self, batches: dict[int, list[np.ndarray]], time_model_step: Callable) -> AugmentDecision:
        batch_size = max((len(ids) for epoch in batches.values() for ids in epoch), default=0)
        mode, reason, measured = self._choose(batches, time_model_step)
        never = ~np.any([self._usable(p) for p in set(self.epoch_pipelines)], axis=0) & self.derived
        if never.any():
            reason += f"; {int(never.sum())} derived clips are left out: this preset names none of their augmentations"
        return AugmentDecision(mode, reason, batch_size, session_copies=int(self.derived.sum()), **measured)

    def _choose(self, batches: dict[int, list[np.ndarray]], time_model_step: Callable) -> tuple[Mode, str, dict[str, float]]:
        """(mode, why, measured seconds): the costliest epoch decides, each distinct list measured
        on the first batches of the first epoch that uses it."""
        if not self.active:
            return "none", "no augmentations configured", {}
        costs = {}
        for epoch, epoch_batches in batches.items():
            pipeline = self.epoch_pipelines[epoch]
            if id(pipeline) not in costs and pipeline.steps and epoch_batches:
                costs[id(pipeline)] = (self._added_cost_s(epoch_batches, epoch), epoch_batches[0])
        if not costs:
            return self.mode, "no training batch to measure", {}
        augment_s, ids = max(costs.values(), key=lambda c: c[0])
        step_s = time_model_step(self.features_clean(ids), self.rows_of(ids))
        measured = {"augment_s_per_batch": augment_s, "model_step_s": step_s}
        ratio = f"{augment_s:.3f} s per batch, {augment_s / step_s:.2f}x the {step_s:.3f} s model step it feeds"
        if self.mode == "session_copies":
            return self.mode, (f"derived clips from the session carry the waveform augmentations; what runs on the fly "
                               f"adds {ratio}"), measured
        if not self.has_wave:
            return "on_the_fly", f"spectrogram augmentations only, on cached features ({ratio})", measured
        if self.config.augment_mode != "auto":
            return self.config.augment_mode, f"augment_mode is {self.config.augment_mode!r} (on the fly would add {ratio})", \
                measured
        if augment_s < step_s:
            return "on_the_fly", f"on-the-fly augmentation adds {ratio}: below it, so it stays on the fly", measured
        return "offline", (f"on-the-fly augmentation would add {ratio}: not below it, so the augmented samples are "
                           f"rendered once, before the first epoch"), measured

    def _added_cost_s(self, batches: list[np.ndarray], epoch: int) -> float:
        """Seconds on-the-fly augmentation adds to an average batch of this epoch over the plain
        cached read: the added time per augmented sample (median over up to PROBE_BATCHES
        batches), times the epoch's mean number of augmented samples per batch. Batches differ
        in how many copies they draw, so one batch alone is a poor estimate."""
        pipeline = self.epoch_pipelines[epoch]
        counts = [self._augmented_count(ids, pipeline) for ids in batches]
        measured = [(ids, count) for ids, count in zip(batches, counts) if count][:PROBE_BATCHES]
        if not measured:
            return 0.0
        self.features(measured[0][0][:1], epoch=epoch, batch_index=0)  # warm-up: first calls build filters and plans
        per_sample = []
        for index, (ids, count) in enumerate(measured):
            started = time.perf_counter()
            self.features(ids, epoch=epoch, batch_index=index)
            augmented = time.perf_counter() - started
            started = time.perf_counter()
            self.features_clean(ids)
            per_sample.append(max(augmented - (time.perf_counter() - started), 0.0) / count)
        return float(np.median(per_sample) * np.mean(counts))

    def _augmented_count(self, ids: np.ndarray, pipeline: Pipeline) -> int:
        """How many samples of a batch go through augmentation: rendered ones where waveform
        steps run here, else the ones spectrogram steps act on."""
        rows, variants = ids % self.n, ids // self.n
        if pipeline.wave_steps and self.mode in ("on_the_fly", "offline"):
            return int((variants > 0).sum() if self.copies_per_clip else self.wave_ok[rows].sum())
        return int(self.spec_ok[rows].sum()) if pipeline.spec_steps else 0

    def features_clean(self, ids: np.ndarray) -> torch.Tensor:
        """The batch without augmentation: cached rows, normalised."""
        features = torch.from_numpy(self.cache.take(self.cache_rows[self.rows_of(ids)]))
        return normalize(features, self.norm_stats) if self.norm_stats else features

    def _render_offline(self, path: Path) -> list[list[Any]]:
        """Render every augmented sample once with all the preset's waveform steps; returns the
        slot list [row, copy, applied names, time scale] saved with the decision."""
        pipeline = build_pipeline(all_specs(self.config), sample_rate_hz=self.feature_cfg.sample_rate_hz,
                                  noise_bank=self.bank)
        wanted = [(int(r), c) for c in range(1, max(self.copies_per_clip, 1) + 1) for r in np.flatnonzero(self.wave_ok)]

        def render(item: tuple[int, int]) -> tuple[tuple[int, int], list, np.ndarray | None]:
            row, copy = item
            rng = np.random.default_rng([self.seed, _OFFLINE_STREAM, int(self.clip_ids[row]), copy])
            applied = pipeline.randomize_wave(rng, n_samples=self.feature_cfg.n_samples)
            if not applied:
                return item, applied, None
            try:
                features = augmented_log_mel(self.paths[row], applied, pipeline=pipeline, feature_cfg=self.feature_cfg,
                                             log_mel=self._log_mel, rng=rng)
            except AudioError:  # the clip was read for the cache moments ago; if it fails now, train it clean
                return item, applied, None
            return item, applied, features

        results = [r for r in self._map(render, wanted) if r[2] is not None]
        shape = (len(results), *self.cache.row_shape)
        rendered = np.lib.format.open_memmap(path, mode="w+", dtype=np.float16, shape=shape) if results else None
        slots = []
        for index, ((row, copy), applied, features) in enumerate(results):
            rendered[index] = features
            slots.append([row, copy, sorted({a["name"] for a in applied}), pipeline.time_scale(applied)])
        if rendered is not None:
            rendered.flush()
        self._set_slots(slots, rendered)
        return slots

    def _load_offline(self, run_dir: Path, saved: dict[str, Any]) -> None:
        if saved.get("slots"):
            self._set_slots(saved["slots"], np.load(run_dir / COPIES_FILE, mmap_mode="r"))

    def _set_slots(self, slots: list[list[Any]], rendered: np.ndarray | None) -> None:
        self._slots = {(slot[0], slot[1]): i for i, slot in enumerate(slots)}
        self._slot_names = [frozenset(slot[2]) for slot in slots]
        self._slot_scales = [slot[3] if len(slot) > 3 else 1.0 for slot in slots]  # a decision saved before scales
        self._rendered = rendered

    def _offline_slot(self, row: int, copy: int, wave_names: set[str]) -> int | None:
        slot = self._slots.get((row, copy))
        return slot if slot is not None and self._slot_names[slot] <= wave_names else None

    def close(self, run_dir: Path | None = None) -> None:
        """Stop the worker threads; with run_dir, delete the offline copies rendered there."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
        self._rendered = None
        if run_dir is not None:
            (Path(run_dir) / COPIES_FILE).unlink(missing_ok=True)


def _open_bank(config: ExperimentConfig) -> NoiseBank | None:
    """The run's noise bank, opened only when an augmentation draws from it. A run's saved config
    holds the absolute folder (ExperimentConfig.for_session); a relative one here would silently
    mean the working directory, so it is refused."""
    if config.noise_bank is None or not any(needs_noise_bank(specs) for specs in config.augment_lists()):
        return None
    if not Path(config.noise_bank).expanduser().is_absolute():
        raise ConfigError(f"noise_bank: {config.noise_bank!r} is relative to a session folder that this run does not "
                          f"know; a run's config holds it resolved (ExperimentConfig.for_session)")
    return NoiseBank(config.noise_bank, sample_rate_hz=config.features.sample_rate_hz)
