"""Synthetic six-class demo dataset for the sirens plan (SEEDS A), with planted label errors.

This module plans the dataset and writes it; pipelines/demo_signals.py synthesises each clip from
physical recipes, so a classifier has something real to learn and the audit has something real
to find. Clips come in recording sessions (`group`) that share a
background, SNR range, reverb and channel; splits are drawn per session, stratified by class.

About 6 % of the GIVEN labels are wrong on purpose, in every split, along plan A's confusions:
true sirens given alert/environmental/collision, beeps/impacts/tonal drones given siren. In each
split at least `MIN_WRONG_SIREN_FRACTION` of the clips given `emergency_sirens` are not sirens,
so a perfect model scored against the given labels stays below the 0.95 siren target until
those clips are relabelled (A1-A3).

Output: `out_dir/audio/<given_label>/<clip>.wav` (mono, 16-bit PCM), `out_dir/manifest.csv`
and, written last, `out_dir/demo_stamp.json`; a call that finds a matching stamp skips the work.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf
from tqdm import tqdm

from core.config import check_range
from pipelines.demo_signals import (ALERT, CLASSES, COLLISION, ENVIRONMENT, SCREAM, SIRENS, TONAL_DRONE, TRAFFIC,
                                     render_clip)

__all__ = ["ANSWER_KEY_COLUMNS", "CLASSES", "KINDS", "MANIFEST_COLUMNS", "TONAL_DRONE", "plan_demo_manifest", "synthesize_demo_dataset"]

log = logging.getLogger(__name__)

MANIFEST_COLUMNS = ("path", "label", "split", "group", "true_label", "kind", "snr_db",
                    "duration_s", "label_error")
# The answer key the demo plants beside each clip (what it really is, whether its label is
# wrong, which synthesised sound it is): used to score runs, never shown or broken down.
ANSWER_KEY_COLUMNS = ("true_label", "label_error", "kind")
SPLIT_FRACTIONS = {"train": 0.6, "val": 0.2, "test": 0.2}
LABEL_ERROR_RATE = 0.06
MIN_WRONG_SIREN_FRACTION = 0.15  # share of clips GIVEN emergency_sirens that are not sirens, per split
STAMP_NAME = "demo_stamp.json"
MANIFEST_NAME = "manifest.csv"
SYNTH_VERSION = 1  # bump whenever the synthesis changes, so older demo folders are rebuilt

DURATION_RANGE_S = (3.0, 10.0)  # the default; a shorter range makes a quicker demo (the tests')
DURATION_LIMITS_S = (1.0, 30.0)
SESSION_SIZE_RANGE = (3, 6)

# Sub-types per class; a session mostly records its own family.
KINDS = {
    SIRENS: ("wail", "yelp", "hilo", "burst"),
    COLLISION: ("metal", "glass"),
    ALERT: ("beep", "chirp"),
    TRAFFIC: ("flow", "passby", "idle"),
    SCREAM: ("single", "repeated"),
    ENVIRONMENT: ("rain", "wind", "birds", "insects"),
}
SESSION_FAMILY_SHARE = 0.75
# Which background a session of each class is recorded over (probabilities), and its SNR range (dB).
SESSION_BACKGROUNDS = {
    SIRENS: {"traffic": 1.0},
    COLLISION: {"traffic": 0.7, "room": 0.3},
    ALERT: {"room": 0.6, "traffic": 0.4},
    TRAFFIC: {"none": 1.0},
    SCREAM: {"room": 0.4, "outdoor": 0.3, "traffic": 0.3},
    ENVIRONMENT: {"outdoor": 1.0},
}
SNR_RANGE_DB = {SIRENS: (0.0, 20.0), COLLISION: (5.0, 20.0), ALERT: (5.0, 25.0),
                SCREAM: (5.0, 25.0), ENVIRONMENT: (8.0, 25.0)}
FOREGROUND_ONLY_KINDS = {"rain", "wind"} | set(KINDS[TRAFFIC])  # these ARE background textures


@dataclasses.dataclass(frozen=True)
class _ErrorType:
    """One planted confusion: a clip of `true_label` (one of `kinds`) given `given_label`."""
    true_label: str
    given_label: str
    kinds: tuple[str, ...]
    new_kind: str | None = None  # the clip is re-synthesised as this kind (tonal drones)


# Errors that put non-sirens into the siren label, then sirens hidden in other labels (A3).
INTO_SIRENS = (
    _ErrorType(ALERT, SIRENS, KINDS[ALERT]),
    _ErrorType(ENVIRONMENT, SIRENS, KINDS[ENVIRONMENT], new_kind=TONAL_DRONE),
    _ErrorType(COLLISION, SIRENS, KINDS[COLLISION]),
)
OUT_OF_SIRENS = (
    _ErrorType(SIRENS, ALERT, KINDS[SIRENS]),
    _ErrorType(SIRENS, ENVIRONMENT, KINDS[SIRENS]),
    _ErrorType(SIRENS, COLLISION, KINDS[SIRENS]),
)


@dataclasses.dataclass(frozen=True)
class _Session:
    """A simulated recording session: the shared character of the clips in one group."""
    group: str
    true_label: str
    family: str
    n_clips: int
    background: str
    snr_range_db: tuple[float, float] | None
    rt60_s: float
    reverb_wet: float
    channel_band_hz: tuple[float, float]
    peak_range: tuple[float, float]
    split: str = ""


@dataclasses.dataclass(frozen=True)
class _Clip:
    """Everything needed to render one clip; `entropy` seeds its own generator."""
    name: str
    session: _Session
    kind: str
    given_label: str
    duration_s: float
    snr_db: float | None
    peak: float
    entropy: tuple[int, ...]

    @property
    def path(self) -> str:
        return f"audio/{self.given_label}/{self.name}.wav"

    @property
    def label_error(self) -> bool:
        return self.given_label != self.session.true_label


# --- public entry point ------------------------------------------------------------------

def synthesize_demo_dataset(out_dir: Path, *, seed: int = 0, clips_per_class: int = 100,
                            sample_rate_hz: int = 16000, workers: int = 2,
                            progress: bool = True,
                            duration_range_s: tuple[float, float] = DURATION_RANGE_S) -> pd.DataFrame:
    """Build (or reuse) the demo dataset under `out_dir` and return its manifest.

    clips_per_class: true clips per class (10..10000); given labels stay within a few clips
    of it. sample_rate_hz: 16000..48000. workers: processes rendering clips (1 = in-process).
    duration_range_s: (shortest, longest) clip in seconds, within 1..30; the plan (sessions,
    splits, planted errors) is the same for every range, only the clips' lengths change.
    The manifest has MANIFEST_COLUMNS: `path` relative to out_dir, `label` the given (possibly
    wrong) label, `snr_db` NaN where the clip has no added background. Same arguments give
    byte-identical WAVs and manifest; a folder already holding them is returned unchanged.
    With workers > 1 clips render in spawned processes, so a calling script needs the usual
    `if __name__ == "__main__":` guard.
    """
    out_dir = Path(out_dir)
    _check_int("seed", seed, low=0, high=2**63 - 1)
    _check_int("clips_per_class", clips_per_class, low=10, high=10000)
    _check_int("sample_rate_hz", sample_rate_hz, low=16000, high=48000)
    _check_int("workers", workers, low=1, high=256)
    duration_range_s = _check_durations(duration_range_s)
    if not isinstance(progress, bool):
        raise ValueError(f"progress: expected True or False, got {progress!r}")
    stamp = {"synth_version": SYNTH_VERSION, "seed": seed, "clips_per_class": clips_per_class,
             "sample_rate_hz": sample_rate_hz, "duration_range_s": list(duration_range_s)}
    if _is_complete(out_dir, stamp):
        log.info("demo dataset in %s is complete for %s; skipping synthesis", out_dir, stamp)
        return _read_manifest(out_dir / MANIFEST_NAME)
    return _build(out_dir, stamp, workers=workers, progress=progress)


def plan_demo_manifest(*, seed: int = 0, clips_per_class: int = 100,
                       duration_range_s: tuple[float, float] = DURATION_RANGE_S) -> pd.DataFrame:
    """The manifest `synthesize_demo_dataset` would write for these arguments, without audio
    (milliseconds: use it to inspect splits and planted errors)."""
    _check_int("seed", seed, low=0, high=2**63 - 1)
    _check_int("clips_per_class", clips_per_class, low=10, high=10000)
    duration_range_s = _check_durations(duration_range_s)
    return _manifest_frame(_plan_dataset(seed=seed, clips_per_class=clips_per_class, duration_range_s=duration_range_s))


def _check_int(name: str, value: object, *, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
    check_range(name, value, low=low, high=high)


def _check_durations(value: object) -> tuple[float, float]:
    low, high = DURATION_LIMITS_S
    try:
        shortest, longest = (float(v) for v in value)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"duration_range_s: expected (shortest, longest) in seconds, got {value!r}") from None
    if not low <= shortest <= longest <= high:
        raise ValueError(f"duration_range_s: expected {low:g} <= shortest <= longest <= {high:g} s, got {value!r}")
    return shortest, longest


def _build(out_dir: Path, stamp: dict, *, workers: int, progress: bool) -> pd.DataFrame:
    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    clips = _plan_dataset(seed=stamp["seed"], clips_per_class=stamp["clips_per_class"],
                          duration_range_s=tuple(stamp["duration_range_s"]))
    _remove_stale_audio(out_dir, keep={clip.path for clip in clips})
    for label in CLASSES:
        (out_dir / "audio" / label).mkdir(parents=True, exist_ok=True)
    _render_all(clips, out_dir, sample_rate_hz=stamp["sample_rate_hz"], workers=workers,
                progress=progress)
    manifest_path = out_dir / MANIFEST_NAME
    _manifest_frame(clips).to_csv(manifest_path, index=False)
    stamp = dict(stamp, n_clips=len(clips), manifest_sha256=_sha256(manifest_path))
    (out_dir / STAMP_NAME).write_text(json.dumps(stamp, indent=2, sort_keys=True))
    return _read_manifest(manifest_path)


def _render_all(clips: list[_Clip], out_dir: Path, *, sample_rate_hz: int, workers: int,
                progress: bool) -> None:
    jobs = [(clip, out_dir / clip.path, sample_rate_hz) for clip in clips]
    bar = tqdm(total=len(jobs), desc="synthesising demo clips", unit="clip", disable=not progress)
    with bar:
        if workers == 1:
            for job in jobs:
                _write_clip(job)
                bar.update()
            return
        # spawn, not fork: the caller may be a threaded server (Gradio) or hold torch threads.
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for _ in pool.map(_write_clip, jobs, chunksize=4):
                bar.update()


def _write_clip(job: tuple[_Clip, Path, int]) -> None:
    clip, path, sample_rate_hz = job
    pcm = np.round(render_clip(clip, sample_rate_hz) * 32767).astype(np.int16)
    sf.write(path, pcm, sample_rate_hz, subtype="PCM_16", format="WAV")


# --- the stamp: skip work that is already done ----------------------------------------------

def _is_complete(out_dir: Path, stamp: dict) -> bool:
    stamp_path, manifest_path = out_dir / STAMP_NAME, out_dir / MANIFEST_NAME
    if not (stamp_path.is_file() and manifest_path.is_file()):
        return False
    try:
        found = json.loads(stamp_path.read_text())
    except json.JSONDecodeError:
        return False
    found.setdefault("duration_range_s", list(DURATION_RANGE_S))  # stamps written before the option
    if {k: found.get(k) for k in stamp} != stamp or found.get("manifest_sha256") != _sha256(manifest_path):
        return False
    paths = pd.read_csv(manifest_path, usecols=["path"])["path"]
    return len(paths) == found.get("n_clips") and all((out_dir / p).is_file() for p in paths)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _remove_stale_audio(out_dir: Path, *, keep: set[str]) -> None:
    """Delete demo WAVs a previous build left that the new manifest does not list."""
    for label in CLASSES:
        for wav in (out_dir / "audio" / label).glob("*.wav"):
            if wav.relative_to(out_dir).as_posix() not in keep:
                wav.unlink()


def _manifest_frame(clips: list[_Clip]) -> pd.DataFrame:
    rows = [{"path": c.path, "label": c.given_label, "split": c.session.split,
             "group": c.session.group, "true_label": c.session.true_label, "kind": c.kind,
             "snr_db": None if c.snr_db is None else round(c.snr_db, 2),
             "duration_s": c.duration_s, "label_error": c.label_error}
            for c in sorted(clips, key=lambda c: c.name)]
    return pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))


def _read_manifest(path: Path) -> pd.DataFrame:
    text_columns = ["path", "label", "split", "group", "true_label", "kind"]
    frame = pd.read_csv(path, dtype={**{c: str for c in text_columns}, "snr_db": float,
                                     "duration_s": float, "label_error": bool})
    return frame[list(MANIFEST_COLUMNS)]


# --- planning: sessions, splits, planted errors (cheap, deterministic, in one process) -------

def _plan_dataset(*, seed: int, clips_per_class: int,
                  duration_range_s: tuple[float, float] = DURATION_RANGE_S) -> list[_Clip]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    sessions = [s for label in CLASSES for s in _plan_sessions(rng, label, clips_per_class)]
    # Number sessions in a shuffled order so a group id says nothing about its class.
    order = rng.permutation(len(sessions))
    sessions = [dataclasses.replace(sessions[i], group=f"s{rank:03d}") for rank, i in enumerate(order)]
    sessions = _assign_splits(rng, sessions)
    clips = [clip for number, session in enumerate(sessions)
             for clip in _plan_session_clips(rng, session, seed=seed, number=number,
                                             duration_range_s=duration_range_s)]
    return _plant_label_errors(rng, clips)


def _plan_sessions(rng: np.random.Generator, label: str, clips_per_class: int) -> list[_Session]:
    sizes = _session_sizes(rng, clips_per_class)
    backgrounds = SESSION_BACKGROUNDS[label]
    sessions = []
    for size in sizes:
        background = str(rng.choice(list(backgrounds), p=list(backgrounds.values())))
        snr_range = None
        if label in SNR_RANGE_DB:
            low_db, high_db = SNR_RANGE_DB[label]
            start = rng.uniform(low_db, high_db - 6.0)
            snr_range = (round(start, 2), round(start + 6.0, 2))
        peak = rng.uniform(0.3, 0.8)
        sessions.append(_Session(
            group="", true_label=label, family=str(rng.choice(KINDS[label])), n_clips=int(size),
            background=background, snr_range_db=snr_range,
            rt60_s=float(rng.uniform(0.15, 0.9)), reverb_wet=float(rng.uniform(0.05, 0.3)),
            channel_band_hz=(float(rng.uniform(30, 120)), float(rng.uniform(5000, 7600))),
            peak_range=(peak, min(peak + 0.15, 0.95))))
    return sessions


def _session_sizes(rng: np.random.Generator, total: int) -> np.ndarray:
    """Split `total` clips into sessions of 3..6 clips: about 4.5 on average, and at least
    five sessions where `total` allows, so even small classes split near 60/20/20."""
    low, high = SESSION_SIZE_RANGE
    n_sessions = min(total // low, max(5, math.ceil(total / high), round(total / 4.5)))
    sizes = np.full(n_sessions, low)
    for _ in range(total - low * n_sessions):
        open_sessions = np.flatnonzero(sizes < high)
        sizes[rng.choice(open_sessions)] += 1
    return sizes


def _assign_splits(rng: np.random.Generator, sessions: list[_Session]) -> list[_Session]:
    """Whole sessions to train/val/test, ~60/20/20 of each class's clips, every split non-empty."""
    assigned = []
    for label in CLASSES:
        own = [sessions[i] for i in rng.permutation(len(sessions)) if sessions[i].true_label == label]
        total = sum(s.n_clips for s in own)
        counts = dict.fromkeys(SPLIT_FRACTIONS, 0)
        for index, session in enumerate(own):
            if index < len(SPLIT_FRACTIONS):  # one session each for test, val, train first
                split = ("test", "val", "train")[index]
            else:
                split = max(SPLIT_FRACTIONS, key=lambda s: SPLIT_FRACTIONS[s] * total - counts[s])
            counts[split] += session.n_clips
            assigned.append(dataclasses.replace(session, split=split))
    return sorted(assigned, key=lambda s: s.group)


def _plan_session_clips(rng: np.random.Generator, session: _Session, *, seed: int, number: int,
                        duration_range_s: tuple[float, float]) -> list[_Clip]:
    clips = []
    for index in range(session.n_clips):
        own_family = rng.random() < SESSION_FAMILY_SHARE
        kind = session.family if own_family else str(rng.choice(KINDS[session.true_label]))
        clips.append(_Clip(
            name=f"{session.group}_{index:02d}", session=session, kind=kind,
            given_label=session.true_label,
            duration_s=round(float(rng.uniform(*duration_range_s)), 2),
            snr_db=_draw_snr(rng, session, kind), peak=float(rng.uniform(*session.peak_range)),
            entropy=(seed, 1, number, index)))
    return clips


def _draw_snr(rng: np.random.Generator, session: _Session, kind: str) -> float | None:
    if kind in FOREGROUND_ONLY_KINDS or session.snr_range_db is None:
        return None
    return float(rng.uniform(*session.snr_range_db))


def _plant_label_errors(rng: np.random.Generator, clips: list[_Clip]) -> list[_Clip]:
    """Give ~LABEL_ERROR_RATE of each split a wrong label, by construction (see module doc)."""
    by_name = {clip.name: clip for clip in clips}
    for offset, split in enumerate(SPLIT_FRACTIONS):
        in_split = [c for c in clips if c.session.split == split]
        n_into, n_out = _error_counts(in_split)
        # Each split starts the cycle of confusions elsewhere, so even tiny splits together
        # hold every kind of planted error.
        plan = [INTO_SIRENS[(offset + i) % len(INTO_SIRENS)] for i in range(n_into)]
        plan += [OUT_OF_SIRENS[(offset + i) % len(OUT_OF_SIRENS)] for i in range(n_out)]
        taken: set[str] = set()
        for error in plan:
            pool = [c.name for c in in_split if c.name not in taken
                    and c.session.true_label == error.true_label and c.kind in error.kinds]
            if not pool:
                continue
            name = str(rng.choice(pool))
            taken.add(name)
            clip = by_name[name]
            kind = error.new_kind or clip.kind
            snr = _draw_snr(rng, clip.session, kind) if error.new_kind else clip.snr_db
            by_name[name] = dataclasses.replace(clip, given_label=error.given_label, kind=kind, snr_db=snr)
    return [by_name[clip.name] for clip in clips]


def _error_counts(split_clips: list[_Clip]) -> tuple[int, int]:
    """(errors into the siren label, sirens hidden in other labels) for one split."""
    n_errors = max(1, round(LABEL_ERROR_RATE * len(split_clips)))
    n_out = n_errors // 2
    n_sirens = sum(c.session.true_label == SIRENS for c in split_clips)
    # Enough non-sirens among the clips given "emergency_sirens": into/(sirens-out+into) >= f.
    f = MIN_WRONG_SIREN_FRACTION
    n_into = max(n_errors - n_out, math.ceil(f * (n_sirens - n_out) / (1 - f)))
    return n_into, n_out


# --- rendering: one clip -----------------------------------------------------------------
