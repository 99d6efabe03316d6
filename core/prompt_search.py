"""Prompt optimisation for the audio LLM (B8): which candidates are tried and how each is judged.

Candidates are the preset's hand-written prompts, rephrasings of each from templates, and (when
the model can write) prompts it proposes itself from an OPRO meta-prompt that shows the best
prompts so far with their scores. Every candidate is scored on the dev split by:
- accuracy and balanced accuracy of the constrained A/B answer (p(speech) >= 0.5);
- the confidence gap: mean p of the chosen answer on clips it gets right minus on clips it gets
  wrong (higher = its confidence means something);
- the share of free (unconstrained) answers that are neither A nor B (lower = better), when
  free generation runs.
Candidates are ranked by balanced accuracy, then confidence gap, then accuracy.
Pure functions: no model, no files.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from core.config import ANSWER_LETTERS

# An option line of a prompt: "A) ...", "A = ...", "A: ...", "A. ...".
_OPTION = re.compile(r"^(?P<letter>[AB])(?P<mark>\)|\s*=|:|\.)\s*(?P<text>.+)$", re.MULTILINE)
REPLY_LINE = "Reply with a single letter: A or B."
TASK_LINE = "Task: decide whether a human voice is speaking anywhere in this audio clip."
QUESTION_LINE = "Is someone speaking in this clip?"


@dataclasses.dataclass(frozen=True)
class Candidate:
    """A prompt to try: its text, the letter that means speech, and where it came from
    (hand-written, template:<name> of a hand-written one, or proposed by the model)."""
    text: str
    speech_answer: str
    origin: str


def template_variants(candidate: Candidate) -> list[Candidate]:
    """Rephrasings of a hand-written prompt: its options swapped (the other letter then means
    speech), a one-letter reply line, a task line before it, a question before it."""
    variants = []
    swapped = swap_options(candidate.text)
    if swapped is not None:
        other = next(letter for letter in ANSWER_LETTERS if letter != candidate.speech_answer)
        variants.append(Candidate(swapped, other, f"template:swapped({candidate.origin})"))
    variants += [Candidate(f"{candidate.text}\n\n{REPLY_LINE}", candidate.speech_answer, f"template:reply({candidate.origin})"),
                 Candidate(f"{TASK_LINE}\n\n{candidate.text}", candidate.speech_answer, f"template:task({candidate.origin})"),
                 Candidate(f"{QUESTION_LINE}\n\n{candidate.text}", candidate.speech_answer,
                           f"template:question({candidate.origin})")]
    return variants


def swap_options(text: str) -> str | None:
    """The prompt with the texts of its A and B options exchanged; None when it has not exactly
    one option line per letter."""
    options = list(_OPTION.finditer(text))
    if sorted(match["letter"] for match in options) != list(ANSWER_LETTERS):
        return None
    by_letter = {match["letter"]: match for match in options}
    def swap(match: re.Match) -> str:
        other = by_letter["B" if match["letter"] == "A" else "A"]
        return f"{match['letter']}{match['mark']} {other['text']}"
    return _OPTION.sub(swap, text)


def unique(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates with a (text, speech letter) seen before dropped, first kept."""
    seen, kept = set(), []
    for candidate in candidates:
        key = (candidate.text.strip(), candidate.speech_answer)
        if key not in seen:
            seen.add(key)
            kept.append(candidate)
    return kept


def opro_meta_prompt(scored: list[dict[str, Any]], *, shown: int = 5) -> str:
    """OPRO's meta-prompt: the best `shown` prompts so far, worst first, each with its dev balanced
    accuracy, and the request for a new one that keeps A = speech."""
    best = sorted(scored, key=rank_key)[:shown][::-1]
    listed = "\n\n".join(f"Prompt:\n{row['text']}\nScore: {100 * row['balanced_accuracy']:.1f}" for row in best)
    return ("Below are prompts that ask an audio model whether a clip contains human speech, with their scores "
            "(balanced accuracy in %, higher is better), worst first.\n\n"
            f"{listed}\n\n"
            "Write one new prompt that would score higher. It must offer two options, A meaning the clip contains "
            "human speech and B meaning it does not, and ask for the letter only. Write only the prompt.")


def parse_proposal(text: str) -> tuple[Candidate | None, str]:
    """A model-written prompt as a candidate (A = speech, as the meta-prompt asks), or None and
    why it was rejected: it must offer both options, one line each."""
    proposal = text.strip()
    if not proposal:
        return None, "empty"
    letters = sorted(match["letter"] for match in _OPTION.finditer(proposal))
    if letters != list(ANSWER_LETTERS):
        return None, "does not offer option A and option B, one line each"
    return Candidate(proposal, "A", "proposed"), ""


def score_candidate(*, p_speech: np.ndarray, is_speech: np.ndarray, free_answers: list[str] | None) -> dict[str, Any]:
    """A candidate's dev scores from its p(speech) per clip (N,), the truth (N,) bools and, when
    free generation ran, the free answers: accuracy, balanced_accuracy, confidence_gap,
    outside_ab (share of free answers that are not A or B; None without them), clips."""
    p_speech, is_speech = np.asarray(p_speech, dtype=float), np.asarray(is_speech, dtype=bool)
    said_speech = p_speech >= 0.5
    correct = said_speech == is_speech
    recalls = [correct[is_speech == value].mean() for value in (True, False) if (is_speech == value).any()]
    confidence = np.where(said_speech, p_speech, 1 - p_speech)
    gap = (confidence[correct].mean() - confidence[~correct].mean()) if correct.any() and (~correct).any() else None
    outside = None if free_answers is None else float(np.mean([free_letter(a) is None for a in free_answers]))
    return {"accuracy": float(correct.mean()), "balanced_accuracy": float(np.mean(recalls)),
            "confidence_gap": None if gap is None else float(gap), "outside_ab": outside, "clips": int(len(p_speech))}


def free_letter(answer: str) -> str | None:
    """The letter a free answer gives ("A", "B", "A) SPEECH", "b."), or None when it gives neither."""
    match = re.match(r"^\s*([ABab])(?![A-Za-z0-9])", answer)
    return match.group(1).upper() if match else None


def rank_key(row: dict[str, Any]) -> tuple[float, float, float]:
    """Sort key, best first: balanced accuracy, then confidence gap, then accuracy."""
    gap = row["confidence_gap"]
    return (-row["balanced_accuracy"], -(gap if gap is not None else -1.0), -row["accuracy"])
