"""The Data tab's augmentation preview: one clip before and after a list of augmentations.

Both versions get the Review player (listen, spectrogram with time and frequency axes), and
below them the log-mel the model is fed, before and after, where spectrogram steps such as
SpecAugment masks show. The draw comes from core.augment.preview with an explicit seed, so the
same clip, list and seed always give the same result, and the parameters applied are listed.
The list is YAML in the preset format, filled from a preset and editable.
"""
from __future__ import annotations

import base64
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd
import soundfile as sf
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from core.augment.pipeline import all_specs
from core.augment.preview import Preview, preview
from core.config import ConfigError, list_presets, load_preset, noise_bank_folder
from core.feature_fit import fit_to_session
from workbench.common import FREQUENCY_RANGES
from workbench.context import Workbench, safe
from workbench.renderer import clip_path, player_html, spectrogram_image

PREFERRED_PRESET = "sirens-focused"
STEP_COLUMNS = ["step", "name", "params"]


@dataclass
class Layout:
    """The preview's components, so the wiring (and a reader) can name each one."""
    clip: gr.Number
    preset: gr.Dropdown
    seed: gr.Number
    every_step: gr.Checkbox
    frequency: gr.Dropdown
    button: gr.Button
    specs: gr.Code
    noise_bank: gr.Textbox
    before: gr.HTML
    after: gr.HTML
    applied: gr.Dataframe
    log_mels: gr.Image


def build(wb: Workbench) -> None:
    pictures = Path(tempfile.mkdtemp(prefix="earmark-augment-"))  # Gradio serves files from the temp dir
    wire(wb, layout(wb), pictures=pictures)


def layout(wb: Workbench) -> Layout:
    presets = list_presets()
    usable = wb.store.labels()
    usable = usable[(usable.status == "ok") & usable.parent_clip_id.isna()]

    gr.Markdown("### Augmentation preview")
    with gr.Row(equal_height=True):
        clip = gr.Number(int(usable.clip_id.iloc[0]) if len(usable) else None, label="clip id", precision=0,
                         scale=1, elem_id="em-aug-clip")
        preset = gr.Dropdown(presets, value=PREFERRED_PRESET if PREFERRED_PRESET in presets else None,
                             label="augmentations of preset", scale=2)
        seed = gr.Number(0, label="seed", precision=0, scale=1)
        every_step = gr.Checkbox(True, label="apply every step (p = 1)", scale=1)
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-8 kHz", label="frequency range", scale=1)
        button = gr.Button("Preview", variant="primary", scale=1, elem_id="em-aug-preview")
    specs_text, bank = preset_fields(preset.value)
    specs = gr.Code(specs_text, language="yaml", lines=6, max_lines=14,
                    label="augmentations (YAML list of name / p / params, as in a preset)", elem_id="em-aug-specs")
    noise_bank = gr.Textbox(bank, elem_id="em-aug-noise-bank",
                            label="noise bank for background_noise: a folder on the server in MUSAN layout "
                                  "(music/, speech/, noise/), absolute or relative to the session folder; filled "
                                  "from the preset")
    with gr.Row():
        with gr.Column():
            gr.Markdown("**original**")
            before = gr.HTML(elem_id="em-aug-before")
        with gr.Column():
            gr.Markdown("**augmented**")
            after = gr.HTML(elem_id="em-aug-after")
    applied = gr.Dataframe(headers=STEP_COLUMNS, label="applied (in order)", interactive=False, wrap=True,
                           elem_id="em-aug-applied")
    log_mels = gr.Image(label="what the model sees: log-mel before and after", type="filepath", interactive=False,
                        height=300, visible=False, elem_id="em-aug-logmel")
    return Layout(clip=clip, preset=preset, seed=seed, every_step=every_step, frequency=frequency, button=button,
                  specs=specs, noise_bank=noise_bank, before=before, after=after, applied=applied, log_mels=log_mels)


def wire(wb: Workbench, ui: Layout, *, pictures: Path) -> None:
    """Events to handlers; `safe` turns a refusal into one toast that leaves the panels as they were."""
    ui.preset.change(safe(preset_fields), ui.preset, [ui.specs, ui.noise_bank])
    ui.button.click(safe(lambda *form: run_preview(wb, pictures, *form)),
                    [ui.clip, ui.preset, ui.specs, ui.seed, ui.every_step, ui.frequency, ui.noise_bank],
                    [ui.before, ui.after, ui.applied, ui.log_mels])


# --- handlers: plain values in, the outputs' new values out; a refusal raises ValueError -------
def preset_fields(name: str | None) -> list[str]:
    """The preset's augmentations as editable YAML and its noise bank ("[]" and "" without a preset)."""
    return [_preset_yaml(name), _preset_noise_bank(name)] if name else ["[]", ""]


def run_preview(wb: Workbench, pictures: Path, clip_id: float | None, preset_name: str | None, text: str,
                draw_seed: float | None, force: bool, freq: str, bank: str | None) -> list[Any]:
    """One draw of the listed augmentations on the clip: both players, the steps applied (STEP_COLUMNS)
    and the log-mels before and after, saved under `pictures`."""
    if clip_id is None:
        raise ValueError("Type the id of a clip to preview (the Review and Confusions tabs show clip ids).")
    path = clip_path(wb.store, int(clip_id))
    chosen = _parse_specs(text, force=force)
    # What that preset trains on in this session ('auto' fixed from its training clips, as a run would).
    features = fit_to_session(load_preset(preset_name).features, wb.store).features if preset_name else None
    typed = (bank or "").strip()
    folder = noise_bank_folder(typed, session_dir=wb.store.session_dir) if typed else None  # relative: the session's
    result = preview(path, chosen, seed=int(draw_seed or 0), feature_cfg=features, noise_bank=folder)
    fmax = FREQUENCY_RANGES[freq]
    steps = pd.DataFrame([{"step": r["step"], "name": r["name"], "params": json.dumps(r["params"], default=str)}
                          for r in result.applied], columns=STEP_COLUMNS)
    picture = pictures / f"clip{int(clip_id)}-seed{int(draw_seed or 0)}.png"
    return [_player(int(clip_id), result.original, result.sample_rate_hz, fmax),
            _player(int(clip_id), result.augmented, result.sample_rate_hz, fmax), steps,
            gr.Image(value=str(_log_mel_figure(result, picture)), visible=True)]


def _preset_yaml(name: str) -> str:
    return yaml.safe_dump([spec.to_dict() for spec in all_specs(load_preset(name))], sort_keys=False) or "[]"


def _preset_noise_bank(name: str | None) -> str:
    return (load_preset(name).noise_bank or "") if name else ""


def _parse_specs(text: str, *, force: bool) -> list[dict]:
    try:
        specs = yaml.safe_load(text or "[]") or []
    except yaml.YAMLError as exc:
        raise ConfigError(f"augmentations: not valid YAML ({exc})") from None
    if not isinstance(specs, list) or not all(isinstance(s, dict) for s in specs):
        raise ConfigError("augmentations: expected a YAML list of {name, p, params} entries")
    if not specs:
        raise ValueError("The augmentation list is empty: pick a preset with augmentations, or write one.")
    return [{**s, "p": 1.0} if force else s for s in specs]


def _player(clip_id: int, wave: np.ndarray, sample_rate_hz: int, fmax_hz: float | None) -> str:
    """The Review player on audio that exists only in memory: the WAV travels as a data URL."""
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(wave, -1, 1), sample_rate_hz, format="WAV", subtype="PCM_16")
    url = "data:audio/wav;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
    fmax = sample_rate_hz / 2 if fmax_hz is None else min(fmax_hz, sample_rate_hz / 2)
    image = spectrogram_image(wave, sample_rate_hz, fmax_hz=fmax)
    return player_html(clip_id=clip_id, audio_url=url, image=image, duration_s=len(wave) / sample_rate_hz,
                       fmax_hz=fmax)


def _log_mel_figure(result: Preview, path: Path) -> Path:
    """Both log-mels side by side on one colour scale, axes in frames and mel bands."""
    fig = Figure(figsize=(11, 3.2), layout="constrained")
    FigureCanvasAgg(fig)
    low = float(min(result.original_log_mel.min(), result.augmented_log_mel.min()))
    high = float(max(result.original_log_mel.max(), result.augmented_log_mel.max()))
    for ax, (title, values) in zip(fig.subplots(1, 2, sharey=True), (("before", result.original_log_mel),
                                                                     ("after", result.augmented_log_mel))):
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="magma", vmin=low, vmax=high)
        ax.set(title=title, xlabel="time (frames)", ylabel="mel band")
    fig.colorbar(image, ax=fig.axes, label="dB")
    fig.savefig(path, format="png", dpi=100)
    return path
