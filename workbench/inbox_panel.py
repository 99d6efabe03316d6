"""The Data tab's inbox panel (A10 active learning): add unlabelled audio, rank it, label the top.

Add registers a folder on the server as unlabelled clips (pipelines.inbox.add_to_inbox: probed
like an import, bad files recorded with their reason). Score queues a job (workbench/job_queue.py)
in which the production model predicts every clip still without a label; the writer ranks them
by the chosen uncertainty and keeps the top K as the Review tab's "uncertain" queue. The line
under the form says how many clips wait, how the last scoring went, and follows a running job.
A refusal (no such folder, no model, an empty inbox, a bad setting) is one line beside the form.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from core.audio import AudioError
from core.config import ConfigError
from core.inbox_placement import ASSIGNMENTS
from core.store import StoreError
from core.uncertainty import METHODS, InboxConfig
from pipelines.importing import DatasetImportError
from pipelines.inbox import add_to_inbox, scoring_summary
from workbench.common import message_html
from workbench.context import Workbench, require_annotator, safe

REFUSALS = (ConfigError, StoreError, DatasetImportError, AudioError, ValueError)
ANY_CLASS = "(every class)"


@dataclass
class Layout:
    """The panel's components, so the wiring (and a reader) can name each one."""
    folder: gr.Textbox
    group_pattern: gr.Textbox
    assign: gr.Radio
    add: gr.Button
    method: gr.Radio
    k: gr.Number
    budget: gr.Number
    class_of_interest: gr.Dropdown
    score: gr.Button
    message: gr.HTML
    status: gr.HTML
    timer: gr.Timer
    seen_version: gr.State


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    wire(wb, layout(wb), annotator=annotator, blocks=gr.context.Context.root_block)


def layout(wb: Workbench) -> Layout:
    help_text = InboxConfig.field_help()
    gr.Markdown("### Inbox: unlabelled audio (active learning)")
    gr.Markdown("Add a folder of unlabelled recordings; the model ranks them by how unsure it is, and the most "
                "uncertain form the **uncertain** queue of the Review tab, labelled there with the class keys. A "
                "labelled clip joins the data with its source group and trains from the next fine-tune, after "
                "which the inbox is ranked again.")
    with gr.Row(equal_height=True):
        folder = gr.Textbox(label="folder of unlabelled audio (a path on the server)", scale=4, elem_id="em-inbox-folder")
        group_pattern = gr.Textbox(label="source-group regex on file names (first group)", scale=2,
                                   placeholder=r"^(rec\d+)_")
        assign = gr.Radio(list(ASSIGNMENTS), value="train", label="a labelled clip of a new group goes to", scale=2,
                          info="grouped: a seeded 60/20/20 draw per source group; a group already in a split joins it")
        add = gr.Button("Add to inbox", variant="primary", scale=1, elem_id="em-inbox-add")
    with gr.Row(equal_height=True):
        method = gr.Radio(list(METHODS), value="least_confident", label="uncertainty", info=help_text["method"], scale=3)
        k = gr.Number(0, label="K (0: derived)", info=help_text["k"], precision=0, minimum=0, scale=2)
        budget = gr.Number(0, label="labelling budget (0: none)", info=help_text["budget"], precision=0, minimum=0,
                           scale=2)
        class_of_interest = gr.Dropdown([ANY_CLASS, *wb.labels()], value=ANY_CLASS, label="only clips predicted as",
                                        info=help_text["class_of_interest"], scale=2)
        score = gr.Button("Score inbox", variant="primary", scale=1, elem_id="em-inbox-score")
    message = gr.HTML(elem_id="em-inbox-message")
    status = gr.HTML(_status_html(wb), elem_id="em-inbox-status")
    return Layout(folder=folder, group_pattern=group_pattern, assign=assign, add=add, method=method, k=k, budget=budget,
                  class_of_interest=class_of_interest, score=score, message=message, status=status,
                  timer=gr.Timer(2.0), seen_version=gr.State(-1))


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component, blocks: gr.Blocks | None) -> None:
    """Events to handlers; `safe` turns a bug into one toast that leaves the panel as it was.
    blocks: the app, whose served paths an added folder joins (its clips play in Review)."""
    @safe
    def on_add(folder, pattern, assign, progress=gr.Progress(track_tqdm=True)):
        return [add_folder(wb, blocks, folder, pattern, assign), _status_html(wb)]

    ui.add.click(on_add, [ui.folder, ui.group_pattern, ui.assign], [ui.message, ui.status])

    @safe
    def on_score(method, k, budget, interest, name, request: gr.Request):
        return [submit_scoring(wb, method, k, budget, interest, require_annotator(name, request)), _status_html(wb)]

    ui.score.click(on_score, [ui.method, ui.k, ui.budget, ui.class_of_interest, annotator], [ui.message, ui.status])

    @safe
    def on_tick(seen):
        version = wb.jobs.version if wb.jobs is not None else 0
        return [gr.skip(), seen] if version == seen else [_status_html(wb), version]

    ui.timer.tick(on_tick, ui.seen_version, [ui.status, ui.seen_version], show_progress="hidden")


# --- handlers: plain values in, the outputs' new values out -------------------------------------
def add_folder(wb: Workbench, blocks: gr.Blocks | None, folder: str | None, group_pattern: str | None,
               assign: str) -> str:
    """Add the folder's audio to the inbox; the import's lines, or the refusal in one line. The
    folder joins the paths `blocks` serves, as an import's root does (data_tab.run_import)."""
    if not folder or not folder.strip():
        return message_html("Type the folder of unlabelled audio first.", error=True)
    try:
        summary = add_to_inbox(wb.store, folder.strip(), group_pattern=(group_pattern or "").strip() or None,
                               assign=assign, progress=True)
    except REFUSALS as exc:
        return message_html(f"Nothing added: {exc}", error=True)
    root = str(wb.store.dataset_roots()[summary.dataset_id])
    if blocks is not None and root not in blocks.allowed_paths:
        blocks.allowed_paths.append(root)
    return f'<pre class="em-inbox-summary">{html.escape(chr(10).join(summary.lines()))}</pre>'


def submit_scoring(wb: Workbench, method: str, k: float | None, budget: float | None, interest: str | None,
                   who: str) -> str:
    """Queue the scoring of the inbox by the production model; one line either way."""
    if wb.jobs is None:
        return message_html("This workbench runs no jobs: score with 'earmark inbox score'.", error=True)
    options = {"method": method, "k": _count(k), "budget": _count(budget),
               "class_of_interest": None if interest in (None, "", ANY_CLASS) else interest}
    try:
        job = wb.jobs.submit_inbox_score(submitted_by=who, **options)
    except REFUSALS as exc:
        return message_html(f"Not scored: {exc}", error=True)
    return message_html(f"Scoring queued as job {job.run_id}; the queue appears in the Review tab ('uncertain') "
                        "when it ends.")


def _count(value: float | None) -> int | None:
    """A count typed in a number box; 0 or blank means not set (K derived, no budget cap)."""
    return None if not value else int(value)


def _status_html(wb: Workbench) -> str:
    """The inbox in one line, and the newest scoring job while it runs or just after."""
    line = html.escape(scoring_summary(wb.store))
    jobs = [job for job in (wb.jobs.jobs() if wb.jobs is not None else []) if job.kind == "inbox-score"]
    if jobs:
        job = jobs[-1]
        done = f" {job.fraction_done():.0%}" if not job.finished else ""
        line += f"<br>job {html.escape(job.run_id)}: {html.escape(job.state)}{done}"
        if job.finished and job.log:
            line += "<pre class='em-inbox-summary'>" + html.escape("\n".join(list(job.log)[-8:])) + "</pre>"
    return f"<div class='em-inbox-status'>{line}</div>"
