"""The audio LLM (model.name speech_llm) as the workbench shows it: whether the form's base model
can be read here, which prompt a fine-tune will ask with, a prompt search run's ranked prompts,
and a trained run's answer card and per-clip A/B probabilities. Plain values; only reads.
"""
from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd

from core.config import ExperimentConfig
from core.models.speech_llm import check_base
from core.run_folder import METRICS_FILE
from core.store import Store
from pipelines.searched_prompt import KIND as SEARCH_KIND
from pipelines.searched_prompt import best_prompt

PROMPT_TABLE = "prompts.md"  # core.prompt_search_child.TABLE_FILES["markdown"]
# A line break inside a table cell of prompts.md, which writes each prompt JSON-escaped on one line.
ESCAPED_BREAK = re.compile(r"(?<!\\)\\n")


# --- the Train form -------------------------------------------------------------------------------
def base_html(config: ExperimentConfig) -> str:
    """The base model line of the LLM fields: what it is (green) or why it cannot be used (red)."""
    try:
        line, error = check_base(config.model.pretrained), False
    except ValueError as exc:
        line, error = str(exc), True
    return f'<div class="{"em-message-error" if error else "em-message-ok"}">base: {html.escape(line)}</div>'


def prompt_note_html(store: Store, config: ExperimentConfig) -> str:
    """Which prompt a fine-tune of this config will ask with: the best of the latest prompt search
    of its base model (shown, since it replaces the prompt field), or the prompt field and why."""
    settings = config.model.speech_llm
    if not settings.prompt_from_search:
        return "<div>A fine-tune asks with the prompt below (prompt_from_search is off).</div>"
    found = best_prompt(store, base=config.model.pretrained)
    if found is None:
        return ("<div>No prompt search of this base model yet: a fine-tune asks with the prompt below. "
                "<b>Search prompts</b> first to choose one on the val clips.</div>")
    return (f'<div class="em-searched-prompt">A fine-tune asks with the best prompt of prompt search '
            f'{html.escape(found["run_id"])} ({html.escape(found["origin"])}, {html.escape(found["speech_answer"])} = '
            f'speech, dev balanced accuracy {found["balanced_accuracy"]:.1%}) in place of the prompt below:'
            f'<pre class="em-prompt">{html.escape(found["text"])}</pre></div>')


# --- the Runs tab -----------------------------------------------------------------------------------
def is_prompt_search(run: dict[str, Any] | None) -> bool:
    return run is not None and run["kind"] == SEARCH_KIND


def answer_card(run: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]] | None:
    """(answer card, labels in probability order) of an evaluated audio-LLM training run, else None."""
    path = Path(run["run_dir"]) / METRICS_FILE if run is not None and run["kind"] == "train" else None
    if path is None or not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return (metrics["answer_card"], metrics["labels"]) if "answer_card" in metrics else None


def prompt_search_markdown(run: dict[str, Any]) -> str:
    """A prompt search run: its best prompt with dev and test scores, then the ranked table
    (prompts.md, each prompt's line breaks shown as breaks)."""
    summary = run["summary"] or {}
    table = Path(run["run_dir"]) / PROMPT_TABLE
    if "best" not in summary or not table.is_file():
        return f"No prompt table: prompt search {run['id']} is {run['status']}."
    best, final = summary["best"], summary["final"]
    test = "-" if final.get("test_balanced_accuracy") is None else f"{final['test_balanced_accuracy']:.1%}"
    text = ESCAPED_BREAK.sub("<br>", table.read_text()).replace("# Prompt search (B8)", "### Ranked prompts", 1)
    return (f"### Best prompt ({best['origin']}, {best['speech_answer']} = speech)\n\n"
            f"Dev balanced accuracy **{best['balanced_accuracy']:.1%}** on {best['clips']} val clips; test balanced "
            f"accuracy **{test}** on {final['test_clips']} clips at the dev threshold p(speech) >= "
            f"{final['threshold']:.3f}. Base model: `{summary.get('base')}`. A fine-tune of this base with "
            f"prompt_from_search asks with it.\n\n```text\n{best['text']}\n```\n\n{text}")


def answer_card_markdown(card: dict[str, Any]) -> str:
    """The answer card of a trained audio LLM: base, the letters and what they mean, threshold, prompt."""
    speech, letters = card["speech_answer"], card["answer_token_ids"]
    other = next((letter for letter in letters if letter != speech), "?")
    threshold = ("-" if card.get("threshold") is None else
                 f"p({speech}) >= {card['threshold']:.3f} means {card['speech_label']} (chosen on val for balanced "
                 "accuracy)")
    return (f"### Answer card (audio LLM)\n\n"
            f"- **base model**: `{card['base']}` (the checkpoint holds the LoRA adapters only)\n"
            f"- **letters**: {speech} = {card['speech_label']}, {other} = not {card['speech_label']}; token ids "
            f"{', '.join(f'{k} {v}' for k, v in letters.items())}. p(speech) is p({speech}) of the two letters' logits\n"
            f"- **threshold**: {threshold}\n- **prompt**:\n\n```text\n{card['prompt']}\n```")


def ab_column(card: dict[str, Any]) -> str:
    """The column name of the A/B probability, e.g. 'p(A) = p(SPEECH)'."""
    return f"p({card['speech_answer']}) = p({card['speech_label']})"


def llm_predictions_frame(store: Store, run_id: str, split: str, card: dict[str, Any], labels: list[str]) -> pd.DataFrame:
    """The run's per-clip predictions on a split with the A/B probability of speech beside each,
    and the decision at the card's threshold; most confidently wrong first (lowest p of the label)."""
    columns = ["clip", "label", "predicted", ab_column(card), _threshold_column(card)]
    shown = store.predictions(run_id, split=split)
    if shown.empty:
        return pd.DataFrame(columns=columns)
    speech = labels.index(card["speech_label"])
    p_speech = shown.probs.map(lambda probs: float(probs[speech]))
    p_label = [float(probs[labels.index(label)]) if label in labels else 0.0
               for probs, label in zip(shown.probs, shown.label)]
    threshold = card.get("threshold")
    other = next((label for label in labels if label != card["speech_label"]), "-")
    said = ["-" if threshold is None else card["speech_label"] if p >= threshold else other for p in p_speech]
    frame = pd.DataFrame({"clip": shown.clip_id, "label": shown.label, "predicted": shown.predicted,
                          columns[3]: p_speech.round(3), columns[4]: said, "order": p_label})
    return frame.sort_values(["order", "clip"]).drop(columns="order").reset_index(drop=True)


def _threshold_column(card: dict[str, Any]) -> str:
    threshold = card.get("threshold")
    return "at the card's threshold" if threshold is None else f"at threshold {threshold:.3f}"
