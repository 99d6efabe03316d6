"""Review: the annotator's tab. A queue of clips to listen to, the clip view, and decisions by key.

Every action is a decision in the log (core.review). The browser holds the next few clip views
(rendered by review_feed.py, sent through a hidden feed) and advances the moment a key is
pressed, while the decisions go to the server in the background, queued in order with a
sequence number: the server applies each once, strictly in sequence, and answers with the
refreshed window (review_handlers.py). A failed write (a conflict, a refusal) puts its clip
back on screen with the reason; a repeated key on a clip records nothing new; after the last
clip the queue says so, with what to do next. Decisions carry the last decision id the
annotator saw for the clip (0 for none), so a clip decided in the meantime by someone else is
reported instead of silently overwritten.
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from pipelines.review_queue import SOURCES, STATUSES, default_run
from workbench import review_handlers as handlers
from workbench.common import FREQUENCY_RANGES, WIDE, run_choices
from workbench.context import Workbench, current_tab, safe
from workbench.review_feed import HOTKEYS, keys_help

# earmark.js hands Gradio the queued commands when it clicks the hidden send button, and reads
# each answer (the feed) as soon as Gradio has it; see emReview in earmark.js.
TAKE_JS = "(commands, ...rest) => [window.emReview.take(), ...rest]"
ACK_JS = "(feed) => window.emReview.receive(feed, true)"
RECEIVE_JS = "(feed) => window.emReview.receive(feed, false)"
SERIAL = {"concurrency_id": "review", "concurrency_limit": 1}  # one writer, decisions strictly in order


@dataclass
class Layout:
    """The components the wiring names. The decision buttons, note and relabel box are read and
    clicked by earmark.js (by element id), like the keys; the server sees only their commands."""
    source: gr.Dropdown
    status: gr.Dropdown
    label_filter: gr.Dropdown
    reason_filter: gr.Dropdown  # a kind of reason (handlers.reasons), or text the reason contains
    annotator_filter: gr.Textbox
    run: gr.Dropdown
    frequency: gr.Dropdown
    load: gr.Button
    tag_buttons: list[gr.Button]
    legend: gr.HTML
    queue_table: gr.Dataframe
    commands: gr.Textbox  # hidden: the page's queued commands (JSON)
    feed: gr.Textbox      # hidden: the server's answer, review_feed.feed
    send: gr.Button       # hidden: earmark.js clicks it to send the commands
    queue_ids: gr.State
    position: gr.State    # index in the queue of the clip this page is on (len = past the end)
    applied: gr.State     # the last command sequence number applied for this page
    loaded_at: gr.State   # the newest decision id when the queue was loaded

    @property
    def load_inputs(self) -> list[gr.Component]:
        """What load_queue reads, in its order."""
        return [self.source, self.status, self.label_filter, self.reason_filter, self.annotator_filter, self.run,
                self.frequency, self.applied]

    @property
    def load_outputs(self) -> list[gr.Component]:
        """What load_queue fills."""
        return [self.queue_ids, self.queue_table, self.feed, self.position, self.loaded_at]

    @property
    def shown(self) -> list[gr.Component]:
        """What locates the clip on screen: reshow's and pick_row's inputs after the queue."""
        return [self.run, self.frequency, self.source, self.loaded_at, self.applied]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    wire(wb, layout(wb), annotator=annotator, tab=current_tab(), page=gr.context.Context.root_block)


def layout(wb: Workbench) -> Layout:
    rules = wb.store.rules()
    with gr.Row(equal_height=True):
        # Narrow filters, so the whole row (Load queue included) fits one line at 1440 px and
        # the run list is wide enough to show which run is production.
        source = gr.Dropdown(list(SOURCES), value="quarantine", label="queue", scale=1, min_width=120,
                             elem_id="em-review-source")
        status = gr.Dropdown(list(STATUSES), value="open", label="status", scale=1, min_width=110)
        label_filter = gr.Dropdown([""] + wb.labels(), value="", label="class", scale=1, min_width=120)
        reason_filter = gr.Dropdown(handlers.reasons(wb, "quarantine"), value=handlers.ANY_REASON,
                                    label="reason contains", allow_custom_value=True, scale=1, min_width=150,
                                    elem_id="em-review-reason")
        annotator_filter = gr.Textbox(label="decided by", scale=1, min_width=110)
        run = gr.Dropdown(run_choices(wb.store), value=default_run(wb.store), label="predictions of run", scale=3,
                          elem_id="em-review-run")
        frequency = gr.Dropdown(list(FREQUENCY_RANGES), value="0-4 kHz", label="frequency range", scale=1, min_width=110)
        load = gr.Button("Load queue", variant="secondary", scale=0, min_width=110)
    with gr.Row():
        with gr.Column(scale=3):
            gr.HTML(stage_html(), elem_id="em-review-stage")
        with gr.Column(scale=2):
            with gr.Row():
                # A button per digit, shown while a rule has that key: the rules are read again when
                # the tab is shown or the page loads (rule_views), so an edit in the Data tab counts
                # without a restart. Clicks are handled by earmark.js, like the keys.
                by_key = {rule.hotkey: rule for rule in rules if rule.hotkey}
                buttons = [gr.Button(f"{key}  {by_key[key].tag}" if key in by_key else key, visible=key in by_key,
                                     elem_id=f"em-tag-{key}", elem_classes=["em-tag"], size="sm", min_width=120)
                           for key in HOTKEYS]
            with gr.Row(equal_height=True):
                gr.Dropdown(wb.labels(), value=None, label="relabel to", scale=3, elem_id="em-relabel-to")
                gr.Button("Relabel", elem_id="em-relabel", size="sm", scale=1)
            with gr.Row():
                gr.Button("X  exclude", elem_id="em-exclude", size="sm")
                gr.Button("Q  keep quarantined", elem_id="em-keep", size="sm")
                gr.Button("U  undo my last", elem_id="em-undo", size="sm")
            gr.Textbox(label="note (saved with the next decision)", lines=1, elem_id="em-review-note")
            with gr.Row():
                gr.Button("\u2190 K  previous", elem_id="em-prev", size="sm")
                gr.Button("next  J \u2192", elem_id="em-next", size="sm")
            gr.HTML("<div class='em-msg'></div>", elem_id="em-review-message")
            legend = gr.HTML(keys_help(rules), elem_id="em-review-keys")
    queue_table = gr.Dataframe(label="queue (select a row to open it)", interactive=False, max_height=320, **WIDE)
    return Layout(source=source, status=status, label_filter=label_filter, reason_filter=reason_filter,
                  annotator_filter=annotator_filter, run=run, frequency=frequency, load=load, tag_buttons=buttons,
                  legend=legend, queue_table=queue_table,
                  commands=gr.Textbox(visible="hidden", elem_id="em-review-commands"),
                  feed=gr.Textbox(visible="hidden", elem_id="em-review-feed"),
                  send=gr.Button("send", visible="hidden", elem_id="em-review-send"),
                  queue_ids=gr.State([]), position=gr.State(0), applied=gr.State(0), loaded_at=gr.State(0))


def stage_html() -> str:
    """The part of the tab earmark.js owns: the counter and the clip slots. Gradio renders it
    once; the clips arrive through the hidden feed and are swapped in by JS."""
    return ("<div class='em-stage'>"
            "<div class='em-counter-box'></div><div class='em-slots'>"
            "<div class='em-slot em-loading'><p>Loading the queue&hellip;</p></div></div></div>")


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component, tab: gr.Tab, page: gr.Blocks) -> None:
    """Events to handlers; every event that reads or writes the queue runs in one serial lane
    (SERIAL), and each answer is handed to earmark.js (RECEIVE_JS, ACK_JS)."""
    load = safe(lambda *inputs: handlers.load_queue(wb, *inputs))
    reasons = safe(lambda src, chosen: handlers.reason_choices(wb, src, chosen))
    # Load queue and a new source first refresh the reasons offered (a kind the source has not
    # goes back to "any"), then load with the reason as it is then.
    for trigger in (ui.load.click, ui.source.change):
        trigger(reasons, [ui.source, ui.reason_filter], ui.reason_filter, show_progress="hidden"
                ).then(load, ui.load_inputs, ui.load_outputs, **SERIAL).then(None, ui.feed, None, js=RECEIVE_JS)
    # run.input, not run.change: the page load and the tab select below set the run list themselves;
    # reason select, not change: picking a kind loads at once, typed text waits for Load queue.
    for trigger in (ui.status.change, ui.label_filter.change, ui.run.input, ui.reason_filter.select):
        trigger(load, ui.load_inputs, ui.load_outputs, **SERIAL).then(None, ui.feed, None, js=RECEIVE_JS)

    @safe
    def on_page(src, st, lab, rea, ann, _, freq, applied):
        return handlers.open_page(wb, src, st, lab, rea, ann, freq, applied)

    page.load(on_page, ui.load_inputs, [ui.run, *ui.load_outputs], **SERIAL).then(None, ui.feed, None, js=RECEIVE_JS)
    tab.select(safe(lambda: handlers.fresh_runs(wb)), None, ui.run, show_progress="hidden")
    rule_views = safe(lambda: handlers.rule_views(wb))
    for trigger in (page.load, tab.select):
        trigger(rule_views, None, [ui.legend, *ui.tag_buttons], show_progress="hidden")
        trigger(reasons, [ui.source, ui.reason_filter], ui.reason_filter, show_progress="hidden")

    ui.frequency.change(safe(lambda ids, pos, *shown: handlers.reshow(wb, ids, pos, *shown)),
                        [ui.queue_ids, ui.position, *ui.shown], ui.feed, **SERIAL
                        ).then(None, ui.feed, None, js=RECEIVE_JS)

    @safe
    def on_row(ids, run_id, freq, src, loaded, applied, event: gr.SelectData):
        return handlers.pick_row(wb, ids, run_id, freq, src, loaded, applied, int(event.row_value[0]))

    ui.queue_table.select(on_row, [ui.queue_ids, *ui.shown], [ui.feed, ui.position], **SERIAL
                          ).then(None, ui.feed, None, js=RECEIVE_JS)

    @safe
    def on_commands(payload, name, ids, pos, applied, run_id, freq, src, loaded, request: gr.Request):
        return handlers.run_commands(wb, request, name, payload, ids, pos, applied, run_id, freq, src, loaded)

    ui.send.click(on_commands, [ui.commands, annotator, ui.queue_ids, ui.position, ui.applied, ui.run, ui.frequency,
                                ui.source, ui.loaded_at],
                  [ui.feed, ui.queue_table, ui.queue_ids, ui.position, ui.applied], js=TAKE_JS,
                  trigger_mode="multiple", show_progress="hidden", **SERIAL
                  ).then(None, ui.feed, None, js=ACK_JS)  # no spinners: work goes on behind
