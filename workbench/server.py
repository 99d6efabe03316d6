"""Builds and serves the workbench: one Gradio Blocks app, one tab module per tab.

Safety: binds to 127.0.0.1 unless --host says otherwise (the CLI refuses any other address
without --auth or --no-auth); --auth user:pass (or a file of such lines) turns on Gradio's login,
and then every decision is signed with the logged-in user; audio files are served only from the
session's dataset roots (Gradio's allowed_paths, checked on the resolved path, so a symlink in a
root that points out of it is refused), so no other path on the machine can be fetched. Gradio's
usage analytics are off: an offline workbench holding people's data sends nothing.
"""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import gradio as gr
import torch

from core.store import SessionInUseError
from workbench import confusions_tab, data_tab, review_tab, runs_tab, train_tab
from workbench.context import Workbench

ASSETS = Path(__file__).resolve().parent / "assets"
# Tabs in order: (title, module). Each module has build(wb, annotator=...).
TABS = [("Review", review_tab), ("Confusions", confusions_tab), ("Train", train_tab), ("Runs", runs_tab), ("Data", data_tab)]


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """'user:pass' or a file with one 'user:pass' per line (blank lines and # comments skipped)."""
    if not value:
        return None
    lines = Path(value).read_text().splitlines() if Path(value).is_file() else [value]
    pairs = []
    for line in (l.strip() for l in lines):
        if not line or line.startswith("#"):
            continue
        user, sep, password = line.partition(":")
        if not sep or not user or not password:
            raise ValueError(f"--auth expects user:password (or a file of such lines), got {line!r}")
        pairs.append((user, password))
    if not pairs:
        raise ValueError(f"--auth file {value} holds no user:password line")
    return pairs


def build_app(wb: Workbench) -> gr.Blocks:
    with gr.Blocks(title=f"Earmark: {wb.session_dir.name}", analytics_enabled=False) as app:
        with gr.Row(equal_height=True):
            gr.Markdown(f"## Earmark &nbsp;·&nbsp; session `{wb.session_dir.name}`")
            annotator = gr.Textbox(label="your name (signed on every decision)", placeholder="e.g. ana",
                                   elem_id="em-annotator", scale=0, min_width=260)
        remembered = gr.BrowserState("", storage_key="earmark-annotator")
        app.load(_fill_annotator, remembered, annotator)
        annotator.change(lambda name: name.strip(), annotator, remembered)
        with gr.Tabs():
            for title, module in TABS:
                with gr.Tab(title, id=title.lower()):
                    module.build(wb, annotator=annotator)
    return app


def _fill_annotator(saved: str, request: gr.Request) -> Any:
    """The name box on page load. With a login it shows the logged-in user, read-only: that is
    who signs every decision (context.require_annotator), whatever the box says. Without one,
    the name this browser used last, and never a blank over a name already typed."""
    if request.username:
        return gr.Textbox(value=request.username, interactive=False,
                          label="signed in as (every decision is signed with this login)")
    return saved or gr.skip()


def serve(*, session_dir: Path, host: str = "127.0.0.1", port: int = 7860, auth: str | None = None,
          block: bool = True) -> int:
    """Open the session as its writer and serve the workbench; prints the address."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    torch.set_num_threads(1)  # rendering clip views; training runs in child processes
    try:
        credentials = parse_auth(auth)
        wb = Workbench.open(session_dir, with_jobs=True)  # the one place the UI starts child processes
    except (SessionInUseError, ValueError) as exc:
        print(f"earmark: error: {exc}", file=sys.stderr)
        return 2
    roots = [str(root) for root in wb.store.dataset_roots().values()]
    app = build_app(wb)
    url = f"http://{host}:{port}"
    print(f"Earmark workbench for session {wb.session_dir} on {url}", flush=True)
    app.queue(default_concurrency_limit=4)
    app.launch(server_name=host, server_port=port, auth=credentials, allowed_paths=roots, show_error=True,
               css_paths=[ASSETS / "earmark.css"], head=f"<script>{(ASSETS / 'earmark.js').read_text()}</script>", quiet=True,
               footer_links=[], prevent_thread_lock=not block,
               # Gradio's run history would copy every event's inputs and outputs (clip views,
               # names, decisions) into the browser's storage: private data, and 100s of ms a click.
               run_history=False)
    return 0
