"""Prompt search's child job (B8): score every candidate prompt of the audio LLM on the dev
clips, let the model propose more (OPRO), keep the best, and apply it unchanged to test.

    python -m core.prompt_search_child RUN_DIR

Under DESIGN.md's one-writer rule it reads only its run folder (config.yaml: the preset;
job.json: PromptSearchJob; manifest.parquet: the frozen clips) and writes only there
(events.jsonl, prompts.json / prompts.csv / prompts.md, result.json). Scoring goes batch by
batch, so a cancel is honoured within one batch; the best prompt's threshold is chosen on dev
for balanced accuracy (B5) and only then are the test clips scored, once.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.checkpoint import init_from_checkpoint
from core.child_job import JobContext, JobSpec, command_line, run_child_job
from core.config import ExperimentConfig
from core.evaluate import calibrate_threshold
from core.feature_fit import fit_to_clips
from core.features import FeatureCache
from core.models import build_model
from core.models.speech_llm import Prompt, SpeechLLMClassifier
from core.prompt_search import (Candidate, opro_meta_prompt, parse_proposal, rank_key, score_candidate,
                                template_variants, unique)
from core.run_folder import CONFIG_FILE, MANIFEST_FILE, write_json

TABLE_FILES = {"json": "prompts.json", "csv": "prompts.csv", "markdown": "prompts.md"}
BATCH = 8
PROPOSAL_TOKENS = 96  # room for a prompt of a few lines
DEV_SPLIT, TEST_SPLIT = "val", "test"


@dataclasses.dataclass
class PromptSearchJob(JobSpec):
    """What the writer froze for one prompt search (job.json)."""
    run_id: str
    labels: list[str]
    cache_dir: str
    init_checkpoint: str | None = None  # adapters to score with (a finished audio-LLM run); None = the base model
    workers: int = 2


def run_prompt_search(run_dir: str | Path) -> dict[str, Any]:
    """Search and write the prompt table of one run folder; returns result.json's content."""
    run_dir = Path(run_dir)
    return run_child_job(run_dir, lambda context: _search(context, ExperimentConfig.load(run_dir / CONFIG_FILE),
                                                          PromptSearchJob.load(run_dir)))


def _search(context: JobContext, config: ExperimentConfig, job: PromptSearchJob) -> dict[str, Any]:
    manifest = pd.read_parquet(context.run_dir / MANIFEST_FILE)
    fit = fit_to_clips(config.features, manifest[manifest["split"] == "train"])
    config = dataclasses.replace(config, features=fit.features)
    config.save(context.run_dir / CONFIG_FILE)  # the clip length the prompts were judged at
    clips = manifest[manifest["split"].isin([DEV_SPLIT, TEST_SPLIT])].reset_index(drop=True)
    cache = FeatureCache(job.cache_dir, config.features)
    report = cache.build(clips["path"].tolist(), workers=job.workers, progress=False)
    clips = clips[~clips["path"].isin(set(report.failed))].reset_index(drop=True)
    clips["row"] = cache.rows(clips["path"].tolist())
    model = _model(config, job)
    settings = config.model.speech_llm
    scorer = _Scorer(context, model, cache, clips[clips["split"] == DEV_SPLIT], settings.free_generation_tokens)
    hand = [Candidate(c.text, c.speech_answer, f"hand:{i + 1}") for i, c in enumerate(settings.prompt_candidates)]
    candidates = unique(hand + [v for c in hand for v in template_variants(c)] if settings.template_variants else hand)
    context.events.write("start", clips=(len(candidates) + settings.generated_prompts) * len(scorer.clips),
                         candidates=len(candidates), proposals=settings.generated_prompts, dev_clips=len(scorer.clips))
    rows = [scorer.score(candidate) for candidate in candidates]
    rejected = _proposals(context, model, scorer, rows, count=settings.generated_prompts, seed=config.train.seed)
    rows.sort(key=rank_key)
    best = rows[0]
    final = _final_check(context, model, cache, clips[clips["split"] == TEST_SPLIT], best,
                         dev=(scorer.p_speech[best["origin"]], scorer.is_speech))
    _write_table(context.run_dir, rows, rejected, final)
    return {"status": "succeeded", "best": {key: best[key] for key in _COLUMNS}, "final": final,
            "candidates": len(rows), "rejected": len(rejected), "tables": TABLE_FILES}


class _Scorer:
    """Scores candidates on the dev clips, counting progress across all of them."""

    def __init__(self, context: JobContext, model: SpeechLLMClassifier, cache: FeatureCache, clips: pd.DataFrame,
                 free_tokens: int) -> None:
        self.context, self.model, self.cache, self.clips, self.free_tokens = context, model, cache, clips, free_tokens
        self.is_speech = clips["label"].to_numpy() == model.labels[model.speech_column]
        self.p_speech: dict[str, np.ndarray] = {}  # origin -> p(speech) per dev clip: the final check reuses it
        self.done = 0

    def score(self, candidate: Candidate) -> dict[str, Any]:
        prompt = Prompt(candidate.text, candidate.speech_answer)
        p_speech, answers = [], []
        for start in range(0, len(self.clips), BATCH):
            self.context.check_stop(f"cancelled while scoring prompt {candidate.origin}")
            features = torch.from_numpy(self.cache.take(self.clips["row"].to_numpy()[start:start + BATCH]))
            p_speech.append(p_speech_of(self.model, features, prompt))
            if self.free_tokens:
                answers += self.model.generate_answers(features, prompt=prompt, max_new_tokens=self.free_tokens)
            self.done += len(features)
            self.context.events.write("progress", done=self.done, candidate=candidate.origin)
        self.p_speech[candidate.origin] = np.concatenate(p_speech)
        scores = score_candidate(p_speech=self.p_speech[candidate.origin], is_speech=self.is_speech,
                                 free_answers=answers if self.free_tokens else None)
        return {"text": candidate.text, "speech_answer": candidate.speech_answer, "origin": candidate.origin, **scores}


def p_speech_of(model: SpeechLLMClassifier, features: torch.Tensor, prompt: Prompt) -> np.ndarray:
    """p(speech) per clip under a prompt, by constrained A/B scoring; the model's own prompt is restored."""
    kept = model.prompt
    model.prompt = prompt
    try:
        with torch.no_grad():
            return torch.softmax(model(features).float(), dim=-1)[:, model.speech_column].cpu().numpy()
    finally:
        model.prompt = kept


def _proposals(context: JobContext, model: SpeechLLMClassifier, scorer: _Scorer, rows: list[dict[str, Any]], *,
               count: int, seed: int) -> list[dict[str, Any]]:
    """OPRO: `count` times, show the model the best prompts so far and score what it proposes;
    returns the proposals it wrote that were not prompts, with why."""
    rejected = []
    for index in range(count):
        context.check_stop("cancelled while the model proposed prompts")
        # transformers' sampling draws from torch's global generator: seeded per proposal so a rerun repeats it.
        torch.manual_seed(seed + index)
        text = model.generate_text(opro_meta_prompt(rows), max_new_tokens=PROPOSAL_TOKENS, sample=True)
        candidate, why = parse_proposal(text)
        if candidate is None or any(row["text"] == candidate.text for row in rows):
            rejected.append({"text": text, "reason": why or "repeats a prompt already scored"})
            scorer.done += len(scorer.clips)
            context.events.write("progress", done=scorer.done, candidate=f"proposal {index + 1} rejected")
            continue
        rows.append(scorer.score(dataclasses.replace(candidate, origin=f"proposed:{index + 1}")))
    return rejected


def _final_check(context: JobContext, model: SpeechLLMClassifier, cache: FeatureCache, test: pd.DataFrame,
                 best: dict[str, Any], *, dev: tuple[np.ndarray, np.ndarray]) -> dict[str, Any]:
    """The best prompt's threshold on its dev scores (p(speech), truth; balanced accuracy, B5),
    applied unchanged to the test clips, scored now for the first time."""
    prompt = Prompt(best["text"], best["speech_answer"])
    threshold = calibrate_threshold(scores=dev[0], y_true_binary=dev[1])["threshold"]
    context.events.write("info", message=f"scoring the best prompt on {TEST_SPLIT} ({len(test)} clips)")
    batches = [torch.from_numpy(cache.take(test["row"].to_numpy()[i:i + BATCH])) for i in range(0, len(test), BATCH)]
    test_scores = np.concatenate([p_speech_of(model, b, prompt) for b in batches]) if batches else np.zeros(0)
    test_truth = test["label"].to_numpy() == model.labels[model.speech_column]
    said = test_scores >= threshold
    recalls = [float((said[test_truth == v] == v).mean()) for v in (True, False) if (test_truth == v).any()]
    return {"threshold": threshold, "test_clips": int(len(test_scores)),
            "test_accuracy": float((said == test_truth).mean()) if len(said) else None,
            "test_balanced_accuracy": float(np.mean(recalls)) if recalls else None}


def _model(config: ExperimentConfig, job: PromptSearchJob) -> SpeechLLMClassifier:
    model = build_model(config.model, feature_cfg=config.features, labels=job.labels)
    if job.init_checkpoint:
        init_from_checkpoint(model, job.init_checkpoint)
    if torch.cuda.is_available():
        model.to("cuda")
    return model.eval()


_COLUMNS = ("origin", "speech_answer", "balanced_accuracy", "accuracy", "confidence_gap", "outside_ab", "clips", "text")


def _write_table(run_dir: Path, rows: list[dict[str, Any]], rejected: list[dict[str, Any]], final: dict[str, Any]) -> None:
    """Every candidate, best first, as JSON, CSV and Markdown (the Runs tab shows the Markdown)."""
    frame = pd.DataFrame(rows, columns=list(_COLUMNS))
    frame.insert(0, "rank", range(1, len(frame) + 1))
    frame.to_csv(run_dir / TABLE_FILES["csv"], index=False)
    write_json(run_dir / TABLE_FILES["json"], {"candidates": frame.to_dict(orient="records"), "rejected": rejected,
                                               "final": final})
    lines = ["# Prompt search (B8)", "",
             f"{len(rows)} prompts scored on the dev clips, best first (balanced accuracy, then confidence gap). "
             f"The best one's threshold, chosen on dev, gives test balanced accuracy "
             f"{_pct(final['test_balanced_accuracy'])} on {final['test_clips']} clips (p(speech) >= {final['threshold']:.3f}).",
             "", "| rank | origin | speech = | bal. acc | accuracy | confidence gap | outside A/B | prompt |",
             "|---:|---|---|---:|---:|---:|---:|---|"]
    for row in frame.itertuples():
        gap = "-" if row.confidence_gap is None or pd.isna(row.confidence_gap) else f"{row.confidence_gap:+.3f}"
        lines.append(f"| {row.rank} | {row.origin} | {row.speech_answer} | {_pct(row.balanced_accuracy)} | "
                     f"{_pct(row.accuracy)} | {gap} | {_pct(row.outside_ab)} | {_one_line(row.text)} |")
    if rejected:
        lines += ["", f"## Proposals that were not prompts ({len(rejected)})", ""]
        lines += [f"- {item['reason']}: `{_one_line(item['text'])[:120]}`" for item in rejected]
    (run_dir / TABLE_FILES["markdown"]).write_text("\n".join(lines) + "\n")


def _pct(value: float | None) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.1%}"


def _one_line(text: str) -> str:
    return json.dumps(text)[1:-1].replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    return command_line(argv, module="core.prompt_search_child", run=run_prompt_search)


if __name__ == "__main__":
    sys.exit(main())
