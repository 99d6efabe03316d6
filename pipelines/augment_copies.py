"""Offline augmented copies (A4): audio files in the session, registered as derived clips.

For each usable training clip (of the preset's augment_classes unless told otherwise) this
renders `copies` versions through every waveform augmentation the preset names (the run's
list and its curriculum stages' lists, each with its own probability) and writes them under
`sessions/<name>/derived/<preset>-<fingerprint>/`, never next to the source audio. Each copy
is a clip with parent_clip_id set, so the store makes it follow its parent's current label,
split and exclusion; its metadata records exactly what was applied ({"augment": {...,
"applied": [...]}}), which the Data tab can show and replay, and which lets a curriculum stage
take only the copies whose augmentations it lists (A7).

Only training clips get copies: a copy of a validation or test clip would put the same sound
on both sides of the split. Idempotent: the fingerprint covers everything that decides a
copy's content, so running it again makes only what is missing (or a file deleted since).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm.auto import tqdm

from core.audio import AudioError
from core.augment import all_specs, build_pipeline
from core.augment.render import source_wave
from core.config import ConfigError, load_preset
from core.feature_fit import fit_to_session
from core.store import Store, StoreError

__all__ = ["AUGMENT_METADATA_KEY", "CopiesSummary", "DERIVED_DATASET", "applied_names", "make_augmented_copies"]

DERIVED_DATASET = "augmented-copies"
DERIVED_FOLDER = "derived"
# Bump when the way a copy is rendered changes, so old copies are not taken for new ones.
COPY_FORMAT_VERSION = 1
AUGMENT_METADATA_KEY = "augment"  # a copy's metadata: its parent's, plus what was applied under this key


@dataclasses.dataclass
class CopiesSummary:
    """What one make_augmented_copies call did; failed maps a parent clip id to the reason."""
    preset: str
    folder: Path
    parents: int
    made: int
    existing: int
    failed: dict[int, str]
    seconds: float

    def lines(self) -> list[str]:
        lines = [f"augmented copies ({self.preset}) in {self.folder}: {self.made} made, {self.existing} already there, "
                 f"from {self.parents} training clips in {self.seconds:.1f} s"]
        lines += [f"  clip {clip}: {reason}" for clip, reason in sorted(self.failed.items())]
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "folder": str(self.folder)}


def applied_names(metadata: Any) -> str | None:
    """A copy's applied augmentation names, sorted and '+'-joined ('' when none applied), from
    its clip metadata (JSON text); None for a clip that is not an augmented copy."""
    if not isinstance(metadata, str):
        return None
    augment = json.loads(metadata).get(AUGMENT_METADATA_KEY)
    if not isinstance(augment, dict):
        return None
    return "+".join(sorted({record["name"] for record in augment.get("applied", [])}))


def make_augmented_copies(store: Store, *, preset: str, overrides: list[str] | None = None,
                          copies_per_clip: int | None = None, classes: list[str] | None = None,
                          clip_ids: list[int] | None = None, seed: int | None = None, workers: int = 2,
                          progress: bool = True) -> CopiesSummary:
    """Render and register copies_per_clip copies (default: the preset's augment_copies, at
    least 1) of each chosen training clip. clip_ids picks clips (each must be a usable training
    clip); otherwise every usable training clip of `classes` (default: the preset's
    augment_classes; empty = all). seed defaults to the preset's train.seed."""
    started = time.perf_counter()
    config = load_preset(preset, overrides, session_dir=store.session_dir)  # a relative noise_bank: the session's
    copies = max(config.augment_copies, 1) if copies_per_clip is None else copies_per_clip
    if isinstance(copies, bool) or not isinstance(copies, int) or not 1 <= copies <= 100:
        raise ConfigError(f"copies_per_clip: {copies!r} must be a whole number in [1, 100]")
    if workers < 1:
        raise ConfigError(f"workers: {workers!r} must be >= 1")
    seed = config.train.seed if seed is None else seed
    feature_cfg = fit_to_session(config.features, store).features  # copies are cut to the length training uses
    # Only waveform steps can be baked into audio; spectrogram ones run on cached features in training.
    everything = build_pipeline(all_specs(config), sample_rate_hz=feature_cfg.sample_rate_hz, noise_bank=config.noise_bank)
    specs = [step.spec for step in everything.wave_steps]
    pipeline = build_pipeline(specs, sample_rate_hz=feature_cfg.sample_rate_hz, noise_bank=config.noise_bank)
    if not specs:
        raise ConfigError(f"preset {config.name!r} names no waveform augmentation to make copies with "
                          f"(spectrogram ones run on cached features during training)")
    fingerprint = _fingerprint(specs=[s.to_dict() for s in specs], seed=seed, noise_bank=config.noise_bank,
                               features={k: getattr(feature_cfg, k) for k in ("sample_rate_hz", "max_length_s", "crop")})
    parents = _parents(store, clip_ids=clip_ids, classes=config.augment_classes if classes is None else classes)
    root = Path(store.session_dir) / DERIVED_FOLDER
    folder = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', config.name)}-{fingerprint}"
    dataset_id = store.add_dataset(name=DERIVED_DATASET, root=root, layout="derived")
    registered = store.existing_paths(dataset_id)
    roots = store.dataset_roots()

    jobs = []
    for parent in parents.itertuples():
        for copy in range(1, copies + 1):
            relative = f"{folder}/{parent.clip_id}-{copy}.wav"
            if relative not in registered or not (root / relative).is_file():
                jobs.append((parent, copy, relative))

    def render(job: tuple[Any, int, str]) -> tuple[Any, int, str, dict[str, Any] | str]:
        parent, copy, relative = job
        rng = np.random.default_rng([seed, int(parent.clip_id), copy])
        try:
            wave = source_wave(roots[parent.dataset_id] / parent.path, feature_cfg, rng=rng)
        except AudioError as exc:
            return parent, copy, relative, str(exc)
        augmented, applied = pipeline.augment_wave(wave, rng)
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / relative), augmented, feature_cfg.sample_rate_hz, subtype="FLOAT")  # float: gain and noise never clip
        return parent, copy, relative, {"applied": applied, "duration_s": len(augmented) / feature_cfg.sample_rate_hz}

    rows, failed = [], {}
    with ThreadPoolExecutor(max_workers=workers) as pool, \
            tqdm(total=len(jobs), disable=not progress, unit="copy", desc="augmented copies") as bar:
        for parent, copy, relative, outcome in pool.map(render, jobs):
            bar.update()
            if isinstance(outcome, str):
                failed[int(parent.clip_id)] = outcome
            elif relative not in registered:
                rows.append(_clip_row(parent, copy, relative, outcome, preset=config.name, fingerprint=fingerprint,
                                      seed=seed, specs=[s.to_dict() for s in specs], sample_rate_hz=feature_cfg.sample_rate_hz))
    made = store.add_clips(dataset_id, pd.DataFrame(rows)) if rows else 0
    rewritten = len(jobs) - len(failed) - len(rows)  # registered copies whose file had gone
    return CopiesSummary(preset=config.name, folder=root / folder, parents=len(parents), made=made + rewritten,
                         existing=len(parents) * copies - len(jobs), failed=failed,
                         seconds=round(time.perf_counter() - started, 2))


def _parents(store: Store, *, clip_ids: list[int] | None, classes: list[str]) -> pd.DataFrame:
    """The clips to copy: usable training clips that are not copies themselves."""
    state = store.labels()
    usable = (state.status == "ok") & ~state.excluded & ~state.quarantined & state.label.notna()
    if clip_ids is not None:
        indexed = state.set_index("clip_id")
        for clip in clip_ids:
            if clip not in indexed.index:
                raise StoreError(f"no clip with id {clip}")
            row = indexed.loc[clip]
            if pd.notna(row.parent_clip_id):
                raise ConfigError(f"clip {clip} is itself an augmented copy (of clip {int(row.parent_clip_id)}); "
                                  f"make copies of the original")
            if row.split != "train":
                raise ConfigError(f"clip {clip} is in the {row.split!r} split: augmented copies are made only from "
                                  f"training clips, so no copy of a validation or test clip can leak into training")
            if row.status != "ok" or row.excluded or row.quarantined or pd.isna(row.label):
                why = (f"status {row.status}" if row.status != "ok" else "excluded" if row.excluded
                       else "quarantined" if row.quarantined else "unlabelled")
                raise ConfigError(f"clip {clip} is not usable for training ({why}), so it gets no copies")
        chosen = state[state.clip_id.isin(clip_ids)]
    else:
        known = set(state.label.dropna())
        unknown = sorted(set(classes) - known)
        if unknown:
            raise ConfigError(f"classes: {unknown} are not labels in this session; it has {sorted(known)}")
        chosen = state[usable & state.parent_clip_id.isna() & (state.split == "train")
                       & (state.label.isin(classes) if classes else True)]
    metadata = store.clips().set_index("id")["metadata"]
    return chosen.assign(metadata=chosen.clip_id.map(metadata)).reset_index(drop=True)


def _clip_row(parent: Any, copy: int, relative: str, outcome: dict[str, Any], *, preset: str, fingerprint: str,
              seed: int, specs: list[dict[str, Any]], sample_rate_hz: int) -> dict[str, Any]:
    inherited = json.loads(parent.metadata) if isinstance(parent.metadata, str) else {}
    inherited[AUGMENT_METADATA_KEY] = {"preset": preset, "fingerprint": fingerprint, "seed": seed, "copy": copy, "specs": specs,
                            "applied": outcome["applied"]}
    return {"path": relative, "duration_s": outcome["duration_s"], "sample_rate_hz": sample_rate_hz, "channels": 1,
            "split": "train", "fold": parent.fold, "source_group": parent.source_group,
            "original_label": parent.original_label, "status": "ok", "reason": None,
            "metadata": json.dumps(inherited, default=float), "parent_clip_id": int(parent.clip_id)}


def _fingerprint(**content: Any) -> str:
    """10 hex digits over everything that decides a copy's audio."""
    text = json.dumps({"format": COPY_FORMAT_VERSION, **content}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:10]
