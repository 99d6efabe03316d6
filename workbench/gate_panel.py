"""The promote-or-keep panel of one training run, shown by Train (after a job) and Runs.

What a person needs to decide, in the order they need it: the verdict; plan A's A8 checklist
(test accuracy, key-class extreme-off change, a spot-check of 5 relabelled clips, the
regression check); every gate criterion with its numbers; the relabelled clips and the clips
the candidate newly gets wrong, each playable. Promote is enabled only when every gate passes;
Override needs a reason and is signed with the annotator's name (pipelines/promotion.py).
The gate report is read from the run folder, where the job (or an earlier press of Evaluate
gates) saved it, so the panel looks the same after a server restart.
"""
from __future__ import annotations

import dataclasses
import html
import json
from pathlib import Path
from typing import Any

import gradio as gr
import pandas as pd

from core.store import StoreError
from pipelines.audit import latest_audit, spot_check
from pipelines.finetune import describe_transfer
from pipelines.promotion import GATE_REPORT_FILE, GATES_DIR, gate_report, promote
from workbench.common import WIDE, message_html
from workbench.context import Workbench, require_annotator, safe

SPOT_CHECK_CLIPS = 5
SPOT_CHECK_FMAX_HZ = 4000.0
REGRESSION_COLUMNS = ["clip", "label", "production predicted", "candidate predicted"]
STATUS_STYLE = {"pass": "color:#1e8449;font-weight:600", "fail": "color:#c0392b;font-weight:600", "n/a": "color:#7f8c8d"}
BANNER = "padding:10px 14px;border-radius:6px;font-size:15px;margin-bottom:8px"


@dataclasses.dataclass
class GatePanel:
    column: gr.Column
    run_id: gr.State
    verdict: gr.HTML
    checklist: gr.HTML
    criteria: gr.HTML
    spot_check: gr.HTML
    regressions: gr.Dataframe
    regression_player: gr.HTML
    promote: gr.Button
    override: gr.Button
    message: gr.HTML

    @property
    def outputs(self) -> list[gr.Component]:
        """What render() fills, in its order."""
        return [self.column, self.run_id, self.verdict, self.checklist, self.criteria, self.spot_check,
                self.regressions, self.regression_player, self.promote, self.override, self.message]


def load_report(wb: Workbench, run_id: str) -> dict[str, Any] | None:
    """The run's saved gate report, or None before its gates were evaluated."""
    path = Path(wb.store.run(run_id)["run_dir"]) / GATES_DIR / GATE_REPORT_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def build(wb: Workbench, *, annotator: gr.Component, prefix: str) -> GatePanel:
    """The panel's components (hidden until render() gets a run with a gate report) and handlers.

    prefix keeps element ids unique when two tabs each hold a panel.
    """
    with gr.Column(visible=False, elem_id=f"{prefix}-gates") as column:
        run_id = gr.State(None)
        verdict = gr.HTML(elem_id=f"{prefix}-verdict")
        with gr.Row():
            checklist = gr.HTML(elem_id=f"{prefix}-checklist")
            criteria = gr.HTML(elem_id=f"{prefix}-criteria")
        with gr.Row(equal_height=True):
            promote_button = gr.Button("Promote to production", variant="primary", interactive=False,
                                       elem_id=f"{prefix}-promote", scale=1)
            reason = gr.Textbox(label="override reason (required to promote despite failing gates; signed with your name)",
                                elem_id=f"{prefix}-reason", scale=3)
            override_button = gr.Button("Override and promote", variant="stop", interactive=False,
                                        elem_id=f"{prefix}-override", scale=1)
        message = gr.HTML(elem_id=f"{prefix}-decision")
        with gr.Accordion(f"Spot-check: up to {SPOT_CHECK_CLIPS} relabelled clips, listen again before promoting", open=True):
            spot = gr.HTML(elem_id=f"{prefix}-spot-check")
        with gr.Accordion("Regression check: the clips the candidate newly gets wrong (select one to listen)", open=True):
            with gr.Row():
                regressions = gr.Dataframe(headers=REGRESSION_COLUMNS, interactive=False, max_height=300, scale=2,
                                           elem_id=f"{prefix}-regressions", **WIDE)
                regression_player = gr.HTML(scale=3)
    panel = GatePanel(column=column, run_id=run_id, verdict=verdict, checklist=checklist, criteria=criteria,
                      spot_check=spot, regressions=regressions, regression_player=regression_player,
                      promote=promote_button, override=override_button, message=message)

    @safe
    def on_promote(run, name, request: gr.Request):
        return promote_run(wb, run, require_annotator(name, request))

    @safe
    def on_override(run, name, why, request: gr.Request):
        actor = require_annotator(name, request)
        if not (why or "").strip():
            gr.Warning(OVERRIDE_NEEDS_REASON)  # a toast beside the line the panel shows
        return override_run(wb, run, actor, why)

    @safe
    def on_regression(run, event: gr.SelectData):
        return play_regression(wb, run, event.row_value)

    promote_button.click(on_promote, [run_id, annotator], panel.outputs)
    override_button.click(on_override, [run_id, annotator, reason], panel.outputs)
    regressions.select(on_regression, run_id, regression_player)
    return panel


# --- handlers: plain values in, the panel's new values out ------------------------------------------
OVERRIDE_NEEDS_REASON = "An override needs a reason: say why this run should replace production despite its failing gates."


def promote_run(wb: Workbench, run_id: str, actor: str) -> list[Any]:
    """Promote run_id if its gates pass (pipelines.promotion refuses otherwise); the panel redrawn
    with the outcome's first line."""
    outcome = promote(wb.store, run_id=run_id, actor=actor)
    return _after_decision(wb, run_id, outcome.lines())


def override_run(wb: Workbench, run_id: str, actor: str, why: str | None) -> list[Any]:
    """Promote run_id despite failing gates, signed by actor with the reason why; without a reason
    nothing is written and the panel stays as it was, with the reason asked for."""
    if not (why or "").strip():
        return render(wb, run_id, message=message_html(OVERRIDE_NEEDS_REASON, error=True))
    outcome = promote(wb.store, run_id=run_id, actor=actor, override=True, reason=why.strip())
    return _after_decision(wb, run_id, outcome.lines())


def play_regression(wb: Workbench, run_id: str, row: list[Any]) -> str:
    """A row of the regression table (clip, label, production said, this run says) as a player."""
    clip_id, label, before, now = row
    return _clip_html(wb, int(clip_id), run_id, caption=f"clip {clip_id}: label {html.escape(str(label))}; production "
                                                        f"said {html.escape(str(before))}, this run says {html.escape(str(now))}")


def render(wb: Workbench, run_id: str | None, *, message: str = "") -> list[Any]:
    """Values for GatePanel.outputs; hidden when the run has no gate report."""
    report = load_report(wb, run_id) if run_id else None
    if report is None:
        return [gr.Column(visible=False), run_id, "", "", "", "", pd.DataFrame(columns=REGRESSION_COLUMNS), "",
                gr.Button(interactive=False), gr.Button(interactive=False), message]
    production = wb.store.production_run()
    is_production = production == run_id
    passed = bool(report["passed"])
    regressions = pd.DataFrame([[c["clip_id"], c["label"], c["baseline"], c["candidate"]] for c in report["newly_wrong"]],
                               columns=REGRESSION_COLUMNS)
    verdict = _verdict_html(report, production, is_production, start=_start_line(wb, run_id, report))
    return [gr.Column(visible=True), run_id, verdict,
            _checklist_html(wb, report), _criteria_html(report), _spot_check_html(wb, run_id, report), regressions, "",
            gr.Button(interactive=passed and not is_production),
            gr.Button(interactive=not passed and not is_production), message]


def evaluate(wb: Workbench, run_id: str) -> list[Any]:
    """Evaluate (or re-evaluate) a run's gates now, then render the panel (Runs: for runs
    audited outside a workbench job)."""
    gate_report(wb.store, run_id=run_id)
    return render(wb, run_id, message=_note(f"gates of run {run_id} evaluated"))


def _after_decision(wb: Workbench, run_id: str, lines: list[str]) -> list[Any]:
    return render(wb, run_id, message=_note(lines[0]))


def _note(text: str) -> str:
    return message_html(text)


# --- the parts ------------------------------------------------------------------------------

def _start_line(wb: Workbench, run_id: str, report: dict[str, Any]) -> str:
    """What the run started from and how many of its tensors it kept: a run that kept few of them
    was trained from random weights, whatever its preset says."""
    run = wb.store.run(run_id)
    parent, init = run["parent_run_id"], (run["summary"] or {}).get("init")
    if parent is None:
        return "Trained from scratch (the preset's own start)."
    start = f"production run {parent}" if parent == report["production_run_id"] else f"run {parent}"
    line = describe_transfer(start, init) if init else f"started from {start}"
    return f"{line[0].upper()}{line[1:]}."


def _verdict_html(report: dict[str, Any], production: str | None, is_production: bool, *, start: str) -> str:
    failed = report["gates"]["failed"]
    against = (f"against production run {html.escape(report['production_run_id'])}" if report["production_run_id"]
               else "with no production model to compare against")
    scope = (f"on the {html.escape(report['split'])} split of audit {html.escape(report['audit_run_id'])} "
             f"({report['evaluated_clips']} clips, {report.get('quarantined_clips', 0)} of them in quarantine and "
             f"counted as labelled: quarantine cannot improve a gate), {against}")
    if is_production:
        head, style = "This run is the production model.", "background:#eaf2f8;color:#1b4f72"
    elif not failed:
        head, style = "Every gate passes: this run may be promoted.", "background:#e9f7ef;color:#145a32"
    else:
        head = (f"{len(failed)} gate(s) failed: production stays "
                f"{'run ' + html.escape(production) if production else 'empty'} unless a person overrides.")
        style = "background:#fdecea;color:#922b21"
    return (f'<div class="em-verdict" data-passed="{str(not failed).lower()}" style="{BANNER};{style}">'
            f'<b>{head}</b><div style="font-size:13px;margin-top:2px">Gates evaluated {scope}.</div>'
            f'<div class="em-verdict-start" style="font-size:13px">{html.escape(start)}</div></div>')


def _criteria_html(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['name'])}</td><td style='{STATUS_STYLE.get(c['status'], '')}'>{html.escape(c['status'])}</td>"
        f"<td style='text-align:right'>{_num(c['value'])}</td><td style='text-align:right'>{_num(c['threshold'])}</td>"
        f"<td>{html.escape(c['detail'])}</td></tr>" for c in report["gates"]["criteria"])
    return ("<b>Gate criteria</b><table class='em-gates' style='font-size:13px;border-collapse:collapse;width:100%'>"
            "<tr style='text-align:left'><th>criterion</th><th>status</th><th>value</th><th>threshold</th><th>detail</th></tr>"
            f"{rows}</table>")


def _checklist_html(wb: Workbench, report: dict[str, Any]) -> str:
    """Plan A's A8 evaluation checklist, one line per item, with its numbers."""
    items = [_accuracy_item(wb, report), _extreme_off_item(wb, report),
             ("check", f"Spot-check up to {SPOT_CHECK_CLIPS} relabelled files on their spectrograms: listen to them below."),
             _regression_item(report)]
    marks = {"pass": "&#10004;", "fail": "&#10008;", "check": "&#9654;", "n/a": "&ndash;"}
    rows = "".join(f"<li style='margin:3px 0'><span style='{STATUS_STYLE.get(status, '')};display:inline-block;width:1.4em'>"
                   f"{marks[status]}</span>{text}</li>" for status, text in items)
    return f"<b>A8 evaluation checklist</b><ol class='em-checklist' style='font-size:13px;padding-left:18px'>{rows}</ol>"


def _accuracy_item(wb: Workbench, report: dict[str, Any]) -> tuple[str, str]:
    split = report["split"]
    metrics = wb.store.run_metrics(report["audit_run_id"], split=split)
    overall = metrics[metrics.class_label.isna()].set_index("name")["value"]
    now = overall.get("accuracy")
    text = f"{split.capitalize()} accuracy over all classes: <b>{_num(now)}</b>"
    comparison = _comparison(report)
    if comparison is not None:
        before = comparison["overall"]["accuracy"]["baseline"]
        text += f" (production {_num(before)}, change {comparison['overall']['accuracy']['delta']:+.4f})"
        return ("pass" if now is not None and now >= before else "fail"), text
    return "n/a", text + " (no production model to compare with)"


def _extreme_off_item(wb: Workbench, report: dict[str, Any]) -> tuple[str, str]:
    summary = wb.store.run(report["audit_run_id"])["summary"] or {}
    split_report = (summary.get("key_classes") or {}).get(report["split"])
    keys = report["gates"]["policy"]["key_classes"]
    if not split_report:
        return "n/a", "Key-class extreme-off change: this audit reported no extreme-off counts."
    parts, worse, known = [], False, False
    for label in keys:
        entry = split_report["classes"].get(label)
        if entry is None:
            parts.append(f"{html.escape(label)}: not a class of this model")
            continue
        if entry["previous"] is None:
            parts.append(f"{html.escape(label)}: {entry['now']} extreme-off (no earlier audit of this split)")
        else:
            known = True
            worse |= entry["change"] > 0
            parts.append(f"{html.escape(label)}: {entry['now']} extreme-off, was {entry['previous']} ({entry['change']:+d})")
    previous = split_report.get("previous_audit")
    text = (f"Key-class extreme-off in {report['split']}" + (f" against audit {html.escape(previous)}" if previous else "")
            + ": " + "; ".join(parts))
    return ("fail" if worse else "pass" if known else "n/a"), text


def _regression_item(report: dict[str, Any]) -> tuple[str, str]:
    regression = [c for c in report["gates"]["criteria"] if c["name"].startswith("regression")]
    failed = [c for c in regression if c["status"] == "fail"]
    if not regression or all(c["status"] == "n/a" for c in regression):
        return "n/a", "Regression check: no production model to compare with."
    limit = report["gates"]["policy"]["max_relative_regression"]
    text = (f"Regression check: {len(failed)} class(es) dropped more than {limit:.0%} relative to production; "
            f"the candidate newly gets {len(report['newly_wrong'])} clip(s) wrong and newly gets "
            f"{len(report['newly_right'])} right (listed below).")
    return ("fail" if failed else "pass"), text


def _comparison(report: dict[str, Any]) -> dict[str, Any] | None:
    files = report.get("comparison_files") or {}
    path = Path(files["json"]) if "json" in files else None
    return json.loads(path.read_text()) if path is not None and path.is_file() else None


def _spot_check_html(wb: Workbench, run_id: str, report: dict[str, Any]) -> str:
    """Up to 5 clips relabelled since the model this run is judged against froze its labels."""
    since = report["production_run_id"] or wb.store.run(run_id)["parent_run_id"]
    if since is None:
        return "<p>No earlier model to count relabels from: nothing to spot-check yet.</p>"
    try:
        clips = spot_check(wb.store, since_run=since, n=SPOT_CHECK_CLIPS)
    except StoreError as exc:
        return f"<p>{html.escape(str(exc))}</p>"
    if clips.empty:
        return f"<p>No clip was relabelled since run {html.escape(since)} froze its labels.</p>"
    audit_id = latest_audit(wb.store, run_id, split=report["split"])
    parts = []
    for row in clips.itertuples():
        caption = (f"clip {row.clip_id} ({html.escape(str(row.split))}): {html.escape(str(row.label_before))} &rarr; "
                   f"<b>{html.escape(str(row.label))}</b> by {html.escape(str(row.annotator))}"
                   + (f" (tag {html.escape(str(row.tag))})" if isinstance(row.tag, str) else ""))
        parts.append(_clip_html(wb, int(row.clip_id), audit_id or run_id, caption=caption))
    return f'<div class="em-spot-check">{"".join(parts)}</div>'


def _clip_html(wb: Workbench, clip_id: int, run_id: str | None, *, caption: str) -> str:
    """A captioned player; the model's verdict on the clip when the run predicted it."""
    try:
        view = wb.views.get(clip_id, run_id=run_id, fmax_hz=SPOT_CHECK_FMAX_HZ)
    except ValueError as exc:  # unreadable or outside the dataset roots: say so in place
        return f"<div style='margin:8px 0'>{caption}: <i>{html.escape(str(exc))}</i></div>"
    said = (f" &middot; model says {html.escape(str(view.details['predicted']))} ({view.details['confidence']:.2f})"
            if "predicted" in view.details else "")
    return f"<div style='margin:10px 0 18px'><div style='margin-bottom:4px'>{caption}{said}</div>{view.html}</div>"


def _num(value: Any) -> str:
    return "-" if value is None else f"{float(value):.4f}"
