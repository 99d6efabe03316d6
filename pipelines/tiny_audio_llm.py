"""A tiny random Qwen2-Audio saved as a local folder: the audio-LLM path (processor, A/B scoring,
LoRA, checkpoints, prompt search) run end to end without the 7B weights or a network. Tests and
bench/speech_llm.py use it; anyone can point the speech-llm-lora preset at one to try the flow.

It is a real transformers model written with save_pretrained and read back with from_pretrained:
a Whisper feature extractor with a short window (window_s), an audio encoder sized to that window
(max_source_positions = half its mel frames), a small Qwen2 language model, and a byte-level BPE
tokenizer built in memory holding the chat, audio and end tokens, in which "A" and "B" are single
tokens. Its answers are random until it is fine-tuned.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

HOP = 160
RATE_HZ = 16000
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>")


@dataclasses.dataclass(frozen=True)
class TinySize:
    """Sizes of the random model (the defaults train a few steps in about a second on a CPU)."""
    window_s: int = 1  # whole seconds: the Whisper extractor's chunk_length
    n_mels: int = 16
    encoder_dim: int = 16
    encoder_layers: int = 1
    hidden: int = 32
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    encoder_heads: int = 2
    vocab_size: int | None = None  # None = the tokenizer's size; larger leaves unused rows, as real vocabularies are
    # Far above transformers' 0.02: at that scale a model this narrow has nearly flat logits and
    # its last position barely depends on the audio, so no adapter can teach it anything quickly.
    init_std: float = 0.2


def save_tiny_audio_llm(folder: str | Path, *, size: TinySize = TinySize(), seed: int = 0) -> Path:
    """Write a random Qwen2-Audio (model + processor) of this size into folder; returns the folder."""
    from transformers import (Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor,
                              WhisperFeatureExtractor)

    folder = Path(folder)
    tokenizer = _byte_level_tokenizer()
    if not isinstance(size.window_s, int) or size.window_s < 1:
        raise ValueError(f"window_s: must be a whole number of seconds >= 1, got {size.window_s!r}")
    frames = size.window_s * RATE_HZ // HOP
    extractor = WhisperFeatureExtractor(feature_size=size.n_mels, sampling_rate=RATE_HZ, hop_length=HOP,
                                        chunk_length=size.window_s, n_fft=400)
    processor = Qwen2AudioProcessor(feature_extractor=extractor, tokenizer=tokenizer)
    config = Qwen2AudioConfig(
        audio_config={"num_mel_bins": size.n_mels, "encoder_layers": size.encoder_layers,
                      "encoder_attention_heads": size.encoder_heads,
                      "encoder_ffn_dim": 2 * size.encoder_dim, "d_model": size.encoder_dim,
                      "max_source_positions": frames // 2, "initializer_range": size.init_std},
        text_config={"model_type": "qwen2", "vocab_size": size.vocab_size or len(tokenizer), "hidden_size": size.hidden,
                     "intermediate_size": 2 * size.hidden, "num_hidden_layers": size.layers,
                     "num_attention_heads": size.heads, "num_key_value_heads": size.kv_heads,
                     "max_position_embeddings": 4096, "tie_word_embeddings": False, "initializer_range": size.init_std},
        audio_token_index=tokenizer.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def _byte_level_tokenizer():
    """Qwen2's tokenizer class over the 256 byte symbols and no merges: every character is its own
    token (so "A" and "B" are single tokens), plus the special tokens Qwen2-Audio's template uses."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {symbol: i for i, symbol in enumerate(bytes_to_unicode().values())}
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=[], unk_token=None, bos_token=None, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>")
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS)})
    return tokenizer
