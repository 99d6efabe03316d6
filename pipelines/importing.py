"""Import a dataset into a session: discover clips, map classes, probe files, assign splits.

Layouts: a folder per class; a CSV/Parquet manifest; ESC-50 (meta/esc50.csv + audio/); and
UrbanSound8K (metadata/UrbanSound8K.csv + audio/foldN/). A bad file never fails the import:
it is stored with status "unreadable" and its reason, and counted in the summary. Importing
the same dataset again adds only what is new.
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from core.audio import probe
from core.config import ConfigError, read_mapping
from core.store import Store

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au"}
LAYOUTS = ("auto", "folder", "manifest", "esc50", "urbansound8k")
# Every audio file under a folder, without labels: the inbox's layout (pipelines/inbox.py).
UNLABELLED_LAYOUT = "unlabelled"
SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                 "dev": "val", "test": "test", "testing": "test", "eval": "test", "evaluation": "test"}
# Folds of the public benchmarks, mapped onto 60/20/20 (the fold itself is kept on each clip).
ESC50_FOLD_SPLITS = {1: "train", 2: "train", 3: "train", 4: "val", 5: "test"}
US8K_FOLD_SPLITS = {**{f: "train" for f in range(1, 7)}, 7: "val", 8: "val", 9: "test", 10: "test"}
# Manifest column names we understand; every other column is kept as clip metadata.
MANIFEST_ALIASES = {
    "path": ("path", "file", "filename", "filepath", "audio", "audio_path"),
    "label": ("label", "class", "category", "target_label"),
    "split": ("split", "subset", "partition"),
    "group": ("group", "source_group", "speaker", "source", "recording", "src_file"),
    "fold": ("fold",),
    "duration_s": ("duration_s", "duration"),
    "sample_rate_hz": ("sample_rate_hz", "sample_rate", "sr"),
}


class DatasetImportError(ValueError):
    """An import that cannot start (bad path, layout, manifest or class map); says why."""


@dataclasses.dataclass
class ClassMap:
    """Source class -> task class, and what happens to classes not listed."""
    mapping: dict[str, str]
    unmapped: Literal["drop", "keep"] = "drop"

    @classmethod
    def load(cls, path: str | Path, *, unmapped: Literal["drop", "keep"] | None = None) -> "ClassMap":
        """Read a YAML/JSON class map: either {classes: {src: dst}, unmapped: drop|keep} or {src: dst}."""
        data = read_mapping(path)
        mapping = data.get("classes", data) if isinstance(data.get("classes"), dict) else data
        mapping = {k: v for k, v in mapping.items() if k != "unmapped"}
        bad = [k for k, v in mapping.items() if not isinstance(v, str) or not v.strip()]
        if bad:
            raise ConfigError(f"{path}: class map entries must map a class to a class name; bad entries: {bad[:5]}")
        choice = unmapped or data.get("unmapped", "drop")
        if choice not in ("drop", "keep"):
            raise ConfigError(f"{path}: unmapped must be 'drop' or 'keep', got {choice!r}")
        return cls(mapping={str(k): v for k, v in mapping.items()}, unmapped=choice)

    def apply(self, label: str | None) -> str | None:
        """The task class for a source class, or None when the clip is dropped."""
        if label is None:
            return None
        if label in self.mapping:
            return self.mapping[label]
        return label if self.unmapped == "keep" else None


@dataclasses.dataclass
class ImportSummary:
    dataset: str
    dataset_id: int
    layout: str
    found: int = 0
    added: int = 0               # new files recorded: readable + unreadable
    readable: int = 0            # of those, clips that can be trained on
    already_imported: int = 0
    unreadable: int = 0          # of those, files recorded as unreadable with their reason
    session_unreadable: int = 0  # unreadable files in the whole session after this import
    unreadable_reasons: dict[str, int] = dataclasses.field(default_factory=dict)
    unreadable_examples: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    dropped_unmapped: int = 0
    dropped_classes: list[str] = dataclasses.field(default_factory=list)
    per_class_split: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    def lines(self) -> list[str]:
        out = [f"dataset {self.dataset!r} ({self.layout}): {self.found} files found: {self.readable} readable added, "
               f"{self.unreadable} unreadable recorded, {self.already_imported} already imported, "
               f"{self.dropped_unmapped} dropped as unmapped ({self.seconds:.1f} s)"]
        if self.session_unreadable:
            out.append(f"  the session holds {self.session_unreadable} unreadable file(s), kept out of training "
                       "('earmark stats --unreadable' lists them)")
        if self.unreadable_reasons:
            out.append("  unreadable by kind: " + ", ".join(f"{kind} {n}" for kind, n in sorted(self.unreadable_reasons.items(), key=lambda kv: -kv[1])))
        out += [f"    {path}: {reason}" for path, reason in self.unreadable_examples]
        if self.unreadable > len(self.unreadable_examples):
            out.append(f"    ... and {self.unreadable - len(self.unreadable_examples)} more ('earmark stats --unreadable' lists them all)")
        if self.dropped_classes:
            out.append(f"  dropped classes: {', '.join(self.dropped_classes)}")
        out += [f"  warning: {w}" for w in self.warnings]
        return out


def detect_layout(path: Path) -> str:
    if path.is_file():
        return "manifest"
    if (path / "meta" / "esc50.csv").is_file():
        return "esc50"
    if (path / "metadata" / "UrbanSound8K.csv").is_file():
        return "urbansound8k"
    return "folder"


@dataclasses.dataclass
class DiscoveredDataset:
    """A dataset found and checked, before any session is touched: a source that cannot be
    imported fails here, so a failed `earmark import` leaves no session folder behind."""
    name: str
    layout: str
    root: Path                # resolved: every clip must stay under it
    table: pd.DataFrame       # path (relative to root), label, and the optional manifest columns
    class_map: ClassMap | None
    group_pattern: str | None
    dropped_unmapped: int = 0
    dropped_classes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0


def discover_dataset(source: str | Path, *, layout: str = "auto", name: str | None = None,
                     class_map: ClassMap | None = None, root: str | Path | None = None,
                     group_pattern: str | None = None) -> DiscoveredDataset:
    """Find the clips at source and apply the class map; reads no audio and opens no store.

    source is a folder (folder/esc50/urbansound8k layouts) or a manifest file. root is the
    folder clip paths are relative to (default: the folder, or the manifest's folder).
    Raises DatasetImportError when source cannot be imported at all.
    """
    started = time.perf_counter()
    source = Path(source).expanduser()
    if not source.exists():
        raise DatasetImportError(f"nothing to import at {source}: no such file or folder")
    if layout not in (*LAYOUTS, UNLABELLED_LAYOUT):
        raise DatasetImportError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    layout = detect_layout(source) if layout == "auto" else layout
    table = _discover(source, layout, root=Path(root).expanduser() if root else None, group_pattern=group_pattern)
    found = DiscoveredDataset(name=name or (source.stem if source.is_file() else source.name) or "dataset",
                              layout=layout, root=table.attrs["root"], table=table, class_map=class_map,
                              group_pattern=group_pattern)
    if class_map is not None:
        mapped = table["label"].map(class_map.apply)
        dropped = mapped.isna() & table["label"].notna()
        found.dropped_unmapped = int(dropped.sum())
        found.dropped_classes = sorted(table.loc[dropped, "label"].unique())
        found.table = table[~dropped].assign(label=mapped[~dropped])
    found.seconds = time.perf_counter() - started
    return found


def import_dataset(store: Store, source: str | Path, *, layout: str = "auto", name: str | None = None,
                   class_map: ClassMap | None = None, root: str | Path | None = None,
                   group_pattern: str | None = None, seed: int = 0,
                   probe_mode: Literal["auto", "full", "manifest"] = "auto",
                   workers: int = 4, progress: bool = True) -> ImportSummary:
    """Import the dataset at source into the session store; idempotent.

    discover_dataset, then import_discovered: see them for the options.
    """
    found = discover_dataset(source, layout=layout, name=name, class_map=class_map, root=root, group_pattern=group_pattern)
    return import_discovered(store, found, seed=seed, probe_mode=probe_mode, workers=workers, progress=progress)


def import_discovered(store: Store, found: DiscoveredDataset, *, seed: int = 0,
                      probe_mode: Literal["auto", "full", "manifest"] = "auto",
                      workers: int = 4, progress: bool = True, split: str | None = None,
                      min_sample_rate_hz: int | None = None, options: dict | None = None) -> ImportSummary:
    """Probe the discovered clips that are new to the session, split them, and store them.

    probe_mode "manifest" trusts duration/sample-rate columns of a manifest and only checks
    each file exists (fast, for huge manifests); "full" reads every file; "auto" picks
    "manifest" when those columns are present. split puts every clip in that split instead of
    the dataset's own or a 60/20/20 one (the inbox's "unlabelled"). A file probed below
    min_sample_rate_hz is recorded unreadable: upsampled, it lacks the band the model heard.
    options are kept on the dataset beside the import's own (the inbox's split assignment).
    """
    started = time.perf_counter()
    summary = ImportSummary(dataset=found.name, dataset_id=-1, layout=found.layout,
                            found=len(found.table) + found.dropped_unmapped,
                            dropped_unmapped=found.dropped_unmapped, dropped_classes=found.dropped_classes)
    class_map = None if found.class_map is None else dataclasses.asdict(found.class_map)
    dataset_id = store.add_dataset(name=found.name, root=found.root, layout=found.layout, class_map=class_map,
                                   options={"group_pattern": found.group_pattern, "seed": seed, **(options or {})})
    summary.dataset_id = dataset_id
    known = store.existing_paths(dataset_id)
    table = found.table
    is_new = ~table["path"].isin(known)
    summary.already_imported = int((~is_new).sum())
    table = table[is_new].reset_index(drop=True)

    if probe_mode == "auto":
        has_meta = {"duration_s", "sample_rate_hz"} <= set(table.columns) and table[["duration_s", "sample_rate_hz"]].notna().all().all()
        probe_mode = "manifest" if found.layout == "manifest" and has_meta else "full"
    table = _probe_all(table, found.root, mode=probe_mode, workers=workers, progress=progress)
    if min_sample_rate_hz is not None:
        table = _refuse_low_rates(table, min_sample_rate_hz)
    table, split_warnings = _assign_splits(table, seed=seed) if split is None else (table.assign(split=split), [])
    summary.warnings += split_warnings + table.attrs.get("warnings", [])

    summary.added = store.add_clips(dataset_id, _to_clip_rows(table))
    bad = table[table["status"] != "ok"]
    summary.unreadable = len(bad)
    summary.readable = summary.added - summary.unreadable
    summary.session_unreadable = len(store.clips(status="unreadable"))
    summary.unreadable_reasons = dict(Counter(r.split(":")[0] for r in bad["reason"]))
    summary.unreadable_examples = list(zip(bad["path"].head(10), bad["reason"].head(10)))
    ok = table[table["status"] == "ok"]
    for (label, split), n in ok.groupby(["label", "split"], dropna=False).size().items():
        summary.per_class_split.setdefault(str(label), {})[str(split)] = int(n)
    summary.seconds = found.seconds + time.perf_counter() - started
    return summary


# --- discovery per layout ---------------------------------------------------------------

def _discover(source: Path, layout: str, *, root: Path | None, group_pattern: str | None) -> pd.DataFrame:
    if layout in BENCHMARK_LAYOUTS:
        table = _discover_benchmark(source, BENCHMARK_LAYOUTS[layout])
    elif layout == "folder":
        table = _discover_folder(source)
    elif layout == UNLABELLED_LAYOUT:
        table = _discover_unlabelled(source)
    else:
        table = _discover_manifest(source, root=root)
    if group_pattern:
        try:
            pattern = re.compile(group_pattern)
        except re.error as exc:
            raise DatasetImportError(f"group pattern {group_pattern!r} is not a valid regular expression: {exc}") from None
        stems = table["path"].map(lambda p: Path(p).stem)
        groups = stems.map(lambda s: (m.group(1) if m.groups() else m.group(0)) if (m := pattern.search(s)) else None)
        table["group"] = groups.fillna(table.get("group", stems))
    if "group" not in table.columns or table["group"].isna().all():
        # No recording/speaker/source information: each file is its own group.
        table["group"] = table["path"]
    table["group"] = table["group"].fillna(table["path"]).astype(str)
    return table


def _discover_folder(source: Path) -> pd.DataFrame:
    if not source.is_dir():
        raise DatasetImportError(f"folder layout needs a folder, got the file {source}")
    rows = []
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(class_dir.rglob("*")):
            if path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith("."):
                rows.append({"path": path.relative_to(source).as_posix(), "label": class_dir.name})
    if not rows:
        raise DatasetImportError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) in class sub-folders of {source}")
    table = pd.DataFrame(rows)
    table.attrs["root"] = source.resolve()
    return table


def _discover_unlabelled(source: Path) -> pd.DataFrame:
    """Every audio file under source, at any depth, with no label."""
    if not source.is_dir():
        raise DatasetImportError(f"unlabelled audio is added from a folder, got the file {source}")
    paths = sorted(path.relative_to(source).as_posix() for path in source.rglob("*")
                   if path.suffix.lower() in AUDIO_SUFFIXES and not path.name.startswith("."))
    if not paths:
        raise DatasetImportError(f"no audio files ({', '.join(sorted(AUDIO_SUFFIXES))}) under {source}")
    table = pd.DataFrame({"path": paths, "label": pd.Series([None] * len(paths), dtype="string")})
    table.attrs["root"] = source.resolve()
    return table


def _read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        if path.suffix.lower() in (".csv", ".tsv", ".txt"):
            return pd.read_csv(path, sep=None, engine="python") if path.suffix.lower() != ".csv" else pd.read_csv(path)
    except Exception as exc:  # pandas raises many types for malformed files
        raise DatasetImportError(f"cannot read manifest {path}: {exc}") from None
    raise DatasetImportError(f"manifest must be .csv, .tsv or .parquet, got {path.name}")


def _discover_manifest(source: Path, *, root: Path | None) -> pd.DataFrame:
    if not source.is_file():
        raise DatasetImportError(f"manifest layout needs a CSV or Parquet file, got the folder {source}")
    raw = _read_table(source)
    lowered = {c.lower().strip(): c for c in raw.columns}
    rename = {}
    for canonical, aliases in MANIFEST_ALIASES.items():
        found = next((lowered[a] for a in aliases if a in lowered), None)
        if found is not None:
            rename[found] = canonical
    table = raw.rename(columns=rename)
    if "path" not in table.columns:
        raise DatasetImportError(f"manifest {source.name} needs a path column (one of {', '.join(MANIFEST_ALIASES['path'])}); "
                           f"it has {', '.join(map(str, raw.columns))}")
    if "label" not in table.columns:
        raise DatasetImportError(f"manifest {source.name} needs a label column (one of {', '.join(MANIFEST_ALIASES['label'])})")
    extra = [c for c in table.columns if c not in MANIFEST_ALIASES]
    table["metadata"] = _metadata_json(table[extra]) if extra else None
    root = (root or source.parent).resolve()
    table["path"] = table["path"].astype(str).map(lambda p: _relative_to_root(p, root))
    table = table[[c for c in (*MANIFEST_ALIASES, "metadata") if c in table.columns]].copy()
    table["label"] = table["label"].astype("string").str.strip()
    table.attrs["root"] = root
    return table


@dataclasses.dataclass(frozen=True)
class BenchmarkLayout:
    """A public benchmark's metadata table: where it is, its columns, and how folds map to splits."""
    meta: str                 # metadata CSV, relative to the dataset folder
    file_column: str
    label_column: str
    group_column: str         # recording / source file: clips of one source stay in one split
    audio_folder: str         # prefix of the audio path; {fold} is filled per row
    fold_splits: dict[int, str]


BENCHMARK_LAYOUTS = {
    "esc50": BenchmarkLayout("meta/esc50.csv", "filename", "category", "src_file", "audio/", ESC50_FOLD_SPLITS),
    "urbansound8k": BenchmarkLayout("metadata/UrbanSound8K.csv", "slice_file_name", "class", "fsID", "audio/fold{fold}/",
                                    US8K_FOLD_SPLITS),
}


def _discover_benchmark(source: Path, layout: BenchmarkLayout) -> pd.DataFrame:
    meta = _read_table(source / layout.meta)
    _require_columns(meta, (layout.file_column, "fold", layout.label_column), layout.meta)
    folds = meta["fold"].astype(int)
    folders = folds.map(lambda fold: layout.audio_folder.format(fold=fold))
    table = pd.DataFrame({
        "path": folders + meta[layout.file_column].astype(str),
        "label": meta[layout.label_column].astype(str),
        "fold": folds.astype(str),
        "group": meta[layout.group_column].astype(str) if layout.group_column in meta else None,
        "split": folds.map(layout.fold_splits),
    })
    extra = [c for c in meta.columns if c not in (layout.file_column, "fold", layout.label_column)]
    table["metadata"] = _metadata_json(meta[extra])
    table.attrs["root"] = source.resolve()
    return table


def _require_columns(frame: pd.DataFrame, columns: tuple[str, ...], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DatasetImportError(f"{name} is missing columns {missing}")


def _metadata_json(frame: pd.DataFrame) -> list[str | None]:
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [json.dumps(r, default=str) if r else None for r in records]


def _relative_to_root(path: str, root: Path) -> str:
    candidate = Path(path)
    if candidate.is_absolute():
        try:
            return candidate.resolve().relative_to(root).as_posix()
        except ValueError:
            return path  # kept as given; probing marks it as outside the root
    return candidate.as_posix()


# --- probing and splits ---------------------------------------------------------------

def _probe_all(table: pd.DataFrame, root: Path, *, mode: str, workers: int, progress: bool) -> pd.DataFrame:
    """Fill status/reason/duration/sample rate/channels for every row."""
    table = table.copy()
    for column in ("duration_s", "sample_rate_hz", "channels"):
        if column not in table.columns:
            table[column] = np.nan
    paths = table["path"].tolist()

    def check(relative: str):
        full = (root / relative)
        outside = _outside_root(root, relative)
        if outside:
            return ("unreadable", outside, None, None, None)
        if mode == "manifest":
            return ("ok", None, None, None, None) if full.is_file() else ("unreadable", f"missing: no file at {full}", None, None, None)
        result = probe(full)
        return (result.status, result.reason, result.duration_s, result.sample_rate_hz, result.channels)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(tqdm(pool.map(check, paths, chunksize=64 if mode == "manifest" else 4), total=len(paths),
                            desc="probing" if mode == "full" else "checking files", unit="file", disable=not progress))
    status, reason, duration, rate, channels = zip(*results) if results else ((), (), (), (), ())
    table["status"] = list(status)
    table["reason"] = list(reason)
    if mode == "full":
        table["duration_s"] = pd.to_numeric(pd.Series(duration, index=table.index, dtype="float64"))
        table["sample_rate_hz"] = pd.Series(rate, index=table.index, dtype="Int64")
        table["channels"] = pd.Series(channels, index=table.index, dtype="Int64")
    return table


def _refuse_low_rates(table: pd.DataFrame, min_rate_hz: int) -> pd.DataFrame:
    """Readable files sampled below min_rate_hz become unreadable, with the rates in the reason."""
    rates = pd.to_numeric(table["sample_rate_hz"], errors="coerce")
    low = (table["status"] == "ok") & (rates < min_rate_hz)
    table = table.copy()
    table.loc[low, "status"] = "unreadable"
    table.loc[low, "reason"] = [f"odd sample rate: {int(rate)} Hz, below the {min_rate_hz} Hz of the session's "
                                "labelled clips (upsampled audio lacks the band the model was trained on)"
                                for rate in rates[low]]
    return table


def _outside_root(root: Path, relative: str) -> str | None:
    """Why a clip path is not under the (resolved) dataset root, or None when it is.

    The path is resolved, so a symlink inside the root that points out of it (the file, or a
    folder on its way) is refused like a path with "..": nothing outside the root is read.
    """
    path = Path(relative)
    if path.is_absolute() or ".." in path.parts:
        return f"outside the dataset root: {relative} is not under {root}"
    target = (root / path).resolve()
    if not target.is_relative_to(root):
        return f"outside the dataset root: {relative} is a symlink to {target}, not under {root}"
    return None


def _normalise_split(value) -> str | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    return SPLIT_ALIASES.get(str(value).strip().lower(), "?" + str(value))


def _assign_splits(table: pd.DataFrame, *, seed: int) -> tuple[pd.DataFrame, list[str]]:
    """Keep the dataset's own splits; fill the rest with a seeded, stratified 60/20/20 split
    grouped by source group, so no group lands in two splits."""
    warnings: list[str] = []
    table = table.copy()
    given = table["split"].map(_normalise_split) if "split" in table.columns else pd.Series(None, index=table.index, dtype=object)
    unknown = sorted({s[1:] for s in given.dropna() if s.startswith("?")})
    if unknown:
        warnings.append(f"unknown split names {unknown} were ignored and re-assigned (use train/val/test)")
        given = given.map(lambda s: None if isinstance(s, str) and s.startswith("?") else s)
    table["split"] = given

    # Groups already placed by the dataset keep their split for any of their unplaced clips.
    placed = table.dropna(subset=["split"]).groupby("group")["split"].agg(lambda s: s.mode().iloc[0])
    leaking = table.dropna(subset=["split"]).groupby("group")["split"].nunique()
    if (leaking > 1).any():
        warnings.append(f"{int((leaking > 1).sum())} source groups appear in more than one of the dataset's own splits "
                        "(kept as given; evaluation may be optimistic)")
    missing = table["split"].isna()
    table.loc[missing, "split"] = table.loc[missing, "group"].map(placed)
    missing = table["split"].isna()
    if missing.any():
        table.loc[missing, "split"] = _grouped_split(table.loc[missing], seed=seed, warnings=warnings)
    return table, warnings


def _grouped_split(rows: pd.DataFrame, *, seed: int, warnings: list[str]) -> np.ndarray:
    """60/20/20 by group, stratified by label: five group folds -> 3 train, 1 val, 1 test.

    When a class has fewer than five clips, stratifying is impossible; the groups are then
    split without stratification (still seeded and leak-free), with a warning."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold  # deferred: seconds of import time
    groups = rows["group"].to_numpy()
    labels = rows["label"].fillna("?").astype(str).to_numpy()
    n_groups = len(set(groups))
    if n_groups < 5:
        warnings.append(f"only {n_groups} source groups: too few for a 60/20/20 split, all go to train")
        return np.full(len(rows), "train", dtype=object)
    if pd.Series(labels).value_counts().min() >= 5:
        splitter = StratifiedGroupKFold(n_splits=5, shuffle=True, random_state=seed)
    else:
        warnings.append("some classes have fewer than 5 clips: the 60/20/20 split is grouped but not stratified")
        splitter = GroupKFold(n_splits=5, shuffle=True, random_state=seed)
    fold_of = np.empty(len(rows), dtype=int)
    for fold, (_, test_index) in enumerate(splitter.split(np.zeros(len(rows)), labels, groups)):
        fold_of[test_index] = fold
    names = np.array(["train", "train", "train", "val", "test"], dtype=object)
    return names[fold_of]


def _to_clip_rows(table: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({
        "path": table["path"].astype(str),
        "duration_s": pd.to_numeric(table.get("duration_s"), errors="coerce"),
        "sample_rate_hz": pd.to_numeric(table.get("sample_rate_hz"), errors="coerce").astype("Int64"),
        "channels": pd.to_numeric(table.get("channels"), errors="coerce").astype("Int64"),
        "split": table["split"].astype("string"),
        "fold": table["fold"].astype("string") if "fold" in table.columns else None,
        "source_group": table["group"].astype("string"),
        "original_label": table["label"].astype("string"),
        "status": table["status"],
        "reason": table["reason"],
        "metadata": table["metadata"] if "metadata" in table.columns else None,
    })
    return out
