"""The Data tab's VAD hygiene panel: a voice-activity detector listens to every speech and
non-speech clip, and the clips it contradicts go to the Review queue (reason vad_hygiene).

The form holds the settings a person adjusts (the detector, WebRTC's mode, the two speech-share
limits), each labelled and explained by its HygieneConfig field; Run measures the session in a
child process (pipelines.hygiene) with a progress bar fed by the child's events and shows the
outcome's lines. A bad value or a session without speech / non-speech labels is refused in one
line beside the button. The queued clips and every measured clip show the detector's frames as a
strip under the spectrogram (renderer.vad_strips_html).
"""
from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass

import gradio as gr

from core.config import ConfigError, HygieneConfig
from core.store import StoreError
from core.vad import VAD_NAMES, WEBRTC_MODES
from pipelines.hygiene import REASON, HygieneOutcome, hygiene
from workbench.common import message_html
from workbench.context import Workbench, safe
from workbench.renderer import ClipViewCache

# What the form shows of each HygieneConfig field; the help text is the field's own.
LABELS = {"vad": "detector", "mode": "WebRTC mode", "speech_min": "speech clips: at least this share speech",
          "nonspeech_max": "non-speech clips: at most this share speech"}
# (done, total) -> the progress bar; total is None until the child has counted the clips.
Report = Callable[[int, "int | None"], None]


@dataclass
class Layout:
    """The panel's components, so the wiring (and a reader) can name each one."""
    vad: gr.Radio
    mode: gr.Radio
    speech_min: gr.Number
    nonspeech_max: gr.Number
    run: gr.Button
    result: gr.HTML

    @property
    def form(self) -> list[gr.Component]:
        """What run_hygiene reads, in its order."""
        return [self.vad, self.mode, self.speech_min, self.nonspeech_max]


def build(wb: Workbench) -> None:
    wire(wb, layout())


def layout() -> Layout:
    defaults, help_text = HygieneConfig(), HygieneConfig.field_help()

    def label(key: str) -> str:
        return f"{LABELS[key]} ({key})"

    gr.Markdown("### VAD hygiene")
    gr.Markdown(f"A voice-activity detector listens to every {defaults.speech_label} and {defaults.nonspeech_label} "
                f"clip; the clips it contradicts go to the Review queue with reason `{REASON}`, and every measured "
                "clip shows the detector's frames as a strip under its spectrogram.")
    with gr.Row(equal_height=True):
        vad = gr.Radio(list(VAD_NAMES), value=defaults.vad, label=label("vad"), info=help_text["vad"], scale=2,
                       elem_id="em-hygiene-vad")
        mode = gr.Radio(list(WEBRTC_MODES), value=defaults.mode, label=label("mode"), info=help_text["mode"], scale=2,
                        visible=defaults.vad == "webrtc", elem_id="em-hygiene-mode")
        speech_min = gr.Number(defaults.speech_min, label=label("speech_min"), info=help_text["speech_min"], step=0.05,
                               scale=2, elem_id="em-hygiene-speech-min")
        nonspeech_max = gr.Number(defaults.nonspeech_max, label=label("nonspeech_max"), info=help_text["nonspeech_max"],
                                  step=0.01, scale=2, elem_id="em-hygiene-nonspeech-max")
        run = gr.Button("Run hygiene", variant="primary", scale=1, elem_id="em-hygiene-run")
    result = gr.HTML(elem_id="em-hygiene-result")
    return Layout(vad=vad, mode=mode, speech_min=speech_min, nonspeech_max=nonspeech_max, run=run, result=result)


def wire(wb: Workbench, ui: Layout) -> None:
    """Events to handlers; `safe` turns a bug into one toast that leaves the panel as it was."""
    ui.vad.change(safe(mode_field), ui.vad, ui.mode)

    @safe
    def on_run(vad, mode, speech_min, nonspeech_max, progress=gr.Progress()):
        progress(0, desc="starting the detector")
        bar = f"hygiene: {vad}"
        return run_hygiene(wb, vad, mode, speech_min, nonspeech_max,
                           report=lambda done, total: progress((done, total), desc=bar, unit="clips"))

    ui.run.click(on_run, ui.form, ui.result)


# --- handlers: plain values in, the outputs' new values out -------------------------------------
def mode_field(vad: str) -> gr.Radio:
    """WebRTC's mode is shown only while WebRTC is the detector."""
    return gr.Radio(visible=vad == "webrtc")


def run_hygiene(wb: Workbench, vad: str, mode: int | None, speech_min: float | None, nonspeech_max: float | None,
                *, report: Report | None = None) -> str:
    """Measure the session's speech and non-speech clips and queue the ones the detector
    contradicts (pipelines.hygiene); report(done, total) follows the child's progress. Returns
    the outcome's lines, or the refusal in one line (a bad value, no clips with both labels)."""
    def on_event(event: dict) -> None:
        if report is not None and event["type"] in ("start", "progress"):
            report(int(event.get("done", 0)), event.get("clips", event.get("total")))

    try:
        outcome = hygiene(wb.store, progress=False, on_event=on_event, vad=vad, mode=mode, speech_min=speech_min,
                          nonspeech_max=nonspeech_max)
    except (ConfigError, StoreError) as exc:
        gr.Warning(f"Hygiene not run: {exc}")
        return message_html(f"Hygiene not run: {exc}", error=True)
    # Clip views are cached by their newest decision: a clip measured but not queued would
    # otherwise be shown without its new strip until someone decides it.
    wb.views = ClipViewCache(wb.store)
    return outcome_html(outcome)


def outcome_html(outcome: HygieneOutcome) -> str:
    """The outcome's lines as written (red when the run failed), and where to review the queue."""
    if outcome.status != "succeeded":
        return message_html(" ".join(outcome.lines()), error=True)
    lines = html.escape("\n".join(outcome.lines()))
    where = (f"<p>Review them: the <a href='#' class='em-open-tab' data-tab='Review'>Review tab</a>, reason "
             f"<code>{REASON}</code>.</p>" if outcome.queued else "")
    return f'<pre class="em-vad-summary">{lines}</pre>{where}'
