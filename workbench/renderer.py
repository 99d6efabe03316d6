"""The clip view: audio player + spectrogram with real axes, rendered fast, cached and prefetched.

Why not matplotlib: a fresh figure per clip costs ~280 ms here. Instead the STFT (torch) is
colour-mapped through a lookup table at display resolution and PNG-encoded with light
compression (a few ms), and the axes are HTML around the image, so ticks stay crisp and the
playhead (moved by earmark.js from the <audio> element's currentTime) lines up with the time
axis exactly. Audio is served by Gradio's file route, which only serves the session's dataset
roots (allowed_paths); paths outside them are refused here too.
"""
from __future__ import annotations

import base64
import dataclasses
import functools
import html
import io
import json
import threading
import urllib.parse
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
import torch
from matplotlib import colormaps
from PIL import Image

from core.checkpoint import checkpoint_dir, checkpoint_labels, has_checkpoint
from core.run_folder import RESULT_FILE
from core.store import UNLABELLED_SPLIT, Store
from pipelines.inbox import latest_scoring

DISPLAY_WIDTH_PX = 900
DISPLAY_HEIGHT_PX = 300
DYNAMIC_RANGE_DB = 80.0
N_FFT = 1024
# A colour lookup table built once: uint8 (256, 3), magma is perceptually uniform and prints well.
_LUT = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)


class ClipUnavailable(ValueError):
    """The clip cannot be shown (unreadable, missing, or outside the dataset roots); says why."""


@dataclasses.dataclass(frozen=True)
class ClipAudio:
    path: Path
    wave: np.ndarray        # mono float32
    sample_rate_hz: int


def clip_path(store: Store, clip_id: int) -> Path:
    """Absolute path of a clip, refusing anything that resolves outside its dataset root."""
    clip = store.clip(clip_id)
    root = Path(clip["dataset_root"]).resolve()
    path = (root / clip["path"]).resolve()
    if not path.is_relative_to(root):
        raise ClipUnavailable(f"clip {clip_id}: {clip['path']} lies outside its dataset root {root}; not served")
    if clip["status"] != "ok":
        raise ClipUnavailable(f"clip {clip_id} is unreadable: {clip['reason']}")
    return path


def read_clip(store: Store, clip_id: int) -> ClipAudio:
    path = clip_path(store, clip_id)
    try:
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, OSError) as exc:
        raise ClipUnavailable(f"clip {clip_id}: cannot read {path.name}: {exc}") from None
    return ClipAudio(path=path, wave=data.mean(axis=1), sample_rate_hz=int(rate))


def spectrogram_image(wave: np.ndarray, sample_rate_hz: int, *, fmax_hz: float | None = None,
                      width_px: int = DISPLAY_WIDTH_PX, height_px: int = DISPLAY_HEIGHT_PX) -> bytes:
    """Linear-frequency power spectrogram in dB (peak - 80 dB floor), 0..fmax_hz, as JPEG bytes.

    About one STFT frame per pixel column; only bins up to fmax_hz are turned into power; rows
    are resampled to height_px with low frequencies at the bottom. JPEG at quality 90: PNG
    encoding of a 900x300 spectrogram costs ~30 ms here against ~3 ms, with no visible loss.
    """
    nyquist = sample_rate_hz / 2
    fmax = nyquist if fmax_hz is None else min(float(fmax_hz), nyquist)
    signal = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    if signal.numel() < N_FFT:
        signal = torch.nn.functional.pad(signal, (0, N_FFT - signal.numel()))
    hop = max(1, signal.numel() // width_px)
    top_bin = max(2, int(round(fmax / nyquist * (N_FFT // 2))) + 1)
    spectrum = torch.stft(signal, N_FFT, hop_length=hop, window=_window(), return_complex=True)[:top_bin]
    power = torch.view_as_real(spectrum).square().sum(-1).numpy()
    db = 10 * np.log10(np.maximum(power, 1e-12))
    db = np.clip((db - (db.max() - DYNAMIC_RANGE_DB)) / DYNAMIC_RANGE_DB, 0, 1)
    rows = np.linspace(top_bin - 1, 0, height_px).round().astype(int)           # flip: low at the bottom
    cols = np.linspace(0, db.shape[1] - 1, width_px).round().astype(int)
    image = _LUT[(db[rows][:, cols] * 255).astype(np.uint8)]
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


@functools.lru_cache(maxsize=1)
def _window() -> torch.Tensor:
    return torch.hann_window(N_FFT)


def _frequency_ticks(fmax_hz: float) -> list[tuple[float, str]]:
    step = next(s for s in (100, 250, 500, 1000, 2000, 4000, 8000, 16000) if fmax_hz / s <= 8)
    return [(f / fmax_hz, f"{f / 1000:g} kHz" if f >= 1000 else f"{f:g} Hz") for f in np.arange(0, fmax_hz + 1, step)]


def _time_ticks(duration_s: float) -> list[tuple[float, str]]:
    step = next(s for s in (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120) if duration_s / s <= 12)
    return [(t / duration_s, f"{t:g}") for t in np.arange(0, duration_s + 1e-9, step)]


def vad_strips_html(measurements: pd.DataFrame, *, duration_s: float) -> str:
    """One strip per voice-activity detector under the spectrogram, on its time axis: each frame
    is shaded by its speech score (white = none, green = speech), so an annotator sees where
    speech was heard. measurements: Store.vad_measurements rows of one clip."""
    rows = []
    for row in measurements.itertuples():
        scores = np.asarray(row.frame_scores, dtype=float)
        if not len(scores) or duration_s <= 0:
            continue
        stops = []
        for i, score in enumerate(scores):
            left = min(100.0, 100 * i * row.frame_s / duration_s)
            right = min(100.0, 100 * (i + 1) * row.frame_s / duration_s)
            green = f"rgba(30,132,73,{0.1 + 0.9 * min(max(score, 0.0), 1.0):.2f})" if score > 0 else "transparent"
            stops.append(f"{green} {left:.2f}% {right:.2f}%")
        title = f"{row.detector}: {row.fraction:.0%} of frames speech"
        rows.append(f'<div class="em-vad-row" title="{html.escape(title)}">'
                    f'<span class="em-vad-name">{html.escape(str(row.detector))}</span>'
                    f'<div class="em-vad-strip" style="background:linear-gradient(to right,{",".join(stops)})">'
                    f'<span class="em-vad-share">{row.fraction:.0%} speech</span></div></div>')
    return f'<div class="em-vad">{"".join(rows)}</div>' if rows else ""


def player_html(*, clip_id: int, audio_url: str, image: bytes, duration_s: float, fmax_hz: float,
                vad_strips: str = "") -> str:
    """The audio element and the spectrogram with axes (and VAD strips under it, when the clip
    was measured); earmark.js drives speed, loop, playhead."""
    freq_ticks = "".join(f'<span class="em-ftick" style="bottom:{100 * y:.2f}%">{html.escape(label)}</span>'
                         for y, label in _frequency_ticks(fmax_hz))
    time_ticks = "".join(f'<span class="em-ttick" style="left:{100 * x:.2f}%">{html.escape(label)}</span>'
                         for x, label in _time_ticks(duration_s))
    encoded = base64.b64encode(image).decode("ascii")
    return f"""
<div class="em-player" data-clip="{clip_id}" data-duration="{duration_s:.3f}">
  <div class="em-spec-row">
    <div class="em-faxis">{freq_ticks}<span class="em-axis-title em-faxis-title">frequency</span></div>
    <div class="em-spec" title="click to seek">
      <img class="em-spec-img" alt="spectrogram of clip {clip_id}" src="data:image/jpeg;base64,{encoded}">
      <div class="em-playhead"></div>
    </div>
  </div>
  {vad_strips}
  <div class="em-taxis">{time_ticks}<span class="em-axis-title em-taxis-title">time (s)</span></div>
  <div class="em-controls">
    <audio class="em-audio" controls preload="auto" src="{html.escape(audio_url)}"></audio>
    <label>speed <select class="em-speed">{''.join(f'<option value="{s}"{" selected" if s == 1 else ""}>{s}x</option>' for s in (0.5, 0.75, 1, 1.25, 1.5, 2))}</select></label>
    <label><input type="checkbox" class="em-loop"> loop</label>
  </div>
</div>"""


def audio_url(path: Path) -> str:
    """Gradio's file route (it serves only allowed_paths: the session's dataset roots)."""
    return "/gradio_api/file=" + urllib.parse.quote(str(path))


@dataclasses.dataclass
class ClipView:
    clip_id: int
    html: str
    details: dict[str, Any]                 # dataset, path, duration, sample rate, split, group, labels
    probabilities: pd.DataFrame             # class, probability (empty without a run)
    history: pd.DataFrame                   # the clip's decisions, newest first
    last_decision_id: int                   # newest in history (undos too); 0 for none: any decision since is news


def render_clip_view(store: Store, clip_id: int, *, run_id: str | None = None, fmax_hz: float | None = None) -> ClipView:
    """Everything the Review/Confusions panes show for one clip (server side)."""
    audio = read_clip(store, clip_id)
    duration = len(audio.wave) / audio.sample_rate_hz
    fmax = audio.sample_rate_hz / 2 if fmax_hz is None else min(fmax_hz, audio.sample_rate_hz / 2)
    image = spectrogram_image(audio.wave, audio.sample_rate_hz, fmax_hz=fmax)
    state = store.clip_state(clip_id)
    clip = store.clip(clip_id)
    details = {"clip": clip_id, "dataset": clip["dataset"], "file": clip["path"], "duration_s": round(duration, 2),
               "sample_rate_hz": audio.sample_rate_hz, "split": state["split"], "source_group": state["source_group"],
               "given label": state["original_label"], "current label": state["label"],
               "excluded": bool(state["excluded"]), "quarantined": bool(state["quarantined"])}
    probabilities = pd.DataFrame(columns=["class", "probability"])
    run_id = predicting_run(store, run_id, clip)
    if run_id:
        row = store.prediction(run_id, clip_id)
        if row is not None:
            names = run_labels(Path(store.run(run_id)["run_dir"]))
            probs = np.asarray(row["probs"], dtype=float)
            probabilities = (pd.DataFrame({"class": names, "probability": probs.round(4)})
                             .sort_values("probability", ascending=False).head(6))
            details["predicted"] = row["predicted"]
            details["confidence"] = round(float(row["confidence"]), 3)
    history = store.decisions(clip_id=clip_id)[["id", "created_at", "annotator", "action", "tag", "new_label", "note", "undone"]]
    strips = vad_strips_html(store.vad_measurements(clip_id=clip_id), duration_s=duration)
    return ClipView(clip_id=clip_id, html=player_html(clip_id=clip_id, audio_url=audio_url(audio.path), image=image,
                                                       duration_s=duration, fmax_hz=fmax, vad_strips=strips),
                    details=details, probabilities=probabilities, history=history,
                    last_decision_id=int(history.id.max()) if len(history) else 0)


def predicting_run(store: Store, run_id: str | None, clip: dict[str, Any]) -> str | None:
    """The run whose prediction a clip's view shows: run_id; for an inbox clip that run_id never
    predicted, the newest scoring of the inbox (its probabilities are why the clip is queued)."""
    if clip["split"] != UNLABELLED_SPLIT or (run_id and store.prediction(run_id, int(clip["id"])) is not None):
        return run_id
    scoring = latest_scoring(store)
    return run_id if scoring is None else scoring["id"]


def newest_decision_id(store: Store, clip_id: int) -> int:
    """The clip's newest decision id, undos and undone decisions included (0 for none): what its
    history shows changes exactly when this does."""
    newest = store.decisions(clip_id=clip_id, limit=1)
    return int(newest.id.iloc[0]) if len(newest) else 0


@functools.lru_cache(maxsize=64)
def run_labels(run_dir: Path) -> list[str]:
    """The class order of a run's probability vectors (saved in its checkpoint; runs are immutable)."""
    if has_checkpoint(checkpoint_dir(run_dir)):
        return checkpoint_labels(checkpoint_dir(run_dir))
    result = run_dir / RESULT_FILE  # a run that predicts unlabelled clips (an inbox scoring) names its model's classes
    if result.exists() and "labels" in (saved := json.loads(result.read_text())):
        return list(saved["labels"])
    manifest = run_dir / "manifest.parquet"
    return sorted(pd.read_parquet(manifest, columns=["label"]).label.unique())


class ClipViewCache:
    """LRU of rendered clip views with background prefetch of the next clips in a queue.

    Entries are keyed by (clip, run, fmax, newest decision id), so a new decision on a clip, or
    an undo (which leaves its last effective decision as it was before), re-renders its details
    and history while an unchanged clip is served from memory.
    """

    def __init__(self, store: Store, *, capacity: int = 64) -> None:
        self._store = store
        self._capacity = capacity
        self._items: OrderedDict[tuple, ClipView] = OrderedDict()
        self._lock = threading.Lock()

    def _key(self, clip_id: int, run_id: str | None, fmax_hz: float | None) -> tuple:
        return (clip_id, run_id, fmax_hz, newest_decision_id(self._store, clip_id))

    def get(self, clip_id: int, *, run_id: str | None = None, fmax_hz: float | None = None) -> ClipView:
        key = self._key(clip_id, run_id, fmax_hz)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        view = render_clip_view(self._store, clip_id, run_id=run_id, fmax_hz=fmax_hz)
        with self._lock:
            self._items[key] = view
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)
        return view

    def prefetch(self, clip_ids: list[int], *, run_id: str | None = None, fmax_hz: float | None = None) -> None:
        """Render the given clips in a background thread (errors are ignored: shown on visit)."""
        def work() -> None:
            for clip_id in clip_ids:
                try:
                    self.get(clip_id, run_id=run_id, fmax_hz=fmax_hz)
                except Exception:  # an unreadable clip is reported when the user reaches it
                    continue
        threading.Thread(target=work, daemon=True).start()
