"""Synthetic six-class demo dataset for the sirens plan (SEEDS A), with planted label errors.

Every clip is synthesised from physical recipes (swept harmonic siren horns with Doppler over
traffic, piezo beeps with sharp gates, modal impacts, engines and pass-bys, formant-filtered
screams, rain/wind/bird/insect textures), so a classifier has something real to learn and the
audit has something real to find. Clips come in recording sessions (`group`) that share a
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
from scipy import fft as sp_fft
from scipy import signal
from scipy.interpolate import PchipInterpolator
from tqdm import tqdm

from core.config import check_range

__all__ = ["ANSWER_KEY_COLUMNS", "CLASSES", "KINDS", "MANIFEST_COLUMNS", "TONAL_DRONE", "plan_demo_manifest", "synthesize_demo_dataset"]

log = logging.getLogger(__name__)

CLASSES = ("emergency_sirens", "collision_sounds", "alert_sounds", "road_traffic",
           "human_scream", "environmental_sounds")
SIRENS, COLLISION, ALERT, TRAFFIC, SCREAM, ENVIRONMENT = CLASSES
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

DURATION_RANGE_S = (3.0, 10.0)
SESSION_SIZE_RANGE = (3, 6)
SPEED_OF_SOUND_M_S = 343.0

# Sub-types per class; a session mostly records its own family.
KINDS = {
    SIRENS: ("wail", "yelp", "hilo", "burst"),
    COLLISION: ("metal", "glass"),
    ALERT: ("beep", "chirp"),
    TRAFFIC: ("flow", "passby", "idle"),
    SCREAM: ("single", "repeated"),
    ENVIRONMENT: ("rain", "wind", "birds", "insects"),
}
TONAL_DRONE = "tonal_drone"  # exists only as a planted error: true environmental, given siren
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
                            progress: bool = True) -> pd.DataFrame:
    """Build (or reuse) the demo dataset under `out_dir` and return its manifest.

    clips_per_class: true clips per class (10..10000); given labels stay within a few clips
    of it. sample_rate_hz: 16000..48000. workers: processes rendering clips (1 = in-process).
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
    if not isinstance(progress, bool):
        raise ValueError(f"progress: expected True or False, got {progress!r}")
    stamp = {"synth_version": SYNTH_VERSION, "seed": seed, "clips_per_class": clips_per_class,
             "sample_rate_hz": sample_rate_hz}
    if _is_complete(out_dir, stamp):
        log.info("demo dataset in %s is complete for %s; skipping synthesis", out_dir, stamp)
        return _read_manifest(out_dir / MANIFEST_NAME)
    return _build(out_dir, stamp, workers=workers, progress=progress)


def plan_demo_manifest(*, seed: int = 0, clips_per_class: int = 100) -> pd.DataFrame:
    """The manifest `synthesize_demo_dataset` would write for these arguments, without audio
    (milliseconds: use it to inspect splits and planted errors)."""
    _check_int("seed", seed, low=0, high=2**63 - 1)
    _check_int("clips_per_class", clips_per_class, low=10, high=10000)
    return _manifest_frame(_plan_dataset(seed=seed, clips_per_class=clips_per_class))


def _check_int(name: str, value: object, *, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{name}: expected an integer in [{low}, {high}], got {value!r}")
    check_range(name, value, low=low, high=high)


def _build(out_dir: Path, stamp: dict, *, workers: int, progress: bool) -> pd.DataFrame:
    (out_dir / STAMP_NAME).unlink(missing_ok=True)
    clips = _plan_dataset(seed=stamp["seed"], clips_per_class=stamp["clips_per_class"])
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
    pcm = np.round(_render_clip(clip, sample_rate_hz) * 32767).astype(np.int16)
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

def _plan_dataset(*, seed: int, clips_per_class: int) -> list[_Clip]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    sessions = [s for label in CLASSES for s in _plan_sessions(rng, label, clips_per_class)]
    # Number sessions in a shuffled order so a group id says nothing about its class.
    order = rng.permutation(len(sessions))
    sessions = [dataclasses.replace(sessions[i], group=f"s{rank:03d}") for rank, i in enumerate(order)]
    sessions = _assign_splits(rng, sessions)
    clips = [clip for number, session in enumerate(sessions)
             for clip in _plan_session_clips(rng, session, seed=seed, number=number)]
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


def _plan_session_clips(rng: np.random.Generator, session: _Session, *, seed: int,
                        number: int) -> list[_Clip]:
    clips = []
    for index in range(session.n_clips):
        own_family = rng.random() < SESSION_FAMILY_SHARE
        kind = session.family if own_family else str(rng.choice(KINDS[session.true_label]))
        clips.append(_Clip(
            name=f"{session.group}_{index:02d}", session=session, kind=kind,
            given_label=session.true_label,
            duration_s=round(float(rng.uniform(*DURATION_RANGE_S)), 2),
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

def _render_clip(clip: _Clip, sample_rate_hz: int) -> np.ndarray:
    """The clip's waveform, float64 in [-peak, peak], peak in (0, 0.95]."""
    rng = np.random.default_rng(np.random.SeedSequence(list(clip.entropy)))
    session = clip.session
    n = int(round(clip.duration_s * sample_rate_hz))
    sound = _SYNTHS[session.true_label](rng, clip.kind, n, sample_rate_hz)
    sound = _reverb(rng, sound, sample_rate_hz, rt60_s=session.rt60_s, wet=session.reverb_wet)
    if clip.snr_db is not None:
        noise = _BACKGROUNDS[session.background](rng, n, sample_rate_hz)
        sound = _mix_at_snr(sound, noise, snr_db=clip.snr_db)
    low_hz, high_hz = session.channel_band_hz
    sound = _filter(sound, sample_rate_hz, low_hz=low_hz, high_hz=high_hz, order=2)
    return sound * (clip.peak / max(np.max(np.abs(sound)), 1e-9))


# --- DSP primitives ------------------------------------------------------------------------

def _unit(x: np.ndarray) -> np.ndarray:
    """Scale to unit RMS (silence stays silence)."""
    return x / max(float(np.sqrt(np.mean(x * x))), 1e-12)


def _colored_noise(rng: np.random.Generator, n: int, *, exponent: float) -> np.ndarray:
    """Unit-RMS noise with power ~ 1/f**exponent (0 white, 1 pink, 2 brown)."""
    size = sp_fft.next_fast_len(n, real=True)  # an arbitrary n can have large prime factors
    spectrum = rng.standard_normal(size // 2 + 1) + 1j * rng.standard_normal(size // 2 + 1)
    freqs = np.fft.rfftfreq(size)
    freqs[0] = freqs[1]
    return _unit(sp_fft.irfft(spectrum * freqs ** (-exponent / 2), size)[:n])


def _filter(x: np.ndarray, sr: int, *, low_hz: float | None = None, high_hz: float | None = None,
            order: int = 4) -> np.ndarray:
    """Butterworth high-pass above low_hz, low-pass below high_hz, band-pass with both."""
    nyquist = sr / 2
    high_hz = None if high_hz is None or high_hz >= 0.95 * nyquist else high_hz
    if low_hz is not None and high_hz is not None:
        sos = signal.butter(order, [low_hz, high_hz], btype="bandpass", fs=sr, output="sos")
    elif low_hz is not None:
        sos = signal.butter(order, low_hz, btype="highpass", fs=sr, output="sos")
    elif high_hz is not None:
        sos = signal.butter(order, high_hz, btype="lowpass", fs=sr, output="sos")
    else:
        return x
    return signal.sosfilt(sos, x)


def _smooth_random(rng: np.random.Generator, n: int, sr: int, *, rate_hz: float) -> np.ndarray:
    """A smooth random curve in [-1, 1] with about `rate_hz` turns per second."""
    n_knots = max(2, int(n / sr * rate_hz) + 2)
    knots = np.linspace(0, n, n_knots)
    return PchipInterpolator(knots, rng.uniform(-1, 1, n_knots))(np.arange(n))


def _tone(freq_hz: np.ndarray, sr: int, weights: np.ndarray, *,
          brightness: np.ndarray | None = None) -> np.ndarray:
    """Harmonic tone sum_k w_k b**(k-1) sin(k phase) for a per-sample f0 (Hz).

    Harmonics fade out before 0.45*sr, so nothing aliases. sin(k phase) comes from the
    Chebyshev recurrence, one multiply-add per harmonic instead of a sine.
    """
    phase = 2 * np.pi * np.cumsum(freq_hz) / sr
    twice_cos = 2 * np.cos(phase)
    previous, current = np.zeros_like(phase), np.sin(phase)
    out = weights[0] * current
    tilt = None if brightness is None else np.ones_like(phase)
    limit_hz, fade_hz = 0.45 * sr, 0.05 * sr
    max_f0, min_f0 = float(np.max(freq_hz)), float(np.min(freq_hz))
    for k, weight in enumerate(weights[1:], start=2):
        previous *= -1
        previous += twice_cos * current  # sin(k x) = 2 cos(x) sin((k-1) x) - sin((k-2) x)
        previous, current = current, previous
        if tilt is not None:
            tilt *= brightness
        if k * min_f0 >= limit_hz:
            break
        if weight == 0:
            continue
        gain = weight if tilt is None else weight * tilt
        if k * max_f0 >= limit_hz - fade_hz:
            gain = gain * np.clip((limit_hz - k * freq_hz) / fade_hz, 0, 1)
        out += gain * current
    return out


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over `width` samples; the edges repeat the end values."""
    padded = np.pad(x, (width // 2, width - 1 - width // 2), mode="edge")
    return signal.oaconvolve(padded, np.full(width, 1.0 / width), mode="valid")


def _gate(n: int, sr: int, segments_s: list[tuple[float, float]], *, ramp_s: float) -> np.ndarray:
    """0/1 envelope that is on during each (start, length) segment, edges ramped over ramp_s."""
    env = np.zeros(n)
    for start, length in segments_s:
        env[max(0, int(start * sr)):max(0, int((start + length) * sr))] = 1.0
    width = max(1, int(ramp_s * sr))
    if width > 1:
        kernel = np.hanning(width + 2)[1:-1]
        env = signal.oaconvolve(env, kernel / kernel.sum(), mode="same")
    return np.clip(env, 0.0, 1.0)


def _decaying_modes(sr: int, length_s: float, freqs_hz: np.ndarray, decays_s: np.ndarray,
                    amps: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Impulse response of a set of resonant modes: sum a_i exp(-t/tau_i) sin(2 pi f_i t + phi_i)."""
    t = np.arange(int(length_s * sr)) / sr
    keep = freqs_hz < 0.45 * sr
    freqs_hz, decays_s, amps = freqs_hz[keep], decays_s[keep], amps[keep]
    phases = rng.uniform(0, 2 * np.pi, len(freqs_hz))
    modes = np.sin(2 * np.pi * freqs_hz[:, None] * t + phases[:, None]) * np.exp(-t / decays_s[:, None])
    return np.einsum("m,mt->t", amps, modes)  # einsum, not @: no BLAS thread pool per worker


def _place_contour(freq_hz: np.ndarray, start: int, contour: np.ndarray, *, hold: int) -> None:
    """Write a pitch contour at `start` and hold its end values `hold` samples either side,
    so the pitch does not jump while a gate is still ramping (that would splatter)."""
    stop = start + len(contour)
    freq_hz[start:stop] = contour
    freq_hz[max(0, start - hold):start] = contour[0]
    freq_hz[stop:stop + hold] = contour[-1]


def _impulses(n: int, sr: int, times_s: np.ndarray, amps: np.ndarray) -> np.ndarray:
    train = np.zeros(n)
    index = (np.asarray(times_s) * sr).astype(int)
    inside = (index >= 0) & (index < n)
    np.add.at(train, index[inside], np.asarray(amps)[inside])
    return train


def _passby(t: np.ndarray, *, t0_s: float, speed_m_s: float,
            closest_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Doppler pitch ratio and 1/distance amplitude (1 at closest approach) of a straight pass."""
    along = speed_m_s * (t - t0_s)
    distance = np.sqrt(closest_m ** 2 + along ** 2)
    radial_speed = speed_m_s * along / distance  # > 0 once the source moves away
    return SPEED_OF_SOUND_M_S / (SPEED_OF_SOUND_M_S + radial_speed), closest_m / distance


def _reverb(rng: np.random.Generator, x: np.ndarray, sr: int, *, rt60_s: float, wet: float) -> np.ndarray:
    """Add a diffuse tail: exponentially decaying, darkened noise IR, mixed at `wet` (0..1)."""
    t = np.arange(int(rt60_s * sr)) / sr
    ir = _filter(rng.standard_normal(len(t)) * np.exp(-6.91 * t / rt60_s), sr, high_hz=4000, order=2)
    tail = signal.oaconvolve(x, ir)[: len(x)]
    return (1 - wet) * x + wet * _unit(tail) * np.sqrt(np.mean(x * x))


def _mix_at_snr(foreground: np.ndarray, noise: np.ndarray, *, snr_db: float) -> np.ndarray:
    """foreground + noise scaled so 10 log10(P_fg / P_noise) = snr_db over the whole clip."""
    fg_rms = np.sqrt(np.mean(foreground ** 2))
    return foreground + _unit(noise) * fg_rms * 10 ** (-snr_db / 20)


# --- the six classes ---------------------------------------------------------------------

def _siren(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Square-ish horn (odd-harmonic stack) swept wail/yelp, stepped hi-lo or whooping bursts,
    with a Doppler pass-by or a slowly wandering static distance."""
    t = np.arange(n) / sr
    low = rng.uniform(550, 850)
    high = min(low * rng.uniform(1.6, 2.2), 1750.0)
    gate = np.ones(n)
    if kind == "wail":
        sweep = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(0.2, 0.5) * t + rng.uniform(0, 2 * np.pi))
        freq = low + (high - low) * sweep ** 0.8
    elif kind == "yelp":
        saw = signal.sawtooth(2 * np.pi * rng.uniform(3, 5) * t + rng.uniform(0, 2 * np.pi),
                              width=rng.uniform(0.6, 0.9))
        freq = low + (high - low) * (saw + 1) / 2
    elif kind == "hilo":
        f_high = rng.uniform(900, 1000)
        steps = signal.square(2 * np.pi * rng.uniform(0.8, 1.6) * t + rng.uniform(0, 2 * np.pi))
        freq = np.where(steps > 0, f_high, f_high * rng.uniform(0.77, 0.82))
        freq = _moving_average(freq, int(0.01 * sr))  # a 10 ms glide between the two tones
    else:  # burst: short whoops, each rising fast from low to high
        freq = np.full(n, low)
        segments, cursor = [], rng.uniform(0.0, 0.5)
        while cursor < n / sr - 0.3:
            length = rng.uniform(0.4, 1.2)
            i0, i1 = int(cursor * sr), min(n, int((cursor + length) * sr))
            _place_contour(freq, i0, low + (high - low) * np.sqrt(np.linspace(0, 1, i1 - i0)),
                           hold=int(0.02 * sr))
            segments.append((cursor, length))
            cursor += length + rng.uniform(0.15, 0.6)
        gate = _gate(n, sr, segments, ramp_s=0.02)
    k = np.arange(1, 17)
    weights = np.where(k % 2 == 1, 1.0, rng.uniform(0.05, 0.35)) / k ** rng.uniform(1.0, 1.5)
    if rng.random() < 0.6:
        ratio, loudness = _passby(t, t0_s=rng.uniform(0.2, 0.8) * n / sr,
                                  speed_m_s=rng.uniform(8, 25), closest_m=rng.uniform(5, 30))
    else:
        ratio = 1 + rng.uniform(0, 0.01) * _smooth_random(rng, n, sr, rate_hz=0.2)
        loudness = 10 ** (0.15 * _smooth_random(rng, n, sr, rate_hz=0.5))
    brightness = 0.7 + 0.3 * loudness / np.max(loudness)  # air absorbs highs more with distance
    return _tone(freq * ratio, sr, weights, brightness=brightness) * loudness * gate


def _alert(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Piezo beeps/chirps at siren pitch: steady pitch inside each beep, sharp on/off gates."""
    dur = n / sr
    pitch = rng.uniform(650, 1600)
    freq = np.full(n, pitch)
    if kind == "beep":
        pattern = rng.choice(["reversing", "alarm_clock", "appliance", "pulse"])
        if pattern == "reversing":
            on = rng.uniform(0.35, 0.55)
            starts = np.arange(rng.uniform(0, 0.5), dur, on * rng.uniform(1.8, 2.2))
            segments = [(s, on) for s in starts]
        elif pattern == "alarm_clock":
            on, period = rng.uniform(0.06, 0.1), rng.uniform(0.8, 1.2)
            segments = [(g + i * 2 * on, on) for g in np.arange(rng.uniform(0, 0.4), dur, period)
                        for i in range(4)]
        elif pattern == "appliance":
            on, gap, count = rng.uniform(0.2, 0.5), rng.uniform(0.15, 0.3), int(rng.integers(3, 6))
            period = count * (on + gap) + rng.uniform(0.8, 2.0)
            segments = [(g + i * (on + gap), on) for g in np.arange(rng.uniform(0, 0.5), dur, period)
                        for i in range(count)]
        else:
            on = rng.uniform(0.04, 0.12)
            segments = [(s, on) for s in np.arange(rng.uniform(0, 0.3), dur, 1 / rng.uniform(2, 5))]
        weights = np.array([1, 0, rng.uniform(0.1, 0.5), 0, rng.uniform(0.05, 0.25), 0, rng.uniform(0, 0.1)])
    else:  # chirp: a phone-style trill stepping between two steady tones, in bursts
        t = np.arange(n) / sr
        steps = signal.square(2 * np.pi * rng.uniform(12, 25) * t)
        freq = np.where(steps > 0, pitch, pitch * rng.uniform(0.75, 0.85))
        burst, period = rng.uniform(0.3, 1.0), rng.uniform(1.5, 3.0)
        segments = [(s, burst) for s in np.arange(rng.uniform(0, 0.5), dur, period)]
        weights = np.array([1, rng.uniform(0, 0.2), rng.uniform(0.1, 0.3), 0, rng.uniform(0, 0.1)])
    gate = _gate(n, sr, segments, ramp_s=0.003)
    return _tone(freq, sr, weights) * gate


def _collision(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """A crash: broadband crack + body thump, then metal modes ringing or glass shattering
    into tinkles; debris hits follow; sometimes a tyre skid leads in."""
    dur = n / sr
    t_hit = rng.uniform(0.1, 0.4) * dur
    n_debris = int(rng.integers(2, 9))
    hit_times = np.concatenate([[t_hit], t_hit + np.cumsum(rng.exponential(0.15, n_debris))])
    hit_amps = np.concatenate([[1.0], 0.6 ** np.arange(1, n_debris + 1) * rng.uniform(0.3, 1, n_debris)])
    hits = _impulses(n, sr, hit_times, hit_amps)
    kt = np.arange(int(0.2 * sr)) / sr
    crack = signal.oaconvolve(hits, rng.standard_normal(len(kt)) * np.exp(-kt / rng.uniform(0.008, 0.03)))[:n]
    thump_kernel = _filter(rng.standard_normal(len(kt)), sr, high_hz=rng.uniform(150, 400))
    thump_kernel *= np.exp(-kt / 0.06)
    thump = signal.oaconvolve(hits, thump_kernel)[:n]
    ring_s = min(2.5, dur - t_hit + 0.1)
    if kind == "metal":
        base = rng.uniform(150, 500)
        freqs = np.sort(base * rng.uniform(1, 25, int(rng.integers(12, 26))))
        decays = rng.uniform(0.3, 1.5, len(freqs)) * (freqs / base) ** -0.4
        amps = rng.uniform(0.3, 1, len(freqs)) / np.sqrt(np.arange(1, len(freqs) + 1))
        body = signal.oaconvolve(hits, _decaying_modes(sr, ring_s, freqs, decays, amps, rng))[:n]
        sound = 0.5 * _unit(crack) + 0.6 * _unit(thump) + 1.2 * _unit(body)
    else:
        freqs = rng.uniform(2000, 7200, int(rng.integers(15, 31)))
        shatter = _decaying_modes(sr, 0.4, freqs, rng.uniform(0.02, 0.25, len(freqs)),
                                  rng.uniform(0.2, 1, len(freqs)), rng)
        glass = signal.oaconvolve(hits, shatter)[:n]
        bright = _filter(crack, sr, low_hz=2000)
        sound = 0.5 * _unit(crack) + 0.3 * _unit(thump) + _unit(glass) + 0.6 * _unit(bright)
        sound += 0.8 * np.sqrt(np.mean(sound ** 2)) * _unit(_tinkles(rng, n, sr, t_hit=t_hit))
    if rng.random() < 0.35 and t_hit > 0.8:
        sound += 0.5 * np.sqrt(np.mean(sound ** 2)) * _unit(_skid(rng, n, sr, end_s=t_hit))
    return sound


def _tinkles(rng: np.random.Generator, n: int, sr: int, *, t_hit: float) -> np.ndarray:
    """Small glass pieces landing after the crash: sparse high partials, density decaying."""
    count = int(rng.integers(40, 150))
    times = t_hit + 0.05 + rng.exponential(rng.uniform(0.4, 1.0), count)
    amps = rng.lognormal(0, 0.6, count) * np.exp(-(times - t_hit) / 1.5)
    voices = rng.integers(0, 6, count)
    out = np.zeros(n)
    for voice in range(6):
        kernel = _decaying_modes(sr, 0.12, rng.uniform(3000, 7500, 3), rng.uniform(0.005, 0.04, 3),
                                 rng.uniform(0.5, 1, 3), rng)
        mine = voices == voice
        out += signal.oaconvolve(_impulses(n, sr, times[mine], amps[mine]), kernel)[:n]
    return out


def _skid(rng: np.random.Generator, n: int, sr: int, *, end_s: float) -> np.ndarray:
    """Tyre screech ending at the impact: wobbling squeal tone in band-limited noise, crescendo."""
    start_s = max(0.0, end_s - rng.uniform(0.5, 1.5))
    gate = _gate(n, sr, [(start_s, end_s - start_s)], ramp_s=0.05)
    crescendo = np.clip((np.arange(n) / sr - start_s) / max(end_s - start_s, 1e-3), 0, 1)
    squeal_f = rng.uniform(700, 1400) * (1 + 0.03 * _smooth_random(rng, n, sr, rate_hz=8))
    squeal = _tone(squeal_f, sr, np.array([1, 0.3, 0.15]))
    hiss = _filter(rng.standard_normal(n), sr, low_hz=600, high_hz=3000)
    return (0.6 * squeal + _unit(hiss)) * gate * crescendo


# Traffic kind -> (vehicles passing per second, range), level of the nearby engine.
_TRAFFIC_MIX = {"flow": ((0.4, 1.0), 0.25), "passby": ((0.1, 0.25), 0.15), "idle": ((0.05, 0.2), 1.0)}


def _road_traffic(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Low rumble, a nearby engine whose rpm wanders, and vehicles passing by."""
    rate_range_hz, engine_level = _TRAFFIC_MIX[kind]
    k = np.arange(1, 17)
    engine_weights = np.where(k % 2 == 0, 1.0, rng.uniform(0.3, 0.7)) / k ** 0.8  # firing order
    f0 = rng.uniform(30, 120) * (1 + 0.12 * _smooth_random(rng, n, sr, rate_hz=0.4))
    # Mechanical noise, pulsed by the firing: what makes an engine more than a hum.
    firing = np.sin(4 * np.pi * np.cumsum(f0) / sr)
    clatter = _unit(_filter(rng.standard_normal(n), sr, low_hz=150, high_hz=2500)) * (1 + 0.7 * firing)
    engine = _unit(_tone(f0, sr, engine_weights)) + rng.uniform(0.1, 0.25) * clatter
    engine *= 1 + 0.2 * _smooth_random(rng, n, sr, rate_hz=3)
    vehicles = _vehicles(rng, n, sr, rate_hz=rng.uniform(*rate_range_hz), at_least_one=kind == "passby",
                         engine_weights=engine_weights[:8])
    return _rumble(rng, n, sr) + engine_level * engine + vehicles


def _rumble(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Unit-RMS low-passed brown noise, slowly breathing: the bed of any road."""
    rumble = _unit(_filter(_colored_noise(rng, n, exponent=2.0), sr, high_hz=rng.uniform(150, 400)))
    return rumble * (1 + 0.3 * _smooth_random(rng, n, sr, rate_hz=0.3))


def _vehicles(rng: np.random.Generator, n: int, sr: int, *, rate_hz: float, at_least_one: bool,
              engine_weights: np.ndarray | None) -> np.ndarray:
    """Vehicles passing at random times: tyre noise swelling with 1/distance, hiss only when
    close, and (when engine_weights are given) each engine's harmonics with Doppler."""
    t = np.arange(n) / sr
    count = max(int(at_least_one), int(rng.poisson(rate_hz * n / sr)))
    near, close, engines = np.zeros(n), np.zeros(n), np.zeros(n)
    for _ in range(count):
        ratio, loudness = _passby(t, t0_s=rng.uniform(-1, n / sr + 1), speed_m_s=rng.uniform(8, 25),
                                  closest_m=rng.uniform(3, 20))
        loudness *= rng.uniform(0.4, 1.0)
        near += loudness
        close += loudness ** 2
        active = np.flatnonzero(loudness > 0.05)
        if engine_weights is not None and len(active):
            window = slice(active[0], active[-1] + 1)
            car_f0 = rng.uniform(40, 110) * ratio[window]
            engines[window] += loudness[window] * _tone(car_f0, sr, engine_weights)
    tyres = _filter(_colored_noise(rng, n, exponent=1.5), sr, low_hz=80, high_hz=1500)
    hiss = _filter(rng.standard_normal(n), sr, low_hz=2000, high_hz=5000)
    engines /= max(np.max(np.abs(engines)), 1e-9)
    return _unit(tyres) * near + 0.15 * _unit(hiss) * close + 0.5 * engines


def _scream(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """One scream somewhere in the clip, or screams repeated until the clip is full."""
    dur = n / sr
    out = np.zeros(n)
    cursor = rng.uniform(0.1, max(0.2, dur - 2.2)) if kind == "single" else rng.uniform(0.1, 0.6)
    while cursor < dur - 0.6:
        m = int(min(rng.uniform(0.5, 2.0), dur - 0.1 - cursor) * sr)
        i0 = int(cursor * sr)
        out[i0:i0 + m] += _one_scream(rng, m, sr)
        if kind == "single":
            break
        cursor += m / sr + rng.uniform(0.2, 1.0)
    return out


def _one_scream(rng: np.random.Generator, m: int, sr: int) -> np.ndarray:
    """m samples of scream: rising-falling f0 (300-1200 Hz) with vibrato, jitter and shimmer,
    a bright harmonic source through three vowel formants, plus breath noise."""
    t = np.arange(m) / sr
    start, peak, end = rng.uniform(300, 500), rng.uniform(600, 1200), rng.uniform(300, 600)
    peak_at, hold = rng.uniform(0.2, 0.45), rng.uniform(0.2, 0.4)
    contour = PchipInterpolator([0, peak_at, peak_at + hold, 1],
                                [start, peak, peak * rng.uniform(0.85, 1.0), end])(t / t[-1])
    vibrato = 1 + rng.uniform(0.01, 0.04) * np.sin(2 * np.pi * rng.uniform(5, 8) * t)
    jitter = 1 + rng.uniform(0.005, 0.015) * _smooth_random(rng, m, sr, rate_hz=40)
    f0 = contour * vibrato * jitter
    source = _tone(f0, sr, np.arange(1, 15) ** -rng.uniform(0.8, 1.4))
    if rng.random() < 0.4:  # roughness: a subharmonic from period doubling
        source *= 1 + 0.3 * np.sin(np.pi * np.cumsum(f0) / sr)
    vowels = np.array([(800, 1200, 2600), (700, 1700, 2700), (450, 2200, 3000)])
    formants = vowels[rng.integers(len(vowels))] * rng.uniform(0.95, 1.2)
    voiced = 0.2 * source
    for f, gain in zip(formants, (1.0, 0.7, 0.4)):
        half_width = rng.uniform(80, 200)
        voiced += gain * _filter(source, sr, low_hz=f - half_width, high_hz=f + half_width, order=2)
    breath = _filter(rng.standard_normal(m), sr, low_hz=1000, high_hz=6000)
    shimmer = 1 + rng.uniform(0.05, 0.1) * _smooth_random(rng, m, sr, rate_hz=30)
    attack, release = rng.uniform(0.03, 0.08), rng.uniform(0.1, 0.3)
    effort = np.clip(0.6 + 0.4 * (contour - start) / (peak - start), 0.3, 1.0)  # louder when higher
    envelope = np.clip(t / attack, 0, 1) * np.clip((t[-1] - t) / release, 0, 1) * effort * shimmer
    return (_unit(voiced) + rng.uniform(0.05, 0.15) * _unit(breath)) * envelope


def _environment(rng: np.random.Generator, kind: str, n: int, sr: int) -> np.ndarray:
    """Rain, wind, birdsong or insects; or a steady tonal drone (the ambiguous A3 case)."""
    return {"rain": _rain, "wind": _wind, "birds": _birds, "insects": _insects,
            TONAL_DRONE: _tonal_drone}[kind](rng, n, sr)


def _rain(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Dense droplets (click + small rising bubble resonance) over a filtered noise wash."""
    wash = _filter(_colored_noise(rng, n, exponent=1.0), sr, low_hz=rng.uniform(400, 800), high_hz=7000)
    rate = rng.uniform(300, 2000)
    count = int(rate * n / sr)
    times, amps = rng.uniform(0, n / sr, count), rng.lognormal(0, 0.7, count)
    voices = rng.integers(0, 8, count)
    drops = np.zeros(n)
    kt = np.arange(int(0.03 * sr)) / sr
    for voice in range(8):
        f = rng.uniform(1000, 4000) * (1 + rng.uniform(0.2, 0.5) * kt / kt[-1])
        bubble = np.sin(2 * np.pi * np.cumsum(f) / sr) * np.exp(-kt / rng.uniform(0.004, 0.015))
        bubble[: int(0.001 * sr)] += rng.standard_normal(int(0.001 * sr))
        mine = voices == voice
        drops += signal.oaconvolve(_impulses(n, sr, times[mine], amps[mine]), bubble)[:n]
    return rng.uniform(0.5, 1.0) * _unit(wash) + _unit(drops)


def _wind(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Low-passed noise in gusts: louder gusts are also brighter."""
    base = _colored_noise(rng, n, exponent=1.5)
    dark = _unit(_filter(base, sr, high_hz=rng.uniform(150, 300)))
    bright = _unit(_filter(base, sr, low_hz=300, high_hz=rng.uniform(800, 1500)))
    gust = 0.6 + 0.4 * _smooth_random(rng, n, sr, rate_hz=rng.uniform(0.2, 0.6))
    return dark * gust + 0.5 * bright * gust ** 3


def _birds(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """One to three birds singing phrases of fast FM syllables (2-8 kHz) over soft wind."""
    out = 0.05 * _wind(rng, n, sr)
    for _ in range(int(rng.integers(1, 4))):
        out += rng.uniform(0.3, 1.0) * _bird_song(rng, n, sr)
    return out


def _bird_song(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    dur = n / sr
    limit = 0.45 * sr
    base = rng.uniform(2500, 5000)
    freq, segments = np.full(n, base), []
    cursor = rng.uniform(0, 1.0)
    while cursor < dur - 0.5:
        syllable = rng.choice(["down", "up", "trill", "whistle"])
        length = rng.uniform(0.1, 0.3) if syllable in ("trill", "whistle") else rng.uniform(0.03, 0.1)
        repeats = int(rng.integers(2, 8))
        gap = rng.uniform(0.02, 0.08)
        top = min(base * rng.uniform(1.2, 1.8), limit)
        for r in range(repeats):
            start = cursor + r * (length + gap)
            i0, i1 = int(start * sr), min(n, int((start + length) * sr))
            if i1 <= i0:
                break
            u = np.linspace(0, 1, i1 - i0)
            shape = {"down": top - (top - base) * u, "up": base + (top - base) * u,
                     "trill": base * (1 + 0.12 * np.sin(2 * np.pi * rng.uniform(20, 40) * u * length)),
                     "whistle": base * (1 + 0.08 * u)}[syllable]
            _place_contour(freq, i0, shape, hold=int(0.008 * sr))
            segments.append((start, length))
        cursor += repeats * (length + gap) + rng.uniform(0.5, 2.5)
    gate = _gate(n, sr, segments, ramp_s=0.008)
    return _tone(np.clip(freq, 1500, limit), sr, np.array([1.0, 0.1])) * gate


def _insects(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Cicada (4-7 kHz noise band pulsed at 20-60 Hz, swelling) or cricket (pure chirps)."""
    t = np.arange(n) / sr
    center = min(rng.uniform(4000, 7000), 0.4 * sr)
    if rng.random() < 0.5:
        band = _filter(rng.standard_normal(n), sr, low_hz=center - 400, high_hz=center + 400)
        pulses = np.abs(np.sin(np.pi * rng.uniform(20, 60) * t)) ** 3
        swell = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t + rng.uniform(0, 2 * np.pi))
        return _unit(band) * pulses * (0.3 + 0.7 * swell) + 0.03 * _wind(rng, n, sr)
    pulse_rate, per_chirp = rng.uniform(25, 40), int(rng.integers(3, 6))
    segments = [(c + p / pulse_rate, 0.5 / pulse_rate)
                for c in np.arange(rng.uniform(0, 0.3), n / sr, 1 / rng.uniform(1.5, 3.0))
                for p in range(per_chirp)]
    tone = _tone(np.full(n, min(center, 5000.0)), sr, np.array([1.0, 0.05]))
    return tone * _gate(n, sr, segments, ramp_s=0.004) + 0.03 * _wind(rng, n, sr)


def _tonal_drone(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """A steady hum/whine at siren pitch: no sweep, no amplitude modulation (A3 'ambiguous')."""
    f = rng.uniform(600, 1500) * (1 + 0.001 * _smooth_random(rng, n, sr, rate_hz=0.5))
    k = np.arange(1, 7)
    return _tone(f, sr, k ** -rng.uniform(1.2, 2.0))


_SYNTHS = {SIRENS: _siren, COLLISION: _collision, ALERT: _alert, TRAFFIC: _road_traffic,
           SCREAM: _scream, ENVIRONMENT: _environment}


# --- backgrounds ---------------------------------------------------------------------------

def _traffic_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Street traffic heard from a distance: rumble and tyre noise swelling, dark."""
    vehicles = _vehicles(rng, n, sr, rate_hz=rng.uniform(0.4, 1.0), at_least_one=False, engine_weights=None)
    return _filter(_rumble(rng, n, sr) + vehicles, sr, high_hz=rng.uniform(2000, 4000))


def _room_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Room tone: darkened pink noise plus a little mains hum (50 or 60 Hz and harmonics)."""
    hum = _tone(np.full(n, float(rng.choice([50.0, 60.0]))), sr, np.array([1, 0.5, 0.3, 0.2]))
    air = _filter(_colored_noise(rng, n, exponent=1.0), sr, high_hz=rng.uniform(1500, 4000))
    return _unit(air) + 0.2 * hum


def _outdoor_background(rng: np.random.Generator, n: int, sr: int) -> np.ndarray:
    """Open air: soft wind and a far-away traffic rumble."""
    rumble = _filter(_colored_noise(rng, n, exponent=2.0), sr, high_hz=300)
    return _unit(_wind(rng, n, sr)) + 0.5 * _unit(rumble)


_BACKGROUNDS = {"traffic": _traffic_background, "room": _room_background, "outdoor": _outdoor_background}
