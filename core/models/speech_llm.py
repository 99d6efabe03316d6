"""An audio LLM as a speech detector (B1): Qwen2-Audio hears a clip, reads a prompt, and answers
with one letter; the detector's score is p(speech) from the logits of the letters "A" and "B".

The clip reaches it as waveform features (FeatureConfig.front_end "waveform", 16 kHz, cropped
or padded to max_length_s), and the model's own processor makes the Whisper log-mel and expands
the audio placeholder, so features and audio tokens always agree. The prompt is the user turn of
the processor's chat template; the answer is read at the first assistant position:
- scoring (constrained A/B): the next-token logits there, restricted to the ids of the single
  tokens "A" and "B" (each checked to be one token without a leading space), give two logits in
  the model's label order; softmax over them is p(speech);
- training: the answer letter (and, optionally, the end-of-turn token) is appended, labels are
  -100 on every prompt, audio and padding position, and the loss is the language model's
  cross-entropy over the whole vocabulary at the answer position only (loss masking);
- free generation (for prompt search): greedy decoding, to count answers outside A/B.

LoRA adapters (peft) go on the language model's attention projections (optionally its MLP);
the audio encoder stays frozen, the projector trains only when asked. A checkpoint keeps just
what trained (`save_weights`) and names its base model in `architecture()`, with the prompt, the
letter ids and which letter means speech: that is its card.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from core.config import ANSWER_LETTERS, FeatureConfig, ModelConfig, SpeechLLMSettings
from core.models import AudioClassifier, register_model
from core.models.pretrained import pretrained_location, unreadable_source

if TYPE_CHECKING:
    from transformers import BatchFeature

MODEL_TYPE = "qwen2_audio"
RATE_HZ = 16000  # what the Whisper front end of Qwen2-Audio is built for
IGNORE_INDEX = -100  # positions the loss does not count (transformers' convention)
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LANGUAGE_MODEL = "language_model"
PROJECTOR = "multi_modal_projector"


@dataclasses.dataclass(frozen=True)
class Prompt:
    """The question after the audio and the letter that means speech."""
    text: str
    speech_answer: str = "A"

    def __post_init__(self) -> None:
        if self.speech_answer not in ANSWER_LETTERS:
            raise ValueError(f"speech_answer: {self.speech_answer!r} is not one of {ANSWER_LETTERS}")
        if not self.text.strip():
            raise ValueError("prompt: must not be empty")


class SpeechLLMClassifier(AudioClassifier):
    """Waveforms (B, 1, n_samples) at 16 kHz -> logits (B, 2) in label order, from the A/B letters.

    network: a Qwen2AudioForConditionalGeneration, or the peft model wrapping it; processor: its
    Qwen2AudioProcessor. The letter of `prompt.speech_answer` scores labels[speech_column].
    """

    head_name = "lm_head"  # never trained: every trainable parameter is an adapter (the backbone LR)
    frozen_base = True

    def __init__(self, network: nn.Module, processor: Any, *, labels: list[str], speech_label: str,
                 prompt: Prompt, source: str, loss_on_end_of_turn: bool = False) -> None:
        super().__init__(labels=labels)
        if len(labels) != 2 or speech_label not in labels:
            raise ValueError(f"model.speech_llm.speech_label: {speech_label!r} must be one of exactly two labels "
                             f"(speech / non-speech), the session has {labels!r}")
        self.network = network
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # every row's answer position is the last one
        self.source = source
        self.speech_column = labels.index(speech_label)
        self.letter_ids = answer_token_ids(processor.tokenizer)
        self.prompt = prompt
        self.loss_on_end_of_turn = loss_on_end_of_turn
        self._chat_texts: dict[Prompt, str] = {}

    # --- what a checkpoint says about itself -------------------------------------------------
    def architecture(self) -> dict[str, Any]:
        return {"base": self.source, "prompt": self.prompt.text, "speech_answer": self.prompt.speech_answer,
                "answer_token_ids": dict(self.letter_ids), "speech_label": self.labels[self.speech_column]}

    # --- scoring and training ------------------------------------------------------------------
    def forward(self, features: torch.Tensor, answer_targets: torch.Tensor | None = None) -> torch.Tensor:
        """Logits (B, 2) in label order; with answer_targets (B,) class ids, the masked LM loss
        instead (as transformers models return their loss when given labels)."""
        if answer_targets is None:
            inputs = self.prompt_inputs(features)
            hidden = self._hidden(inputs)[:, -1]
            letters = self._lm_head().weight[[self.letter_ids[letter] for letter in self.column_letters()]]
            return hidden @ letters.T.to(hidden.dtype)
        return self.answer_loss(features, answer_targets, end_of_turn=self.loss_on_end_of_turn)

    def answer_loss(self, features: torch.Tensor, answer_targets: torch.Tensor, *,
                    end_of_turn: bool = False) -> torch.Tensor:
        """Cross-entropy over the vocabulary of the answer letter (and, with end_of_turn, of the
        end-of-turn token after it), every prompt, audio and padding position masked out (IGNORE_INDEX)."""
        inputs = self.prompt_inputs(features)
        letters = self.column_letters()
        answers = torch.tensor([self.letter_ids[letters[int(y)]] for y in answer_targets])[:, None]
        appended = [answers] + ([torch.full_like(answers, self._end_of_turn_id())] if end_of_turn else [])
        appended = torch.cat(appended, dim=1).to(inputs["input_ids"].device)
        inputs["input_ids"] = torch.cat([inputs["input_ids"], appended], dim=1)
        inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(appended)], dim=1)
        labels = answer_labels(inputs["input_ids"], answer_tokens=appended.shape[1])
        return masked_lm_loss(self._hidden(inputs), labels, lm_head=self._lm_head())

    def prompt_inputs(self, features: torch.Tensor, prompt: Prompt | None = None) -> BatchFeature:
        """The processor's tensors for these clips under the prompt (the model's by default), on the
        model's device, left-padded, the audio placeholder expanded and checked against the encoder."""
        if features.ndim != 3 or features.shape[1] != 1:
            raise ValueError(f"features: expected waveforms (batch, 1, samples), got {tuple(features.shape)}")
        text = self.chat_text(prompt or self.prompt)
        waves = [wave.numpy() for wave in features[:, 0].detach().float().cpu()]
        # audio= (transformers 5 ignores audios=) and an explicit rate; no truncation, ever: a cut
        # through the audio placeholder is the "audio features and audio tokens do not match" failure.
        inputs = self.processor(text=[text] * len(waves), audio=waves, sampling_rate=RATE_HZ, return_tensors="pt",
                                padding=True)
        self._check_audio_tokens(inputs)
        device, dtype = self._lm_head().weight.device, self._lm_head().weight.dtype
        return inputs.to(device).to(dtype)  # BatchFeature casts only floating tensors

    def chat_text(self, prompt: Prompt) -> str:
        """One user turn (the clip, then the prompt) and the assistant's opening, by the processor's
        template; rendered once per prompt (every training and scoring batch asks for it)."""
        if prompt not in self._chat_texts:
            self._chat_texts[prompt] = self._render_chat(prompt)
        return self._chat_texts[prompt]

    def _render_chat(self, prompt: Prompt) -> str:
        conversation = [{"role": "user", "content": [{"type": "audio", "audio_url": "clip"},
                                                     {"type": "text", "text": prompt.text}]}]
        return self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)

    @torch.no_grad()
    def generate_answers(self, features: torch.Tensor, *, prompt: Prompt | None = None, max_new_tokens: int = 4) -> list[str]:
        """Greedy free answers (decoded, stripped) to the prompt: what the model says unconstrained."""
        inputs = self.prompt_inputs(features, prompt)
        out = self._base().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        return [text.strip() for text in self.processor.tokenizer.batch_decode(
            out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)]

    @torch.no_grad()
    def generate_text(self, text: str, *, max_new_tokens: int, sample: bool = False) -> str:
        """The answer to a text-only user turn (no audio), greedy or sampled: the OPRO proposer."""
        conversation = [{"role": "user", "content": [{"type": "text", "text": text}]}]
        chat = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        inputs = self.processor.tokenizer([chat], return_tensors="pt").to(self._lm_head().weight.device)
        out = self._base().generate(**inputs, max_new_tokens=max_new_tokens, do_sample=sample)
        return self.processor.tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    # --- internals -----------------------------------------------------------------------------
    def column_letters(self) -> list[str]:
        """The answer letter each output column stands for."""
        other = next(letter for letter in ANSWER_LETTERS if letter != self.prompt.speech_answer)
        return [self.prompt.speech_answer if i == self.speech_column else other for i in range(len(self.labels))]

    def _base(self) -> nn.Module:
        """The transformers model (beneath a peft wrapper, whose adapters sit inside it)."""
        return self.network.get_base_model() if hasattr(self.network, "get_base_model") else self.network

    def _lm_head(self) -> nn.Linear:
        return self._base().lm_head

    def _hidden(self, inputs: BatchFeature) -> torch.Tensor:
        """The language model's last hidden states (B, T, hidden): logits are taken only where needed.
        Positions count from each row's first real token, so left padding shifts nothing."""
        positions = (inputs["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        return self._base().model(**inputs, position_ids=positions).last_hidden_state

    def _end_of_turn_id(self) -> int:
        tokenizer = self.processor.tokenizer
        token = "<|im_end|>" if "<|im_end|>" in tokenizer.get_vocab() else tokenizer.eos_token
        return tokenizer.convert_tokens_to_ids(token)

    def _check_audio_tokens(self, inputs: BatchFeature) -> None:
        """Each row's placeholders must number what the encoder makes of its features, counted the
        way the model counts them; a processor from another model differs here, not deep inside."""
        _, produced = self._base().model.audio_tower._get_feat_extract_output_lengths(inputs["feature_attention_mask"].sum(-1))
        placed = (inputs["input_ids"] == self.processor.audio_token_id).sum(-1)
        if not torch.equal(placed.cpu(), produced.cpu()):
            raise ValueError(f"audio tokens do not match the audio features: the prompt holds {placed.tolist()} "
                             f"placeholders, the encoder makes {produced.tolist()}; use the processor saved with {self.source}")


def answer_token_ids(tokenizer: Any) -> dict[str, int]:
    """{"A": id, "B": id}: each letter must be a single token that decodes to itself (no leading
    space), or constrained scoring would compare pieces of words."""
    ids = {}
    for letter in ANSWER_LETTERS:
        encoded = tokenizer.encode(letter, add_special_tokens=False)
        if len(encoded) != 1 or tokenizer.decode(encoded) != letter:
            raise ValueError(f"the tokenizer encodes {letter!r} as {encoded} ({tokenizer.decode(encoded)!r}); A/B "
                             f"scoring needs each letter as one token without a leading space")
        ids[letter] = encoded[0]
    return ids


def answer_labels(input_ids: torch.Tensor, *, answer_tokens: int) -> torch.Tensor:
    """Labels for left-padded rows that end with their answer_tokens answer tokens: those keep
    their ids, every prompt, audio and padding position is IGNORE_INDEX."""
    labels = torch.full_like(input_ids, IGNORE_INDEX)
    labels[:, -answer_tokens:] = input_ids[:, -answer_tokens:]
    return labels


def masked_lm_loss(hidden: torch.Tensor, labels: torch.Tensor, *, lm_head: nn.Linear) -> torch.Tensor:
    """Mean next-token cross-entropy over the positions whose label is not IGNORE_INDEX: what
    transformers computes from labels=, with vocabulary logits made only where a label counts."""
    shifted = labels[:, 1:]
    counted = shifted != IGNORE_INDEX
    logits = lm_head(hidden[:, :-1][counted])
    return F.cross_entropy(logits.float(), shifted[counted])


# --- building --------------------------------------------------------------------------------

@register_model("speech_llm")
def build_speech_llm(model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str],
                     architecture: dict[str, Any]) -> SpeechLLMClassifier:
    """The base model from model.pretrained (or the checkpoint's recorded base), its processor,
    and LoRA adapters as the preset sets them. Refuses in one line what cannot work: no base, a
    log-mel front end, another rate, clips longer than the model's audio window."""
    settings = model_cfg.speech_llm
    source = architecture.get("base") or model_cfg.pretrained
    _check_features(feature_cfg)
    if not model_cfg.lora.enabled:
        raise ValueError("model.lora.enabled: the audio LLM trains LoRA adapters only; set it to true")
    network, processor = load_base(source, dtype=_dtype(settings))
    _check_window(processor, network, feature_cfg, source=source)
    prompt = Prompt(architecture.get("prompt", settings.prompt), architecture.get("speech_answer", settings.speech_answer))
    model = SpeechLLMClassifier(network, processor, labels=labels, speech_label=settings.speech_label, prompt=prompt,
                                source=source, loss_on_end_of_turn=settings.loss_on_end_of_turn)
    saved_ids = architecture.get("answer_token_ids")
    if saved_ids and saved_ids != model.letter_ids:
        raise ValueError(f"architecture: the adapters were trained with letter ids {saved_ids}, the tokenizer of "
                         f"{source} gives {model.letter_ids}")
    model.network = apply_llm_lora(network, model_cfg)
    return model


def check_base(source: str | None) -> str:
    """Read only the config of model.pretrained (no weights, no network: a folder, or a hub id
    already in the local Hugging Face cache) and say what it is in one line; ValueError in one
    line naming the folder or id when it is unset, not here, unreadable or another kind of
    model. Forms check it as they are typed, the writer before anything is queued."""
    from transformers import AutoConfig

    if not source:
        raise ValueError("model.pretrained: the audio LLM needs its base model: a Qwen2-Audio folder written by "
                         "save_pretrained (or a hub id in the local cache)")
    location, is_local = pretrained_location(source)
    try:
        # Never the network: a 7B base is not something to fetch by accident (nor to wait on retries for).
        config = AutoConfig.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError) as exc:
        if is_local:
            raise unreadable_source(source, exc, is_local=True) from None
        raise ValueError(f"model.pretrained: {source!r} is not a local folder and is not in the local Hugging Face "
                         f"cache; Earmark downloads no base model: download it first (hf download {source}) or point "
                         f"model.pretrained at a folder written by save_pretrained") from None
    if config.model_type != MODEL_TYPE:
        raise ValueError(f"model.pretrained: {source!r} is a {config.model_type!r} model, not Qwen2-Audio ({MODEL_TYPE!r})")
    text, audio = config.text_config, config.audio_config
    return (f"Qwen2-Audio at {location}: language model {text.num_hidden_layers} layers x {text.hidden_size}, "
            f"audio encoder {audio.encoder_layers} layers, {audio.max_source_positions * 2} mel frames per clip")


def load_base(source: str, *, dtype: torch.dtype = torch.float32) -> tuple[nn.Module, Any]:
    """Qwen2AudioForConditionalGeneration and Qwen2AudioProcessor from a folder or a cached hub id,
    through from_pretrained (never downloading); one line naming the source when it is missing or
    another model."""
    from transformers import Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor

    check_base(source)
    location, _ = pretrained_location(source)
    try:
        processor = Qwen2AudioProcessor.from_pretrained(location, local_files_only=True)
        network = Qwen2AudioForConditionalGeneration.from_pretrained(location, local_files_only=True, dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model.pretrained: could not read the processor or weights of {source!r}: "
                         f"{str(exc).partition(chr(10))[0]}") from None
    network.requires_grad_(False)
    return network, processor


def apply_llm_lora(network: nn.Module, model_cfg: ModelConfig) -> nn.Module:
    """peft adapters on the language model's projections named by model.lora.target_modules (plus
    its MLP with add_mlp_targets); the projector trains as a module to save when asked."""
    from peft import LoraConfig, get_peft_model

    settings, lora = model_cfg.speech_llm, model_cfg.lora
    targets = list(dict.fromkeys([*lora.target_modules, *(MLP if settings.add_mlp_targets else ())]))
    language_model = network.model.language_model
    available = sorted({name.rsplit(".", 1)[-1] for name, module in language_model.named_modules()
                        if isinstance(module, nn.Linear)})
    unmatched = [name for name in targets if name not in available]
    if not targets or unmatched:
        raise ValueError(f"model.lora.target_modules: {targets!r} {'is empty' if not targets else f'has no match for {unmatched!r}'}; "
                         f"language-model layers that can be adapted: {', '.join(available)}")
    config = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                        # Only the language model: the audio encoder has q/k/v projections of its own.
                        target_modules=rf".*{LANGUAGE_MODEL}\..*\.({'|'.join(targets)})",
                        modules_to_save=[PROJECTOR] if settings.train_projector else None)
    return get_peft_model(network, config)


def _dtype(settings: SpeechLLMSettings) -> torch.dtype:
    if settings.dtype == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    return getattr(torch, settings.dtype)


def _check_features(feature_cfg: FeatureConfig) -> None:
    if feature_cfg.front_end != "waveform":
        raise ValueError("features.front_end: the audio LLM makes its own Whisper features from the waveform; "
                         "set features.front_end=waveform (and features.normalize=false)")
    if feature_cfg.sample_rate_hz != RATE_HZ:
        raise ValueError(f"features.sample_rate_hz: the audio LLM hears {RATE_HZ} Hz audio, got {feature_cfg.sample_rate_hz}")


def _check_window(processor: Any, network: nn.Module, feature_cfg: FeatureConfig, *, source: str) -> None:
    """The processor's audio window must be what the encoder wants (max_source_positions * 2 mel
    frames), and no clip may be longer than it: the processor would cut it silently."""
    extractor = processor.feature_extractor
    wanted = network.config.audio_config.max_source_positions * 2
    if extractor.nb_max_frames != wanted:
        raise ValueError(f"model.pretrained: {source}'s processor makes {extractor.nb_max_frames} mel frames per clip "
                         f"but its audio encoder wants {wanted}; the processor belongs to another model")
    if extractor.sampling_rate != RATE_HZ:
        raise ValueError(f"model.pretrained: {source}'s feature extractor expects {extractor.sampling_rate} Hz, not {RATE_HZ}")
    window_s = extractor.n_samples / RATE_HZ
    length = feature_cfg.max_length_s
    if isinstance(length, (int, float)) and length > window_s:
        raise ValueError(f"features.max_length_s: {length:g} s is longer than the model's {window_s:g} s audio window; "
                         f"set it to at most {window_s:g}")

