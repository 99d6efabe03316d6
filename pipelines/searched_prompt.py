"""Which prompt an audio-LLM fine-tune starts with: the best of the session's latest prompt
search for the same base model (B8), when the preset asks for it and there is one."""
from __future__ import annotations

from typing import Any

from core.config import ExperimentConfig
from core.store import Store

KIND = "prompt_search"  # the run kind of a prompt search


def best_prompt(store: Store, *, base: str | None) -> dict[str, Any] | None:
    """The best prompt of the newest succeeded prompt search of this base model ({text,
    speech_answer, balanced_accuracy, ..., run_id}), or None when there is none."""
    for row in store.runs(kind=KIND).itertuples():
        if row.status != "succeeded":
            continue
        summary = store.run(row.id)["summary"] or {}
        if summary.get("base") == base:
            return {**summary["best"], "run_id": row.id}
    return None


def with_searched_prompt(store: Store, config: ExperimentConfig) -> tuple[ExperimentConfig, str | None]:
    """config with model.speech_llm.prompt / speech_answer set from the latest prompt search of
    its base model, when it is the audio LLM with prompt_from_search; and one line saying which
    prompt it got (None for other models)."""
    if config.model.name != "speech_llm":
        return config, None
    settings = config.model.speech_llm
    found = best_prompt(store, base=config.model.pretrained) if settings.prompt_from_search else None
    if found is None:
        why = "prompt_from_search is off" if not settings.prompt_from_search else "no prompt search of this base model yet"
        return config, f"asks with the preset's prompt ({why})"
    chosen = config.with_overrides({"model.speech_llm.prompt": found["text"],
                                    "model.speech_llm.speech_answer": found["speech_answer"]})
    return chosen, (f"asks with the best prompt of prompt search {found['run_id']} ({found['origin']}, dev balanced "
                    f"accuracy {found['balanced_accuracy']:.1%})")
