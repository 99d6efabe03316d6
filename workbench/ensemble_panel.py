"""The Runs tab's "Combine runs" panel (plan D5): pick two or more finished runs, optionally weight
them, and queue their ensemble. The job (workbench/job_queue.py, kind "ensemble") calibrates each
member on val, evaluates the ensemble like a training run, then audits it and evaluates its gates,
as after a fine-tune; the ensemble then is a run like any other (compare, promote, roll back)."""
from __future__ import annotations

import json
from typing import Any

import gradio as gr

from core.config import ConfigError
from pipelines.ensemble import NOT_MEMBERS
from workbench.common import message_html
from workbench.context import Workbench, require_annotator, safe


def build(wb: Workbench, *, annotator: gr.Component, tab: gr.Tab) -> None:
    gr.Markdown("An ensemble averages its members' probabilities, each calibrated on val (its temperature), e.g. "
                "the CNN beside the AST. It is evaluated, audited and gated like a fine-tune; its card lists the "
                "members. Members must be finished CNN or AST runs with the same classes.")
    with gr.Row(equal_height=True):
        members = gr.Dropdown(member_choices(wb), multiselect=True, label="members (two or more finished runs)", scale=3,
                              elem_id="em-ensemble-members")
        weights = gr.Textbox(label="weights (optional, in the members' order, e.g. 2, 1)", scale=2,
                             elem_id="em-ensemble-weights")
        button = gr.Button("Combine into an ensemble (a queued job)", variant="primary", scale=1,
                           elem_id="em-ensemble-submit")
    message = gr.HTML(elem_id="em-ensemble-message")
    tab.select(safe(lambda: gr.update(choices=member_choices(wb))), None, members, show_progress="hidden")

    @safe
    def on_submit(chosen, weight_text, name, request: gr.Request):
        return queue_ensemble(wb, request, name, chosen, weight_text)

    button.click(on_submit, [members, weights, annotator], message)


def member_choices(wb: Workbench) -> list[tuple[str, str]]:
    """Succeeded training runs with a checkpoint that can be members, newest first."""
    runs = wb.store.runs(kind="train")
    production = wb.store.production_run()
    usable = runs[(runs.status == "succeeded") & ~runs.preset.isin(["ensemble"])]
    models = {r.id: json.loads(r.config or "{}").get("model", {}).get("name") for r in usable.itertuples()}
    return [(f"{r.id} ({models[r.id]}, preset {r.preset}){' (production)' if r.id == production else ''}", r.id)
            for r in usable.itertuples() if models[r.id] not in NOT_MEMBERS]


def parse_weights(text: str | None, count: int) -> list[float] | None:
    """'2, 1' -> [2.0, 1.0]; blank -> None (equal weights). Refused in one line when malformed."""
    if not text or not text.strip():
        return None
    try:
        weights = [float(part) for part in text.replace(";", ",").split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"weights: {text!r} is not a list of numbers (e.g. 2, 1)") from None
    if len(weights) != count:
        raise ConfigError(f"weights: {len(weights)} given for {count} members; give one per member, in their order")
    return weights


def queue_ensemble(wb: Workbench, request: gr.Request | None, name: str | None, members: list[str] | None,
                   weight_text: str | None) -> Any:
    """Queue the ensemble job, signed; the message says where to follow it."""
    if wb.jobs is None:
        raise ValueError("this workbench runs no jobs")
    members = list(members or [])
    job = wb.jobs.submit_ensemble(members=members, weights=parse_weights(weight_text, len(members)),
                                  submitted_by=require_annotator(name, request))
    return message_html(f"ensemble {job.run_id} of {', '.join(members)} queued: its progress shows in the Train tab; "
                        "it is then audited and its gates evaluated, as after a fine-tune.")


