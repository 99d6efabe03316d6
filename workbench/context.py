"""What every tab of one workbench shares: the session's store (this process is its one
writer), the clip-view cache, the job manager, and a safe wrapper for event handlers."""
from __future__ import annotations

import dataclasses
import functools
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gradio as gr

from core.audio import AudioError
from core.config import ConfigError
from core.store import Store, StoreError
from workbench.job_queue import JobManager
from workbench.renderer import ClipUnavailable, ClipViewCache

log = logging.getLogger("earmark.workbench")
# Errors whose message is written for the user; anything else is a bug, logged with its trace.
USER_ERRORS = (ValueError, StoreError, ConfigError, AudioError, ClipUnavailable, FileNotFoundError)


@dataclasses.dataclass
class Workbench:
    store: Store
    session_dir: Path
    views: ClipViewCache
    jobs: JobManager | None = None   # None: a workbench that starts no jobs (tests of the read-only tabs)

    @classmethod
    def open(cls, session_dir: Path, *, with_jobs: bool = False) -> "Workbench":
        """Open the session as its writer; with_jobs also starts its job queue (the server's)."""
        store = Store.open(session_dir)
        return cls(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store),
                   jobs=JobManager(store) if with_jobs else None)

    def labels(self) -> list[str]:
        """The task's classes: every current label of a usable clip, sorted."""
        state = self.store.labels()
        return sorted(state.loc[state.status == "ok", "label"].dropna().unique())


def safe(handler: Callable) -> Callable:
    """Run a Gradio handler; a refusal (or a bug) shows one line as a toast, never a stack trace,
    and leaves every panel as it was: raising through Gradio would turn each output of the
    event into a red "Error" badge, wiping the page the person was working on."""
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except (gr.Error, *USER_ERRORS) as exc:
            message = exc.message if isinstance(exc, gr.Error) else str(exc)
        except Exception as exc:  # a bug: keep the trace in the server log, show a short message
            log.error("handler %s failed:\n%s", handler.__name__, traceback.format_exc())
            message = (f"Something went wrong ({type(exc).__name__}: {exc}). The session is unchanged; "
                       "details are in the server log.")
        gr.Warning(message)
        return gr.skip()  # one skip leaves every output of the event unchanged
    return wrapper


def current_tab() -> gr.Tab:
    """The tab a module is being built in (server.py builds each tab module inside its gr.Tab):
    its select event is the moment the tab is shown, when views derived from the store refresh."""
    tab = gr.context.Context.block
    if not isinstance(tab, gr.Tab):
        raise RuntimeError(f"a tab module must be built inside its gr.Tab, not in {type(tab).__name__}")
    return tab


def require_annotator(name: str | None, request: gr.Request | None) -> str:
    """Who signs a decision. With a login (--auth) it is the logged-in user, whatever the name
    box says, so no one signs as someone else; without one, the name typed top right."""
    if request is not None and request.username:
        return request.username
    if not name or not name.strip():
        raise ValueError("Enter your name (top right) before recording decisions: every decision is signed.")
    return name.strip()
