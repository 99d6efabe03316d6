"""The Data tab's near-duplicate panel (issue 17): find recordings that sit in two splits at once.

The form holds what a person may adjust (what compares the clips, how far a copy may differ in
gain and start), each labelled and explained by its DuplicatesConfig field; Run searches the
session in a child process (pipelines.duplicates) with a progress bar fed by the child's events,
and shows the outcome's lines: the share of test clips with a near-duplicate in train first of
all. The panel opens on the latest search's report. Candidates go to the Review queue (reason
near_duplicate), where each is shown beside its partner (duplicate_pair.py). A bad value or a
model that cannot embed is refused in one line beside the button.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from core.config import ConfigError, DuplicatesConfig
from core.store import Store, StoreError
from pipelines.duplicates import REASON, DuplicatesOutcome, find_duplicates
from workbench.common import message_html
from workbench.context import Workbench, safe
from workbench.renderer import ClipViewCache

LABELS = {"embedding": "compare clips by", "copy_gain_db": "a copy may differ in gain by up to (dB)",
          "copy_shift_s": "a copy may start earlier or later by up to (s)"}


@dataclass
class Layout:
    """The panel's components, so the wiring (and a reader) can name each one."""
    embedding: gr.Radio
    copy_gain_db: gr.Number
    copy_shift_s: gr.Number
    run: gr.Button
    result: gr.HTML

    @property
    def form(self) -> list[gr.Component]:
        """What run_search reads, in its order."""
        return [self.embedding, self.copy_gain_db, self.copy_shift_s]


def build(wb: Workbench) -> None:
    wire(wb, layout(wb))


def layout(wb: Workbench) -> Layout:
    defaults, help_text = DuplicatesConfig(), DuplicatesConfig.field_help()
    gr.Markdown("### Near-duplicates across splits")
    gr.Markdown("The same recording in train and in test turns the test score into a memory test. The search compares "
                "every clip with its nearest neighbours and learns from copies of the session's own clips how alike a "
                f"duplicate is; held-out clips with a partner in another split go to the Review queue with reason "
                f"`{REASON}`, shown beside their partner.")
    with gr.Row(equal_height=True):
        embedding = gr.Radio(["auto", "model", "logmel"], value=defaults.embedding, label=LABELS["embedding"],
                             info=help_text["embedding"], scale=3, elem_id="em-dup-embedding")
        gain = gr.Number(defaults.copy_gain_db, label=LABELS["copy_gain_db"], info=help_text["copy_gain_db"], step=1,
                         scale=2, elem_id="em-dup-gain")
        shift = gr.Number(defaults.copy_shift_s, label=LABELS["copy_shift_s"], info=help_text["copy_shift_s"],
                          step=0.05, scale=2, elem_id="em-dup-shift")
        run = gr.Button("Find near-duplicates", variant="primary", scale=1, elem_id="em-dup-run")
    result = gr.HTML(latest_report_html(wb.store), elem_id="em-dup-result")
    return Layout(embedding=embedding, copy_gain_db=gain, copy_shift_s=shift, run=run, result=result)


def wire(wb: Workbench, ui: Layout) -> None:
    """Events to handlers; `safe` turns a bug into one toast that leaves the panel as it was."""
    @safe
    def on_run(embedding, gain, shift, progress=gr.Progress()):
        progress(0, desc="starting the search")
        return run_search(wb, embedding, gain, shift,
                          report=lambda done, total: progress((done, total), desc="embedding clips", unit="clips"))

    ui.run.click(on_run, ui.form, ui.result)


# --- handlers: plain values in, the outputs' new values out -------------------------------------
def run_search(wb: Workbench, embedding: str, copy_gain_db: float | None, copy_shift_s: float | None, *,
               report=None) -> str:
    """Search the session (pipelines.duplicates); report(done, total) follows the child's
    progress. Returns the outcome's lines, or the refusal in one line."""
    def on_event(event: dict) -> None:
        if report is not None and event["type"] in ("start", "progress"):
            report(int(event.get("done", 0)), event.get("clips", event.get("total")))

    options = {name: value for name, value in (("copy_gain_db", copy_gain_db), ("copy_shift_s", copy_shift_s))
               if value is not None}
    try:
        outcome = find_duplicates(wb.store, progress=False, on_event=on_event, embedding=embedding, **options)
    except (ConfigError, StoreError) as exc:
        gr.Warning(f"Search not run: {exc}")
        return message_html(f"Search not run: {exc}", error=True)
    wb.views = ClipViewCache(wb.store)  # queued clips show their new partner
    return outcome_html(outcome)


def outcome_html(outcome: DuplicatesOutcome) -> str:
    """The outcome's lines (red when the run failed), and where to review its candidates."""
    if outcome.status != "succeeded":
        return message_html(" ".join(outcome.lines()), error=True)
    return _report_html(outcome.lines(), queued=len(outcome.queued))


def latest_report_html(store: Store) -> str:
    """The latest finished search's report as stored with its run, or a line saying there is none yet."""
    runs = store.runs(kind="duplicates")
    runs = runs[runs.status == "succeeded"]
    if runs.empty:
        return "<p class='em-muted'>No search yet in this session.</p>"
    summary = store.run(runs.id.iloc[0])["summary"] or {}
    lines = [f"latest search {runs.id.iloc[0]}: {summary.get('message', '')}"]
    for split, entry in (summary.get("leakage") or {}).items():
        lines.append(f"  {split}: {entry['with_train']} of {entry['clips']} clips ({entry['share']:.1%}) have a "
                     "near-duplicate in train")
    return _report_html(lines, queued=int(summary.get("queued", 0)))


def _report_html(lines: list[str], *, queued: int) -> str:
    where = (f"<p>Review them: the <a href='#' class='em-open-tab' data-tab='Review'>Review tab</a>, reason "
             f"<code>{REASON}</code>.</p>" if queued else "")
    return f'<pre class="em-dup-summary">{html.escape(chr(10).join(lines))}</pre>{where}'
