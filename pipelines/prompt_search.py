"""Prompt search for the audio LLM (B8), the writer's side: freeze the clips, run the child
(core/prompt_search_child.py), ingest the best prompt and the table.

The run (kind "prompt_search") keeps the preset resolved, the frozen manifest, every candidate's
dev scores (prompts.json / .csv / .md) and, in its summary, the best prompt with its scores and
the test check. A later fine-tune of the same base model with
model.speech_llm.prompt_from_search (the default) starts from that prompt
(pipelines/searched_prompt.py).

    outcome = prompt_search(store, preset="speech-llm-lora", overrides=["model.pretrained=/models/q2a"])
    print("\\n".join(outcome.lines()))
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import ConfigError, ExperimentConfig, load_preset
from core.models.speech_llm import check_base
from core.prompt_search_child import DEV_SPLIT, TABLE_FILES, TEST_SPLIT, PromptSearchJob
from core.run_folder import CONFIG_FILE, MANIFEST_FILE
from core.store import Store
from pipelines.child_process import run_child
from pipelines.finetune import freeze_manifest, new_run_id, resolve_init
from pipelines.searched_prompt import KIND


@dataclasses.dataclass
class PromptSearchOutcome:
    run_id: str
    run_dir: Path
    status: str
    error: str | None = None
    summary: dict[str, Any] = dataclasses.field(default_factory=dict)

    def lines(self) -> list[str]:
        if self.status != "succeeded":
            return [f"prompt search {self.run_id} {self.status}: {self.error}"]
        best, final = self.summary["best"], self.summary["final"]
        return [self.summary["message"],
                f"  best ({best['origin']}, {best['speech_answer']} = speech): dev balanced accuracy "
                f"{best['balanced_accuracy']:.1%}, accuracy {best['accuracy']:.1%}",
                f"  test, at the dev threshold {final['threshold']:.3f}: balanced accuracy "
                f"{_pct(final['test_balanced_accuracy'])} on {final['test_clips']} clips",
                *[f"    {line}" for line in best["text"].splitlines()],
                f"  table: {self.run_dir / TABLE_FILES['markdown']}"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def prompt_search(store: Store, *, preset: str = "speech-llm-lora", overrides: list[str] | None = None,
                  init_from: str | None = None, progress: bool = True,
                  on_event: Callable[[dict[str, Any]], None] | None = None) -> PromptSearchOutcome:
    """Score the preset's prompt candidates (and the model's own proposals) on the session's val
    clips and check the best on test. init_from: a finished audio-LLM run or checkpoint folder
    whose adapters score the prompts (default: the base model alone). Refuses in one line
    (ConfigError), before any run exists, a preset that is not the audio LLM, a base model that
    cannot be read, or a session without val and test clips of both classes."""
    run_id, run_dir = prepare_prompt_search(store, preset=preset, overrides=overrides, init_from=init_from)
    store.set_run_status(run_id, "running")
    try:
        result = run_child(run_dir, module="core.prompt_search_child", desc="prompt search", progress=progress,
                           on_event=on_event)
    except Exception as exc:
        store.set_run_status(run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    return ingest_prompt_search(store, run_id, result)


def prepare_prompt_search(store: Store, *, preset: str, overrides: list[str] | None = None,
                          init_from: str | None = None) -> tuple[str, Path]:
    """Check, freeze and register a prompt search; returns (run id, run folder)."""
    config = load_preset(preset, overrides, session_dir=store.session_dir)
    if config.model.name != "speech_llm":
        raise ConfigError(f"preset {config.name!r} builds model.name {config.model.name!r}; prompt search is for the "
                          f"audio LLM (model.name speech_llm, e.g. preset speech-llm-lora)")
    try:
        check_base(config.model.pretrained)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    init_checkpoint, _ = resolve_init(store, init_from)
    manifest, as_of = freeze_manifest(store)
    labels = sorted(manifest.label.unique())
    _check_clips(manifest, labels, speech_label=config.model.speech_llm.speech_label)
    run_id = new_run_id(KIND)
    run_dir = Path(store.session_dir) / "runs" / run_id
    run_dir.mkdir(parents=True)
    config.save(run_dir / CONFIG_FILE)
    manifest.to_parquet(run_dir / MANIFEST_FILE)
    PromptSearchJob(run_id=run_id, labels=labels, cache_dir=str(Path(store.session_dir) / "cache"),
                    init_checkpoint=init_checkpoint).save(run_dir)
    store.create_run(run_id, kind=KIND, preset=config.name, config=config.to_dict(),
                     parent_run_id=None if init_checkpoint is None else Path(init_checkpoint).parent.name,
                     manifest_decision_id=as_of, run_dir=run_dir)
    return run_id, run_dir


def _check_clips(manifest: pd.DataFrame, labels: list[str], *, speech_label: str) -> None:
    if len(labels) != 2 or speech_label not in labels:
        raise ConfigError(f"model.speech_llm.speech_label: prompt search needs exactly two labels, one of them "
                          f"{speech_label!r}; the session has {labels}")
    for split in ("train", DEV_SPLIT, TEST_SPLIT):
        missing = [label for label in labels if not ((manifest.split == split) & (manifest.label == label)).any()]
        if missing and split != "train":
            raise ConfigError(f"no usable {split} clips labelled {' or '.join(missing)}: prompts are chosen on "
                              f"{DEV_SPLIT} and checked on {TEST_SPLIT}, both need clips of both labels")
        if split == "train" and not (manifest.split == split).any():
            raise ConfigError("no usable train clips: the clip length comes from the training clips, as in a fine-tune")


def ingest_prompt_search(store: Store, run_id: str, result: dict[str, Any]) -> PromptSearchOutcome:
    """Record a finished search: its status, the best prompt in the summary, its numbers as metrics."""
    run = store.run(run_id)
    outcome = PromptSearchOutcome(run_id=run_id, run_dir=Path(run["run_dir"]), status=result["status"],
                                  error=result.get("error"))
    if outcome.status == "succeeded":
        best, final = result["best"], result["final"]
        base = ExperimentConfig.load(outcome.run_dir / CONFIG_FILE).model.pretrained
        outcome.summary = {"best": best, "final": final, "base": base, "candidates": result["candidates"],
                           "rejected": result["rejected"], "table": TABLE_FILES["markdown"],
                           "message": f"prompt search {run_id}: {result['candidates']} prompts scored on "
                                      f"{best['clips']} val clips ({result['rejected']} proposals rejected)"}
        rows = [{"split": DEV_SPLIT, "name": name, "class_label": None, "value": float(best[name])}
                for name in ("balanced_accuracy", "accuracy", "confidence_gap", "outside_ab") if best[name] is not None]
        rows += [{"split": DEV_SPLIT, "name": "threshold", "class_label": None, "value": float(final["threshold"])}]
        rows += [{"split": TEST_SPLIT, "name": name.removeprefix("test_"), "class_label": None, "value": float(final[name])}
                 for name in ("test_accuracy", "test_balanced_accuracy") if final[name] is not None]
        store.ingest_run_results(run_id, metrics=pd.DataFrame(rows, columns=["split", "name", "class_label", "value"]))
    store.set_run_status(run_id, outcome.status, error=outcome.error, summary=outcome.summary or None)
    return outcome

