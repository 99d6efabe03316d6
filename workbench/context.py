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
from workbench.renderer import ClipUnavailable, ClipViewCache

log = logging.getLogger("earmark.workbench")
# Errors whose message is written for the user; anything else is a bug, logged with its trace.
USER_ERRORS = (ValueError, StoreError, ConfigError, AudioError, ClipUnavailable, FileNotFoundError)


@dataclasses.dataclass
class Workbench:
    store: Store
    session_dir: Path
    views: ClipViewCache
    jobs: Any = None            # workbench.jobs.JobManager, set by the server

    @classmethod
    def open(cls, session_dir: Path) -> "Workbench":
        store = Store.open(session_dir)
        return cls(store=store, session_dir=Path(store.session_dir), views=ClipViewCache(store))

    def labels(self) -> list[str]:
        """The task's classes: every current label of a usable clip, sorted."""
        state = self.store.labels()
        return sorted(state.loc[state.status == "ok", "label"].dropna().unique())


def safe(handler: Callable) -> Callable:
    """Run a Gradio handler; show user errors as a message, never a stack trace."""
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except USER_ERRORS as exc:
            raise gr.Error(str(exc), print_exception=False) from None
        except Exception as exc:  # a bug: keep the trace in the server log, show a short message
            log.error("handler %s failed:\n%s", handler.__name__, traceback.format_exc())
            raise gr.Error(f"Something went wrong ({type(exc).__name__}: {exc}). The session is unchanged; "
                           "details are in the server log.", print_exception=False) from None
    return wrapper


def require_annotator(name: str | None) -> str:
    if not name or not name.strip():
        raise ValueError("Enter your name (top right) before recording decisions: every decision is signed.")
    return name.strip()
