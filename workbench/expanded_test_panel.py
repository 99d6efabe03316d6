"""The Data tab's expanded-test-set panel (B4): draw N source groups x M clips per class from the
clips no training or validation group has touched, record them as a named clip set, and score the
production model on the test split and the new set (pipelines.expanded_test).

The form takes what `earmark expand-test` takes (one number for every class, or CLASS=N pairs);
a refusal (too few eligible groups, a name that exists without "replace", a bad count) is one
line beside the button and writes nothing. Building is signed with the annotator's name. The
result shows the set and the 95% accuracy intervals on test and on the set; the audits, metrics
and gates read the set by its name from then on.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import gradio as gr

from core.config import ConfigError
from core.store import StoreError
from pipelines.expanded_test import DEFAULT_NAME, ExpandedTestOutcome, build_expanded_test
from workbench.common import message_html
from workbench.context import Workbench, require_annotator, safe


@dataclass
class Layout:
    """The panel's components, so the wiring (and a reader) can name each one."""
    name: gr.Textbox
    groups: gr.Textbox
    per_group: gr.Textbox
    seed: gr.Number
    replace: gr.Checkbox
    score: gr.Checkbox
    build: gr.Button
    result: gr.HTML

    @property
    def form(self) -> list[gr.Component]:
        """What build_set reads after the annotator, in its order."""
        return [self.name, self.groups, self.per_group, self.seed, self.replace, self.score]


def build(wb: Workbench, *, annotator: gr.Component) -> None:
    wire(wb, layout(), annotator=annotator)


def layout() -> Layout:
    gr.Markdown("### Expanded test set")
    gr.Markdown("Many speakers or recordings x a few clips each, per class, drawn only from source groups with no "
                "clip in train or val. It is kept as a named set beside the test split: every audit scores it, and "
                "a preset's gates read it with `gates.split`. Counts: one number for every class, or "
                "`CLASS=N` pairs (plan B: groups `SPEECH=10,NONSPEECH=20`, clips `SPEECH=5,NONSPEECH=3`).")
    with gr.Row(equal_height=True):
        name = gr.Textbox(DEFAULT_NAME, label="set name", scale=2, elem_id="em-expand-name")
        groups = gr.Textbox(label="source groups per class", scale=2, placeholder="10  or  SPEECH=10,NONSPEECH=20",
                            elem_id="em-expand-groups")
        per_group = gr.Textbox(label="clips per group", scale=2, placeholder="5  or  SPEECH=5,NONSPEECH=3",
                               elem_id="em-expand-per-group")
        seed = gr.Number(0, label="seed", precision=0, minimum=0, scale=1, elem_id="em-expand-seed")
        replace = gr.Checkbox(label="replace a set of this name (its old version is kept)", scale=2,
                              elem_id="em-expand-replace")
        score = gr.Checkbox(True, label="score the production model on it", scale=2, elem_id="em-expand-score")
        button = gr.Button("Build set", variant="primary", scale=1, elem_id="em-expand-build")
    result = gr.HTML(elem_id="em-expand-result")
    return Layout(name=name, groups=groups, per_group=per_group, seed=seed, replace=replace, score=score,
                  build=button, result=result)


def wire(wb: Workbench, ui: Layout, *, annotator: gr.Component) -> None:
    """Events to handlers; `safe` turns a bug into one toast that leaves the panel as it was."""
    @safe
    def on_build(who, name, groups, per_group, seed, replace, score, request: gr.Request, progress=gr.Progress()):
        progress(0, desc="drawing the set")
        return build_set(wb, require_annotator(who, request), name, groups, per_group, seed, replace, score,
                         report=lambda done, total: progress((done, total), desc="scoring", unit="clips"))

    ui.build.click(on_build, [annotator, *ui.form], ui.result)


def build_set(wb: Workbench, actor: str, name: str | None, groups: str | None, per_group: str | None,
              seed: float | None, replace: bool, score: bool, *, report=None) -> str:
    """Build (and score) the set; the outcome's lines, or the refusal in one line."""
    def on_event(event: dict) -> None:
        if report is not None and event["type"] == "progress":
            report(int(event["done"]), int(event["total"]))

    try:
        outcome = build_expanded_test(wb.store, name=(name or "").strip(), groups=(groups or "").strip(),
                                      per_group=(per_group or "").strip(), seed=int(seed or 0), replace=bool(replace),
                                      actor=actor, score_with="production" if score else None, progress=False,
                                      on_event=on_event)
    except (ConfigError, StoreError) as exc:
        return message_html(f"Set not built: {exc}", error=True)
    return outcome_html(outcome)


def outcome_html(outcome: ExpandedTestOutcome) -> str:
    return f'<pre class="em-expand-summary">{html.escape(chr(10).join(outcome.lines()))}</pre>'
