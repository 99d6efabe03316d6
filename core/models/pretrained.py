"""Where a pretrained source (a local folder or a hub id) is read from, and the one line that
explains why it could not be: shared by the AST and the audio LLM."""
from __future__ import annotations

import os
from pathlib import Path


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once at import)."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.strip().upper() in {"1", "ON", "YES", "TRUE"} for flag in flags)


def pretrained_location(source: str) -> tuple[str, bool]:
    """(what from_pretrained should read, whether it is a local folder) for model.pretrained."""
    folder = Path(source).expanduser()
    return (str(folder), True) if folder.is_dir() else (source, False)


def unreadable_source(source: str, exc: Exception, *, is_local: bool) -> ValueError:
    """The one-line error for a pretrained source whose config could not be read."""
    if is_local:
        return ValueError(f"model.pretrained: folder {source!r} holds no readable transformers config: {exc}")
    why = ("HF_HUB_OFFLINE is set, so nothing can be downloaded" if hub_offline()
           else f"it could not be downloaded either ({str(exc).partition(chr(10))[0] or type(exc).__name__})")
    return ValueError(f"model.pretrained: {source!r} is not a local folder and was not found in the local "
                      f"Hugging Face cache, and {why}. Point it at a folder written by save_pretrained.")
