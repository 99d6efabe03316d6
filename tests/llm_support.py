"""Test helpers for the audio LLM: a tiny random Qwen2-Audio saved to a folder, and a small
speech session it can learn from in a few CPU steps (eSpeak NG words against noise and tones)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from conftest import tone, write_wav
from core.store import Store
from pipelines.importing import import_dataset
from speech_support import VOICES, WORDS, brown_noise, padded, speech, white_noise

RATE = 16000
CLIP_S = 0.5
PER_SPLIT = {"train": 12, "val": 6, "test": 6}  # clips per class


def fast_overrides(base: Path) -> list[str]:
    """The speech-llm-lora preset at test size: the tiny base, two short epochs, a high rate."""
    return [f"model.pretrained={base}", "train.epochs=5", "train.batch_size=4", "train.grad_accum_steps=1",
            "train.lr=0.01", "model.lora.rank=8", "model.lora.dropout=0", "train.early_stopping_patience=0",
            "model.speech_llm.generated_prompts=1", "model.speech_llm.free_generation_tokens=2"]


def nonspeech(rng: np.random.Generator, index: int) -> np.ndarray:
    if index % 2:
        return tone(rng.uniform(300, 2500), seconds=CLIP_S, sample_rate_hz=RATE, amplitude=0.2).astype(np.float32)
    return brown_noise(rng, CLIP_S, level=0.2)


def build_llm_session(root: Path) -> Path:
    """root/session: 48 half-second clips (SPEECH: eSpeak NG words; NONSPEECH: brown noise or a
    tone), split by a CSV manifest, and a one-file noise bank at noise_bank/. Never written to by
    tests: copy it."""
    rng = np.random.default_rng(0)
    rows = []
    for split, count in PER_SPLIT.items():
        for i in range(count):
            spoken = speech(WORDS[i % len(WORDS)], voice=VOICES[i % len(VOICES)], sample_rate_hz=RATE)
            quiet = 0.01 * rng.standard_normal(int(CLIP_S * RATE)).astype(np.float32)
            for label, wave in (("SPEECH", padded(spoken, CLIP_S) + quiet), ("NONSPEECH", nonspeech(rng, i))):
                name = f"{split}-{label}-{i}.wav"
                write_wav(root / "audio" / name, wave, RATE)
                rows.append({"path": name, "label": label, "split": split, "group": f"{split}-{i}"})
    pd.DataFrame(rows).to_csv(root / "audio" / "manifest.csv", index=False)
    session = root / "session"
    write_wav(session / "noise_bank" / "noise" / "white.wav", white_noise(rng, seconds=2.0, sample_rate_hz=RATE), RATE)
    with Store.open(session) as store:
        import_dataset(store, root / "audio" / "manifest.csv", progress=False)
    return session
