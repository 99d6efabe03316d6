"""Audio-LLM speed (issue 15, B1): a LoRA training step and constrained A/B scoring throughput.

Builds a random Qwen2-Audio with pipelines/tiny_audio_llm.py in a temp folder and loads it the
way a run does (core.models.build_model: from_pretrained, LoRA r 16 / alpha 32 on the language
model's attention). On the CPU it is the tiny test model (1 s window); with a GPU, a larger one
(30 s window, 128 mels, a 4-layer 2048-wide language model with a 151,936-token vocabulary) in
bf16, and peak GPU memory is reported. Clips are --clip-s seconds of noise at 16 kHz.

Each figure is measured beside its baseline in the same run, on the same batches:
  train_step_s           forward + backward + AdamW step with Earmark's loss: vocabulary logits
                         only at the answer position (core.models.speech_llm.masked_lm_loss);
  baseline_train_step_s  the same step with transformers' own labels= loss (logits everywhere);
  score_clips_per_s      constrained A/B scoring from the last hidden state (SpeechLLMClassifier);
  baseline_score_clips_per_s  transformers' full forward, then the A/B columns of the last logits.
The two scorings are checked to agree, and so are the two losses. Best of --repeats. The last
line printed is one JSON object.

    python bench/speech_llm.py [--clips 64] [--batch 8] [--steps 8] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.config import FeatureConfig, ModelConfig  # noqa: E402
from core.models import build_model  # noqa: E402
from core.models.speech_llm import answer_labels  # noqa: E402
from pipelines.tiny_audio_llm import TinySize, save_tiny_audio_llm  # noqa: E402

LARGE = TinySize(window_s=30, n_mels=128, encoder_dim=1280, encoder_layers=4, encoder_heads=20, hidden=2048, layers=4,
                 heads=16, kv_heads=2, vocab_size=151_936, init_std=0.02)


def build(folder: Path, *, gpu: bool, clip_s: float) -> torch.nn.Module:
    save_tiny_audio_llm(folder, size=LARGE if gpu else TinySize())
    cfg = ModelConfig.from_dict({"name": "speech_llm", "pretrained": str(folder),
                                 "lora": {"enabled": True, "rank": 16, "alpha": 32, "dropout": 0.05,
                                          "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}})
    model = build_model(cfg, feature_cfg=FeatureConfig(front_end="waveform", normalize=False, max_length_s=clip_s),
                        labels=["NONSPEECH", "SPEECH"])
    return model.to("cuda" if gpu else "cpu")


def baseline_loss(model, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """transformers' labels= loss: the same masked labels, logits over the whole sequence."""
    inputs = model.prompt_inputs(features)
    letters = model.column_letters()
    answers = torch.tensor([[model.letter_ids[letters[int(y)]]] for y in targets], device=inputs["input_ids"].device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], answers], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(answers)], dim=1)
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    return model.network(**inputs, position_ids=positions, labels=answer_labels(inputs["input_ids"], answer_tokens=1)).loss


def baseline_scores(model, features: torch.Tensor) -> torch.Tensor:
    inputs = model.prompt_inputs(features)
    positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
    logits = model.network(**inputs, position_ids=positions).logits[:, -1]
    letters = model.column_letters()
    return logits[:, [model.letter_ids[letter] for letter in letters]]


def timed(fn, repeats: int, sync) -> float:
    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-s", type=float, default=1.0)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    with tempfile.TemporaryDirectory() as tmp:
        model = build(Path(tmp) / "base", gpu=gpu, clip_s=args.clip_s)
    rng = np.random.default_rng(0)
    waves = torch.from_numpy(rng.normal(0, 0.1, (args.clips, 1, int(args.clip_s * 16000))).astype(np.float32))
    targets = torch.from_numpy(rng.integers(0, 2, args.clips))
    batches = [(waves[i:i + args.batch], targets[i:i + args.batch]) for i in range(0, args.clips, args.batch)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else torch.autocast("cpu", enabled=False)

    def train(loss_of) -> None:
        model.train()
        for step in range(args.steps):
            x, y = batches[step % len(batches)]
            with autocast:
                loss = loss_of(x, y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()

    def score(scores_of) -> list[torch.Tensor]:
        model.eval()
        with torch.no_grad(), autocast:
            return [scores_of(x).float().cpu() for x, _ in batches]

    model.eval()
    with torch.no_grad(), autocast:
        x, y = batches[0]
        ours_loss, their_loss = float(model(x, answer_targets=y)), float(baseline_loss(model, x, y))
    ours = torch.cat(score(model))
    theirs = torch.cat(score(lambda x: baseline_scores(model, x)))
    agree = bool(torch.allclose(torch.softmax(ours, -1), torch.softmax(theirs, -1), atol=2e-2 if gpu else 1e-4))
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    step_s = timed(lambda: train(lambda x, y: model(x, answer_targets=y)), args.repeats, sync) / args.steps
    base_step_s = timed(lambda: train(lambda x, y: baseline_loss(model, x, y)), args.repeats, sync) / args.steps
    score_s = timed(lambda: score(model), args.repeats, sync)
    base_score_s = timed(lambda: score(lambda x: baseline_scores(model, x)), args.repeats, sync)
    result = {"device": "cuda" if gpu else "cpu", "model": "large random, bf16" if gpu else "tiny random, float32",
              "clips": args.clips, "batch": args.batch, "clip_s": args.clip_s,
              "train_step_s": round(step_s, 4), "baseline_train_step_s": round(base_step_s, 4),
              "score_clips_per_s": round(args.clips / score_s, 1),
              "baseline_score_clips_per_s": round(args.clips / base_score_s, 1),
              "scores_agree_with_baseline": agree, "loss": round(ours_loss, 4), "baseline_loss": round(their_loss, 4),
              "peak_gpu_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if gpu else None}
    print(f"train step {step_s * 1000:.1f} ms (baseline {base_step_s * 1000:.1f} ms); scoring {result['score_clips_per_s']} "
          f"clips/s (baseline {result['baseline_score_clips_per_s']}); scores agree: {agree}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
