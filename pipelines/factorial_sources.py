"""The factorial builder's sources: which files, who speaks in them, and which split each takes.

A source is a folder or a manifest, found by the importer's own discovery (folder per class,
CSV/Parquet manifest, ESC-50, UrbanSound8K). A SPEECH folder holds one sub-folder per speaker (as
LibriSpeech and VCTK do); a manifest names the speaker in a `speaker` column (or `group`). Each
file is a source file; its label in the source is kept as `source_label`.

Splits keep every source file and every speaker whole: files that share a speaker or a source
group are one unit, and units go to train/val/test (60/20/20 of each class's usable audio).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from pipelines.factorial_config import SPEECH, SPLIT_SHARES
from pipelines.importing import DatasetImportError, discover_dataset

__all__ = ["FactorialError", "Source", "assign_splits", "read_sources"]


class FactorialError(DatasetImportError):
    """A factorial build that cannot start or cannot be filled; one line saying what to fix,
    raised before anything is written (the CLI prints it as its error)."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One source file. path is absolute; source_file is how clips name it (relative to the
    source folder or manifest, prefixed by the source's name); keys are its leakage keys."""
    path: Path
    label: str
    source_file: str
    speaker: str | None
    source_label: str
    sample_rate_hz: int
    keys: tuple[str, ...]


def read_sources(specs: Sequence[str | Path], *, label: str, sample_rate_hz: int) -> tuple[list[Source], dict[str, str]]:
    """Every readable audio file of the sources of one class, and {file: why it was skipped}
    for those soundfile cannot open. Refuses (FactorialError) a source that holds no audio or
    only unreadable files, and a file sampled below sample_rate_hz."""
    sources, skipped = [], {}
    for spec in specs:
        try:
            found = discover_dataset(spec, name=Path(spec).stem if Path(spec).is_file() else Path(spec).name)
        except DatasetImportError as exc:
            raise FactorialError(f"{label} source: {exc}") from None
        own = []
        for row in found.table.itertuples(index=False):
            path = (found.root / row.path).resolve()
            shown = f"{found.name}/{row.path}"
            try:
                rate = sf.info(os.fspath(path)).samplerate
            except (sf.LibsndfileError, RuntimeError, OSError) as exc:
                skipped[shown] = str(exc).splitlines()[0]
                continue
            if rate < sample_rate_hz:
                raise FactorialError(f"{label} source {shown} is sampled at {rate} Hz, below the output rate "
                                     f"{sample_rate_hz} Hz: set sample_rate_hz (--sample-rate) to {rate} or leave "
                                     "such files out (upsampled audio would tell the classes apart by bandwidth)")
            own.append(_source(row, path=path, shown=shown, label=label, rate=rate, layout=found.layout))
        if not own:
            raise FactorialError(f"{label} source {spec}: none of its {len(found.table)} audio files is readable")
        sources += own
    return sources, skipped


def _source(row, *, path: Path, shown: str, label: str, rate: int, layout: str) -> Source:
    metadata = json.loads(row.metadata) if isinstance(getattr(row, "metadata", None), str) else {}
    group = row.group if row.group != row.path else None  # the importer's default group is the file itself
    speaker = metadata.get("speaker")
    if speaker is None and label == SPEECH:
        speaker = group or (row.label if layout == "folder" else None)
    keys = tuple(k for k in (f"file:{path}", speaker and f"speaker:{speaker}", group and f"group:{group}") if k)
    return Source(path=path, label=label, source_file=shown, speaker=None if speaker is None else str(speaker),
                  source_label=str(row.label), sample_rate_hz=int(rate), keys=keys)


def assign_splits(sources: Sequence[Source], usable_s: Sequence[float], *,
                  seed: int) -> tuple[list[str], list[str]]:
    """(split, group) of each source. Files linked by a speaker or source group are one unit and
    stay whole; each class's units fill train/val/test towards 60/20/20 of its usable seconds
    (the largest unit first, to the split furthest below its share, so the first three units of
    a class go to three different splits). The group names the unit: its speaker, else its
    first file. Refuses a class with fewer than three units."""
    units = _units([s.keys for s in sources])
    rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
    split_of_unit: dict[int, str] = {}
    for label in sorted({s.label for s in sources}):
        weights: dict[int, float] = {}
        for source, unit, seconds in zip(sources, units, usable_s):
            if source.label == label:
                weights[unit] = weights.get(unit, 0.0) + seconds
        if len(weights) < len(SPLIT_SHARES):
            raise FactorialError(f"{label} sources: {len(weights)} unit(s) of source files (files linked by a "
                                 f"speaker count as one), at least {len(SPLIT_SHARES)} needed for a 60/20/20 split "
                                 "without leakage")
        _fill_splits(weights, split_of_unit, rng)
    names: dict[int, str] = {}
    for source, unit in sorted(zip(sources, units), key=lambda pair: (pair[0].speaker is None, pair[0].source_file)):
        names.setdefault(unit, source.speaker or source.source_file)
    return [split_of_unit[unit] for unit in units], [names[unit] for unit in units]


def _fill_splits(weights: dict[int, float], split_of_unit: dict[int, str], rng: np.random.Generator) -> None:
    total = sum(weights.values()) or 1.0
    filled = {split: sum(w for u, w in weights.items() if split_of_unit.get(u) == split) for split in SPLIT_SHARES}
    order = [u for u in rng.permutation(sorted(weights)) if u not in split_of_unit]
    for unit in sorted(order, key=lambda u: -weights[u]):  # stable: equal weights keep the seeded order
        split = max(SPLIT_SHARES, key=lambda s: 1.0 - filled[s] / (SPLIT_SHARES[s] * total))
        split_of_unit[int(unit)] = split
        filled[split] += weights[unit]


def _units(keys: Sequence[tuple[str, ...]]) -> list[int]:
    """The connected component of each source, where sources sharing any key are connected."""
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_with: dict[str, int] = {}
    for i, own in enumerate(keys):
        for key in own:
            j = first_with.setdefault(key, i)
            parent[root(i)] = root(j)
    return [root(i) for i in range(len(keys))]
