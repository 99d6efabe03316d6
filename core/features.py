"""Log-mel features (D1), training-split normalisation (C2) and the on-disk feature cache.

`LogMel` is a torch module, so the same code makes features for the cache and, after waveform
augmentation, on the fly during training. `FeatureCache` computes each clip's features once
per (clip content, feature config) and serves them memory-mapped, so an epoch over 100k clips
reads float16 rows from one file instead of decoding and resampling audio.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio
from tqdm import tqdm

from core.audio import AudioError, fit_length, load
from core.config import FeatureConfig

NormStats = dict[str, list[float]]

# Floor for a band's standard deviation, in dB: a band that hardly varies in training must
# not turn a small deviation at test time into a huge normalised value.
MIN_STD_DB = 1e-2

# Bumped whenever the stored values or layout change, so old cache folders are not reused.
CACHE_FORMAT_VERSION = 1
# Config fields that do not change what is stored (normalisation is applied after reading).
FIELDS_NOT_IN_CACHE_KEY = ("normalize",)
CONFIG_FILE = "config.json"
INDEX_FILE = "index.json"
DATA_FILE = "features.f16"
LOCK_FILE = ".build.lock"
# A long build commits its index this often, so a killed build keeps most of its work.
INDEX_COMMIT_INTERVAL_S = 30.0


class LogMel(torch.nn.Module):
    """Waveforms (B, T) at feature_cfg.sample_rate_hz -> log-mel dB (B, n_mels, T // hop_length + 1).

    Power mel spectrogram (f_min_hz acts as the plan's high-pass), converted to dB re 1.0 and
    cut top_db below each clip's own peak, never the batch's, so a clip's features do not
    depend on what it is batched with. T = feature_cfg.n_samples gives feature_cfg.n_frames.
    """

    def __init__(self, feature_cfg: FeatureConfig) -> None:
        super().__init__()
        self.min_samples = feature_cfg.n_fft // 2 + 1  # centred frames reflect-pad n_fft // 2
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=feature_cfg.sample_rate_hz, n_fft=feature_cfg.n_fft,
            hop_length=feature_cfg.hop_length, f_min=feature_cfg.f_min_hz, f_max=feature_cfg.concrete("f_max_hz"),
            n_mels=feature_cfg.n_mels, power=2.0)
        self.to_db = torchaudio.transforms.AmplitudeToDB(stype="power", top_db=feature_cfg.top_db)

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() != 2 or waves.shape[1] < self.min_samples:
            raise ValueError(f"waves must have shape (batch, samples) with at least {self.min_samples} "
                             f"samples, got {tuple(waves.shape)}")
        power = self.mel(waves)
        # AmplitudeToDB applies top_db per item of a 4-D input; a 3-D input would share one peak.
        return self.to_db(power.unsqueeze(1)).squeeze(1)


class Waveform(torch.nn.Module):
    """Waveforms (B, T) -> (B, 1, T): the samples as features, for models that bring their own
    front end (FeatureConfig.front_end "waveform"); the cache then stores resampled audio."""

    min_samples = 1

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        if waves.dim() != 2:
            raise ValueError(f"waves must have shape (batch, samples), got {tuple(waves.shape)}")
        return waves.unsqueeze(1)


def feature_transform(feature_cfg: FeatureConfig) -> LogMel | Waveform:
    """The module that turns a batch of waveforms into features for this config: what the cache,
    the augmentation feed and the detectors all use (the augmentation preview always draws log-mels)."""
    return Waveform() if feature_cfg.front_end == "waveform" else LogMel(feature_cfg)


def clip_waveform(path: str | Path, feature_cfg: FeatureConfig, *,
                  rng: np.random.Generator | None = None) -> np.ndarray:
    """A clip as the features see it: mono float32 at sample_rate_hz, shape (n_samples,).

    Cropped (feature_cfg.crop; "random" needs rng) or padded (feature_cfg.pad) to
    max_length_s. Raises AudioError for a file that cannot be used.
    """
    # Only a crop from the start can stop reading early; the others need the clip's length.
    read_s = feature_cfg.max_length_s if feature_cfg.crop == "start" else None
    wave = load(path, sample_rate_hz=feature_cfg.sample_rate_hz, max_seconds=read_s)
    return fit_length(wave, feature_cfg.n_samples, crop=feature_cfg.crop, pad=feature_cfg.pad, rng=rng)


# --- normalisation (C2) -------------------------------------------------------------------

def compute_norm_stats(features: Any, *, rows: Sequence[int] | np.ndarray | None = None,
                       chunk_rows: int = 256, min_std: float = MIN_STD_DB) -> NormStats:
    """Mean and std of each mel band over clips and frames: {"mean": [n_mels], "std": [n_mels]}.

    features: array-like (N, n_mels, n_frames), e.g. `FeatureCache.array` (a memmap), read
    chunk_rows clips at a time so it never has to fit in memory. rows: the training split's
    row numbers (statistics must come from training clips only; each row counts once);
    None uses every row. std is floored at min_std (feature units, dB). JSON-serialisable,
    so it is saved with the checkpoint that used it.
    """
    shape = tuple(getattr(features, "shape", ()))
    if len(shape) != 3:
        raise ValueError(f"features must have shape (clips, n_mels, n_frames), got {shape}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if min_std <= 0:
        raise ValueError(f"min_std must be > 0, got {min_std}")
    selected = np.arange(shape[0]) if rows is None else np.unique(np.asarray(rows, dtype=np.int64))
    if selected.size == 0:
        raise ValueError("rows is empty: normalisation statistics need at least one training clip")
    if selected[0] < 0 or selected[-1] >= shape[0]:
        raise ValueError(f"rows must lie in [0, {shape[0]}), got values from {selected[0]} to {selected[-1]}")
    # Sums of deviations from the first chunk's mean keep E[x^2] - E[x]^2 well conditioned.
    shift = total = total_sq = None
    count = 0
    for start in range(0, selected.size, chunk_rows):
        chunk = np.asarray(features[selected[start:start + chunk_rows]], dtype=np.float64)
        if shift is None:
            shift = chunk.mean(axis=(0, 2))
            total = np.zeros_like(shift)
            total_sq = np.zeros_like(shift)
        deviation = chunk - shift[None, :, None]
        total += deviation.sum(axis=(0, 2))
        total_sq += np.square(deviation).sum(axis=(0, 2))
        count += chunk.shape[0] * chunk.shape[2]
    mean_deviation = total / count
    variance = np.maximum(total_sq / count - mean_deviation ** 2, 0.0)
    std = np.maximum(np.sqrt(variance), min_std)
    return {"mean": (shift + mean_deviation).tolist(), "std": std.tolist()}


def normalize(batch: np.ndarray | torch.Tensor, stats: NormStats) -> np.ndarray | torch.Tensor:
    """(batch - mean) / std per mel band. batch: (..., n_mels, n_frames), numpy or torch.

    numpy comes back float32; torch keeps its floating dtype and device.
    """
    mean, std = _band_stats(stats, n_mels=batch.shape[-2])
    if isinstance(batch, torch.Tensor):
        dtype = batch.dtype if batch.is_floating_point() else torch.float32
        mean_t = torch.as_tensor(mean, dtype=dtype, device=batch.device)
        std_t = torch.as_tensor(std, dtype=dtype, device=batch.device)
        return (batch.to(dtype) - mean_t) / std_t
    return (np.asarray(batch, dtype=np.float32) - mean) / std


def _band_stats(stats: NormStats, *, n_mels: int) -> tuple[np.ndarray, np.ndarray]:
    """mean and std as float32 columns (n_mels, 1), checked against the batch's band count."""
    if not isinstance(stats, dict) or not {"mean", "std"} <= stats.keys():
        raise ValueError(f"stats must be a mapping with 'mean' and 'std', got {stats!r:.80}")
    mean = np.asarray(stats["mean"], dtype=np.float32)
    std = np.asarray(stats["std"], dtype=np.float32)
    if mean.shape != (n_mels,) or std.shape != (n_mels,):
        raise ValueError(f"stats must hold {n_mels} values per key (one per mel band), "
                         f"got mean {mean.shape} and std {std.shape}")
    if not (std > 0).all():
        raise ValueError(f"stats['std'] must be positive, got a minimum of {std.min()}")
    return mean[:, None], std[:, None]


# --- the feature cache --------------------------------------------------------------------

class NotCachedError(LookupError):
    """Clips asked for that the cache does not hold, or whose files changed since."""


@dataclasses.dataclass(frozen=True)
class BuildReport:
    """What one FeatureCache.build did. failed maps a clip's absolute path to the reason."""
    computed: int
    reused: int
    failed: dict[str, str]
    seconds: float


def feature_cache_key(feature_cfg: FeatureConfig) -> str:
    """16 hex digits naming a cache folder: the resolved config's stored-value fields + format.
    Raises ConfigError for a config with a field still 'auto' (core/feature_fit.py fixes those)."""
    feature_cfg.require_resolved()
    resolved = FeatureConfig.from_dict(feature_cfg.to_dict()).to_dict()  # 500 and 500.0 agree
    keyed = {k: v for k, v in resolved.items() if k not in FIELDS_NOT_IN_CACHE_KEY}
    if keyed["front_end"] == "log_mel":  # the default: caches keep the keys they had before the field existed
        del keyed["front_end"]
    text = json.dumps({"cache_format": CACHE_FORMAT_VERSION, **keyed}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class FeatureCache:
    """Log-mel features of many clips, computed once, read memory-mapped.

    Layout: cache_dir/logmel-<feature_cache_key>/ holds config.json (the keyed config),
    features.f16 (float16 rows of (n_mels, n_frames), appended) and index.json
    ({"n_rows", "clips": {absolute path: [row, size, mtime_ns]}}). An entry counts only while
    its file keeps that size and mtime_ns; a changed file is recomputed into a new row (the
    old row stays behind as dead space: edited audio is rare). crop="random" takes one crop
    per clip, seeded by its path, so rebuilding reproduces it.

    Concurrency: any number of processes and threads may read. build() holds an exclusive
    fcntl.flock, so one process builds at a time; a second waits, then finds the work done.
    Rows an index points to are never rewritten and index.json is replaced atomically, so
    readers never see torn data and a killed build leaves the previous index. In a session
    the writer process builds before it launches a run; the run's child only reads (or calls
    build, which then has nothing to do).

    Other per-clip values computed from the audio (core/envelope.py's modulation rate) reuse
    this machinery by overriding kind, _key, _row_shape, _keyed_config and _clip_function.
    """

    kind = "logmel"  # the folder's prefix: <kind>-<key>

    def __init__(self, cache_dir: str | Path, feature_cfg: FeatureConfig) -> None:
        self.feature_cfg = feature_cfg
        self.folder = Path(cache_dir) / f"{self.kind}-{self._key()}"
        self.row_shape = self._row_shape()
        self._view = _IndexView(stamp=None, clips={}, array=self._mapped(0))

    def _key(self) -> str:
        return feature_cache_key(self.feature_cfg)

    def _row_shape(self) -> tuple[int, ...]:
        return self.feature_cfg.feature_shape

    def _keyed_config(self) -> dict[str, Any]:
        """What config.json records: the settings the stored values depend on."""
        keyed = {k: v for k, v in self.feature_cfg.to_dict().items() if k not in FIELDS_NOT_IN_CACHE_KEY}
        return {"cache_format": CACHE_FORMAT_VERSION, **keyed}

    def _clip_function(self) -> Callable[[str], np.ndarray]:
        """path -> one clip's stored row (float32, row_shape); raises AudioError. Built once per build."""
        transform = feature_transform(self.feature_cfg)

        def features(key: str) -> np.ndarray:
            wave = clip_waveform(key, self.feature_cfg, rng=clip_rng(key))
            # One clip per call: a 10 s spectrogram fits the CPU cache, a batch of 16 does not and
            # measured 3-4x slower per clip.
            with torch.inference_mode():
                return transform(torch.from_numpy(wave)[None])[0].numpy()
        return features

    @property
    def array(self) -> np.ndarray:
        """Every stored row, read-only and memory-mapped: float16 (n_rows, n_mels, n_frames)."""
        return self._current_view().array

    def __contains__(self, path: object) -> bool:
        """True when the clip is stored and its file has not changed since."""
        if not isinstance(path, (str, os.PathLike)):
            return False
        return self._current_view().row(os.path.abspath(path)) is not None

    def rows(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Row of each clip in `array`, int64 (len(paths),). Raises NotCachedError for any
        clip not stored or changed since (a training loop looks rows up once, then uses take)."""
        return self._rows(self._current_view(), paths)

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Features of the given rows as float32 (len(rows), n_mels, n_frames)."""
        return np.asarray(self.array[np.asarray(rows, dtype=np.int64)], dtype=np.float32)

    def get(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Features of the given clips as float32 (len(paths), n_mels, n_frames)."""
        view = self._current_view()
        return np.asarray(view.array[self._rows(view, paths)], dtype=np.float32)

    def build(self, paths: Sequence[str | Path], *, workers: int = 2, progress: bool = True) -> BuildReport:
        """Compute the clips that are missing or changed; reuse the rest. Idempotent.

        workers: threads computing clips, one clip each at a time (see _computed_clips).
        Files that cannot be loaded are listed in the report's failed with the reason, never
        raised, and are retried by the next build.
        """
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        started = time.perf_counter()
        self.folder.mkdir(parents=True, exist_ok=True)
        with _exclusive_lock(self.folder / LOCK_FILE):
            self._write_config()
            view = self._current_view()
            wanted = list(dict.fromkeys(os.path.abspath(p) for p in paths))
            todo = [key for key in wanted if view.row(key) is None]
            clips = dict(view.clips)
            n_rows = len(view.array)
            failed: dict[str, str] = {}
            committed_at = time.monotonic()
            with _open_data_file(self.folder / DATA_FILE, keep_rows=n_rows, row_shape=self.row_shape) as data, \
                    tqdm(total=len(todo), disable=not progress, unit="clip", desc="log-mel cache") as bar:
                for clip in _computed_clips(todo, self._clip_function(), workers=workers):
                    bar.update()
                    if clip.error is not None:
                        failed[clip.key] = clip.error
                        continue
                    data.write(clip.features.tobytes())
                    clips[clip.key] = [n_rows, *clip.stamp]
                    n_rows += 1
                    if time.monotonic() - committed_at > INDEX_COMMIT_INTERVAL_S:
                        self._commit(data, clips, n_rows)
                        committed_at = time.monotonic()
                self._commit(data, clips, n_rows)
        return BuildReport(computed=len(todo) - len(failed), reused=len(wanted) - len(todo),
                           failed=failed, seconds=time.perf_counter() - started)

    def _rows(self, view: _IndexView, paths: Sequence[str | Path]) -> np.ndarray:
        found = np.empty(len(paths), dtype=np.int64)
        missing = []
        for i, path in enumerate(paths):
            row = view.row(os.path.abspath(path))
            if row is None:
                missing.append(str(path))
            else:
                found[i] = row
        if missing:
            raise NotCachedError(f"{len(missing)} of {len(paths)} clips are not in the feature cache "
                                 f"{self.folder} or changed since it was built (first: {missing[0]}); "
                                 f"run build() on them first")
        return found

    def _current_view(self) -> _IndexView:
        """The newest published index; index.json is re-read only when it was replaced."""
        path = self.folder / INDEX_FILE
        try:
            stat = os.stat(path)
        except FileNotFoundError:
            return self._view
        view = self._view
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp != view.stamp:
            index = json.loads(path.read_text())
            # Rows only ever grow: an index read late by another thread must not replace a newer one.
            if index["n_rows"] >= len(view.array):
                view = _IndexView(stamp=stamp, clips=index["clips"], array=self._mapped(index["n_rows"]))
                self._view = view
        return view

    def _mapped(self, n_rows: int) -> np.ndarray:
        """The first n_rows rows of the data file, memory-mapped read-only (mmap cannot map 0 bytes)."""
        if n_rows == 0:
            return np.empty((0, *self.row_shape), dtype=np.float16)
        return np.memmap(self.folder / DATA_FILE, dtype=np.float16, mode="r", shape=(n_rows, *self.row_shape))

    def _commit(self, data: Any, clips: dict[str, list[int]], n_rows: int) -> None:
        """Make the rows written so far durable, then publish an index that points at them."""
        data.flush()
        os.fsync(data.fileno())
        _write_json_atomic(self.folder / INDEX_FILE, {"n_rows": n_rows, "clips": clips})

    def _write_config(self) -> None:
        path = self.folder / CONFIG_FILE
        if not path.exists():
            _write_json_atomic(path, self._keyed_config())


@dataclasses.dataclass(frozen=True)
class _IndexView:
    """One published index and the rows it points at; each public call reads through one view."""
    stamp: tuple[int, int, int] | None
    clips: dict[str, list[int]]
    array: np.ndarray  # float16 (n_rows, n_mels, n_frames), memory-mapped

    def row(self, key: str) -> int | None:
        """The clip's row, or None when it is not stored or its file changed since."""
        entry = self.clips.get(key)
        if entry is None or _file_stamp(key) != (entry[1], entry[2]):
            return None
        return entry[0]


@dataclasses.dataclass(frozen=True)
class _ComputedClip:
    """One clip's outcome: its float16 row (features (n_mels, n_frames)) and the (size, mtime_ns) read, or the error."""
    key: str
    stamp: tuple[int, int] | None = None
    features: np.ndarray | None = None
    error: str | None = None


def _computed_clips(keys: list[str], compute: Callable[[str], np.ndarray], *, workers: int) -> Iterator[_ComputedClip]:
    """Each key's row, in order, computed on `workers` threads.

    Threads rather than processes: reading, resampling and the STFT run in C with the GIL
    released, and on 2 cores two threads measured as fast as two processes, without the ~2 s
    it takes each process to import torch or a __main__ guard in every calling script. The
    parallelism comes from clips, so torch keeps one thread per op meanwhile: splitting one
    10 s STFT over busy cores made it slower, and it would oversubscribe large machines.
    """
    with torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        yield from pool.map(lambda key: _compute_clip(key, compute), keys)


def _compute_clip(key: str, compute: Callable[[str], np.ndarray]) -> _ComputedClip:
    stamp = _file_stamp(key)  # taken before reading: an edit during the read shows as stale
    if stamp is None:
        return _ComputedClip(key, error=f"missing: no file at {key}")
    try:
        row = compute(key)
    except AudioError as exc:
        return _ComputedClip(key, error=str(exc))
    return _ComputedClip(key, stamp=stamp, features=np.asarray(row).astype(np.float16))


def clip_rng(key: str) -> np.random.Generator:
    """A generator seeded by the clip's path, so a random crop is the same on every rebuild."""
    return np.random.default_rng(int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little"))


def _file_stamp(path: str) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, None when it cannot be stat'ed."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """torch's intra-op thread count set to count for the block (process-wide), then restored."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _exclusive_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on path (blocks while another process holds it)."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield  # closing the file releases the lock, also when the process dies


@contextlib.contextmanager
def _open_data_file(path: Path, *, keep_rows: int, row_shape: tuple[int, int]) -> Iterator[Any]:
    """The data file opened for appending after its first keep_rows rows.

    Anything beyond them was written by a build killed before committing its index; no index
    points there, so it is cut off and overwritten.
    """
    row_bytes = int(np.prod(row_shape)) * np.dtype(np.float16).itemsize
    with os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o644), "r+b") as data:
        data.truncate(keep_rows * row_bytes)
        data.seek(keep_rows * row_bytes)
        yield data


def _write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON to a temp file, fsync it, then os.replace: readers see old or new, never torn."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as handle:
        json.dump(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
