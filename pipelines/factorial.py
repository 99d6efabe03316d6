"""The factorial builder (B7): SPEECH and NONSPEECH clips at every duration x SNR cell, split by source.

    summary = build_factorial(speech=["speech/"], nonspeech=["esc50/"], noise_bank="musan/",
                              out_dir="factorial/", session="sessions/speech")

Clips are cut from the sources where they are active (pipelines/factorial_windows.py), mixed
with a MUSAN-layout noise bank's background at the cell's exact SNR and peak-normalised
(pipelines/factorial_render.py); whole source files and speakers go to one split
(pipelines/factorial_sources.py). `out_dir` gets `audio/<label>/*.wav`, `manifest.csv` (what a
session imports: `duration_ms`, `snr_db`, `source_file`, `speaker`, `source_label` and
`noise_category` become clip metadata, so every run's breakdowns cover them), `provenance.csv`
(each clip's source window and background stretch) and, written last, `factorial.json` (the
config, the sources and a fingerprint of their files).

Every refusal (a source without audio, a bank without the MUSAN folders, a source sampled below
the output rate, a cell that cannot be filled) comes before anything is written; the build is
written into a temporary folder moved into place at the end. Run again with the same sources
and options, it reuses the build and imports only what the session lacks.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from core.audio import load
from core.augment.noise_bank import CATEGORIES, NoiseBank
from core.store import Store
from pipelines.factorial_config import NONSPEECH, SPEECH, FactorialConfig
from pipelines.factorial_plan import MANIFEST_COLUMNS, PROVENANCE_COLUMNS, count_table, plan_clips
from pipelines.factorial_render import write_clips
from pipelines.factorial_sources import FactorialError, Source, assign_splits, read_sources
from pipelines.factorial_windows import find_windows
from pipelines.importing import ImportSummary, import_dataset

__all__ = ["FactorialSummary", "build_factorial", "import_factorial", "open_bank", "open_writer", "read_plan"]

MANIFEST_NAME, PROVENANCE_NAME, STAMP_NAME = "manifest.csv", "provenance.csv", "factorial.json"
STAMP_VERSION = 1  # bump whenever the same inputs would build different clips


@dataclasses.dataclass
class FactorialSummary:
    out_dir: Path
    clips: int
    reused: bool
    table: list[str]
    skipped: dict[str, str]
    seconds: float
    imported: ImportSummary | None = None

    def lines(self) -> list[str]:
        how = "reused (built before from these sources and options)" if self.reused else f"built in {self.seconds:.1f} s"
        out = [f"factorial set in {self.out_dir}: {self.clips} clips, {how}", *self.table]
        if self.skipped:
            out.append(f"  {len(self.skipped)} unreadable source file(s) left out, e.g. "
                       + "; ".join(f"{path}: {why}" for path, why in list(self.skipped.items())[:3]))
        return out + (self.imported.lines() if self.imported else [])


def build_factorial(*, speech: Sequence[str | Path], nonspeech: Sequence[str | Path], noise_bank: str | Path,
                    out_dir: str | Path, config: FactorialConfig | None = None, session: str | Path | None = None,
                    store: Store | None = None, progress: bool = False) -> FactorialSummary:
    """Build (or reuse) the factorial set in out_dir and, given a session folder or an open store,
    import it. speech / nonspeech: folders or manifests; noise_bank: a folder with music/,
    speech/ and noise/. Raises FactorialError (one line, nothing written) for bad input."""
    started = time.perf_counter()
    config = config or FactorialConfig()
    if not isinstance(config, FactorialConfig):
        raise ValueError(f"config: expected a FactorialConfig, got {type(config).__name__}")
    bank = open_bank(noise_bank, config=config)
    sources, skipped = [], {}
    for label, specs in ((SPEECH, speech), (NONSPEECH, nonspeech)):
        found, unreadable = read_sources(_specs(label, specs), label=label, sample_rate_hz=config.sample_rate_hz)
        sources, skipped = sources + found, skipped | unreadable
    out_dir = Path(out_dir).expanduser()
    stamp = _stamp(config, sources, bank)
    plan = read_plan(out_dir) if _is_complete(out_dir, stamp) else None
    reused = plan is not None
    if plan is None:
        plan = _plan(sources, bank, config, progress=progress)
        _write(plan, out_dir, stamp=stamp, bank=bank, config=config, progress=progress)
    summary = FactorialSummary(out_dir=out_dir, clips=len(plan), reused=reused, table=count_table(plan),
                               skipped=skipped, seconds=time.perf_counter() - started)
    if store is not None or session is not None:
        with open_writer(store=store, session=session) as writer:
            summary.imported = import_factorial(writer, out_dir, seed=config.seed, progress=progress)
    return summary


def import_factorial(store: Store, out_dir: str | Path, *, seed: int = 0, progress: bool = False) -> ImportSummary:
    """Import a built factorial set (its manifest keeps the builder's splits and groups)."""
    out_dir = Path(out_dir)
    return import_dataset(store, out_dir / MANIFEST_NAME, layout="manifest", name=out_dir.name, seed=seed,
                          progress=progress)


def read_plan(out_dir: str | Path) -> pd.DataFrame:
    """A built set's manifest joined with its provenance: one row per clip, as planned."""
    out_dir = Path(out_dir)
    manifest = pd.read_csv(out_dir / MANIFEST_NAME, dtype={"speaker": "string"})
    provenance = pd.read_csv(out_dir / PROVENANCE_NAME)
    return manifest.merge(provenance.drop(columns=["duration_ms", "snr_db"]), on="path", validate="one_to_one")


def open_bank(folder: str | Path, *, config: FactorialConfig) -> NoiseBank:
    """The noise bank, refused in one line when it lacks a MUSAN sub-folder or holds no audio
    in a category the config mixes in."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FactorialError(f"noise bank {folder}: no such folder (expected one in MUSAN layout with "
                             f"{', '.join(c + '/' for c in CATEGORIES)})")
    missing = [c + "/" for c in CATEGORIES if not (folder / c).is_dir()]
    if missing:
        raise FactorialError(f"noise bank {folder} lacks the MUSAN sub-folder(s) {', '.join(missing)} "
                             f"(it needs {', '.join(c + '/' for c in CATEGORIES)})")
    bank = NoiseBank(folder, sample_rate_hz=config.sample_rate_hz)
    empty = sorted({*config.speech_background, *config.nonspeech_background} - set(bank.files))
    if empty:
        raise FactorialError(f"noise bank {folder}: {', '.join(c + '/' for c in empty)} holds no readable audio, "
                             "but speech_background / nonspeech_background mix it in")
    return bank


def _specs(label: str, specs: Sequence[str | Path]) -> list[Path]:
    if isinstance(specs, (str, Path)) or not specs:
        raise ValueError(f"{label.lower()}: expected a non-empty list of folders or manifests, got {specs!r}")
    return [Path(spec).expanduser() for spec in specs]


def _plan(sources: list[Source], bank: NoiseBank, config: FactorialConfig, *, progress: bool) -> pd.DataFrame:
    """Find every source's windows (loading it once), split the sources, draw the clips."""
    windows = [find_windows(load(source.path, sample_rate_hz=config.sample_rate_hz), label=source.label,
                            config=config)
               for source in tqdm(sources, desc="finding windows in sources", unit="file", disable=not progress)]
    splits, groups = assign_splits(sources, [w.active_s for w in windows], seed=config.seed)
    return plan_clips(sources, windows, splits, groups, bank=bank, config=config)


def _write(plan: pd.DataFrame, out_dir: Path, *, stamp: dict, bank: NoiseBank, config: FactorialConfig,
           progress: bool) -> None:
    """Everything into a temporary folder beside out_dir, moved into place once complete."""
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise FactorialError(f"{out_dir} already holds files that are not a build of these sources and options: "
                             "choose another output folder or remove it")
    anchor = next(p for p in out_dir.absolute().parents if p.is_dir())  # the temporary folder's file system
    partial = anchor / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        plan = write_clips(plan, partial, bank=bank, sample_rate_hz=config.sample_rate_hz,
                           peak_dbfs=config.peak_dbfs, progress=progress)
        plan[list(MANIFEST_COLUMNS)].to_csv(partial / MANIFEST_NAME, index=False)
        plan[list(PROVENANCE_COLUMNS)].to_csv(partial / PROVENANCE_NAME, index=False)
        stamp = dict(stamp, n_clips=len(plan), manifest_sha256=_sha256(partial / MANIFEST_NAME))
        (partial / STAMP_NAME).write_text(json.dumps(stamp, indent=2))
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        if out_dir.is_dir():
            out_dir.rmdir()  # empty: checked above
        partial.rename(out_dir)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _stamp(config: FactorialConfig, sources: list[Source], bank: NoiseBank) -> dict:
    """What a build is made from: the config, and every source and bank file with its size and time."""
    files = [(source.label, source.path) for source in sources]
    files += [("bank", bank.folder / f) for names in bank.files.values() for f in names]
    listing = "\n".join(f"{role}\t{path}\t{path.stat().st_size}\t{path.stat().st_mtime_ns}" for role, path in files)
    return {"version": STAMP_VERSION, "config": config.to_dict(), "noise_bank": str(bank.folder),
            "files_sha256": hashlib.sha256(listing.encode()).hexdigest()}


def _is_complete(out_dir: Path, stamp: dict) -> bool:
    try:
        found = json.loads((out_dir / STAMP_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if {key: found.get(key) for key in stamp} != stamp or not (out_dir / PROVENANCE_NAME).is_file():
        return False
    if found.get("manifest_sha256") != _sha256(out_dir / MANIFEST_NAME):
        return False
    paths = pd.read_csv(out_dir / MANIFEST_NAME, usecols=["path"])["path"]
    return len(paths) == found.get("n_clips") and all((out_dir / p).is_file() for p in paths)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""


@contextlib.contextmanager
def open_writer(*, store: Store | None, session: str | Path | None) -> Iterator[Store]:
    """The given store (the writer process's), or the session folder's, opened and closed after."""
    if store is not None:
        yield store
        return
    with Store.open(session) as own:
        yield own
