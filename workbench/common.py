"""Pieces more than one tab shows: the clip side panel (probabilities, facts), the decision
history, the frequency-range choices of the spectrogram, the list of runs to pick from, the
options of a wide table, a one-line message, and a job's place in the queue."""
from __future__ import annotations

import html

import pandas as pd

from core.store import Store
from workbench.job_queue import JobManager
from workbench.renderer import ClipView

FREQUENCY_RANGES = {"0-4 kHz": 4000.0, "0-8 kHz": 8000.0, "full": None}
# Options of a table wider than its box: cells and headers wrap at spaces (earmark.css, .em-wide)
# and what still does not fit scrolls sideways, instead of columns clipped out of sight.
WIDE = {"wrap": True, "elem_classes": ["em-wide"]}


def side_panel_html(view: ClipView) -> str:
    """Probabilities as bars, then the clip's facts (the true label of synthetic data is never shown)."""
    bars = "".join(
        f'<div style="display:flex;align-items:center;gap:8px;margin:2px 0">'
        f'<span style="width:150px;text-align:right">{html.escape(str(r["class"]))}</span>'
        f'<div style="flex:1;background:#eee;height:14px;border-radius:3px">'
        f'<div style="width:{100 * float(r["probability"]):.1f}%;background:#4f46e5;height:14px;border-radius:3px"></div></div>'
        f'<span style="width:48px">{float(r["probability"]):.3f}</span></div>'
        for _, r in view.probabilities.iterrows()) or "<i>no model predictions for this clip yet</i>"
    facts = "".join(f"<tr><td style='color:#666;padding-right:12px'>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>"
                    for k, v in view.details.items())
    return f"<div><b>Model probabilities</b>{bars}</div><table style='margin-top:10px;font-size:13px'>{facts}</table>"


def history_html(history: pd.DataFrame) -> str:
    """The clip's decisions, newest first; undone ones struck through."""
    if history.empty:
        return "<p style='color:#888'>No decisions on this clip yet.</p>"
    rows = "".join(
        f"<tr class='{'em-undone' if r.undone else ''}'><td>{r.id}</td><td>{r.created_at:%Y-%m-%d %H:%M:%S}</td>"
        f"<td>{html.escape(str(r.annotator))}</td><td>{html.escape(str(r.action))}</td>"
        f"<td>{html.escape(' '.join(str(v) for v in (r.tag, r.new_label) if isinstance(v, str)))}</td>"
        f"<td>{html.escape(r.note if isinstance(r.note, str) else '')}</td></tr>" for r in history.itertuples())
    return ("<b>Decision history</b><table class='em-history'><tr><th>id</th><th>time (UTC)</th><th>annotator</th>"
            f"<th>action</th><th>tag / label</th><th>note</th></tr>{rows}</table>")


def run_choices(store: Store) -> list[tuple[str, str]]:
    """(shown name, run id) of every finished run, newest first; production is named as such."""
    runs = store.runs()
    production = store.production_run()
    return [(f"{r.id} ({r.kind}{', production' if r.id == production else ''})", r.id)
            for r in runs.itertuples() if r.status in ("succeeded", "cancelled")]


def message_html(text: str, *, error: bool = False) -> str:
    """One line beside the button that caused it: green when done, red when refused."""
    return f'<span class="{"em-message-error" if error else "em-message-ok"}">{html.escape(text)}</span>'


def queue_place(jobs: JobManager, run_id: str) -> int | None:
    """A job's place among the jobs waiting to start (1 = next), or None when it is not waiting."""
    queue = jobs.queue()
    return queue.index(run_id) + 1 if run_id in queue else None
