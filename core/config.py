"""Typed configs as dataclasses, loaded from and saved to YAML/JSON.

Every config is a dataclass deriving from `Config`. Help text lives once, on the field
(`option(default, "help ...")`), and both the CLI and the UI read it from there. Loading
validates where the data enters: an unknown key, a wrong type or an out-of-range value
raises `ConfigError` (a `ValueError`) naming the dotted key, the value received and what is
allowed, so `--set train.epochs=abc` fails with one readable line.
"""
from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, Literal, Self, get_args, get_origin

import yaml


class ConfigError(ValueError):
    """A config value that cannot be accepted; the message names the dotted key."""


def option(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None) -> Any:
    """A dataclass field carrying its help text (read by the CLI and the UI)."""
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={"help": help})
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class Config:
    """Base for typed configs: from_dict/to_dict with validation, dotted overrides."""

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None, *, prefix: str = "") -> Self:
        data = dict(data or {})
        if not isinstance(data, dict):
            raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            key = f"{prefix}{unknown[0]}"
            raise ConfigError(f"unknown key '{key}'; allowed: {', '.join(sorted(fields))}")
        kwargs = {name: _coerce(data[name], hints[name], f"{prefix}{name}") for name in data}
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except TypeError as exc:  # a required field missing
            raise ConfigError(f"{prefix or cls.__name__}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    def with_overrides(self, assignments: list[str] | dict[str, Any]) -> Self:
        """Apply dotted overrides, e.g. ["train.epochs=3", "model.name=ast"].

        Values are parsed as YAML scalars (so "3" is an int, "[1, 2]" a list, "null" None).
        """
        data = self.to_dict()
        items = assignments.items() if isinstance(assignments, dict) else map(_split_assignment, assignments)
        for key, value in items:
            _set_dotted(data, key, value)
        return type(self).from_dict(data)

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Dotted key -> help text, for every field including nested configs."""
        out: dict[str, str] = {}
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            hint = _unwrap_optional(hints[f.name])
            if isinstance(hint, type) and issubclass(hint, Config):
                out.update({f"{f.name}.{k}": v for k, v in hint.field_help().items()})
            else:
                out[f.name] = f.metadata.get("help", "")
        return out

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(), indent=2) if path.suffix == ".json" else yaml.safe_dump(self.to_dict(), sort_keys=False)
        path.write_text(text)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Self:
        return cls.from_dict(read_mapping(path))


def read_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file that must hold a mapping; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def check_range(name: str, value: float, *, low: float | None = None, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = True) -> None:
    """Raise ConfigError naming `name` when value lies outside [low, high]."""
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    if too_low or too_high:
        lo = "-inf" if low is None else low
        hi = "inf" if high is None else high
        brackets = ("[" if low_inclusive else "(") + f"{lo}, {hi}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{name}: {value!r} is out of range {brackets}")


def check_choice(name: str, value: Any, allowed: typing.Iterable[Any]) -> None:
    allowed = list(allowed)
    if value not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(map(repr, allowed))}")


# --- internals -------------------------------------------------------------------------

def _split_assignment(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        if not isinstance(node.get(part), dict):
            known = ", ".join(sorted(k for k, v in node.items() if isinstance(v, dict)))
            raise ConfigError(f"unknown key '{'.'.join(parts[:i + 1])}'; sections: {known}")
        node = node[part]
    if parts[-1] not in node:
        raise ConfigError(f"unknown key '{key}'; allowed: {', '.join(sorted(node))}")
    node[parts[-1]] = value


def _unwrap_optional(hint: Any) -> Any:
    if get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _type_name(hint: Any) -> str:
    if get_origin(hint) is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(hint))
    return getattr(hint, "__name__", str(hint))


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        allowed = ", ".join(_type_name(a) for a in args if a is not type(None))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} matches none of the allowed types ({allowed})")
    if origin is Literal:
        if value not in get_args(hint):
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, get_args(hint)))}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        args = get_args(hint)
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_hint, v_hint = get_args(hint) or (Any, Any)
        return {_coerce(k, k_hint, key): _coerce(v, v_hint, f"{key}.{k}") for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return hint.from_dict(value, prefix=f"{key}.")
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads "3e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(hint)}")


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


# --- the experiment configs -------------------------------------------------------------
# Units are in the field names (_hz, _s, _db). Presets in data/presets/*.yaml fill these.

AUTO = "auto"  # a feature field fixed from the training clips when a run starts (core/feature_fit.py)
AUTO_FIELDS = ("max_length_s", "f_max_hz")
MIN_LENGTH_S, MAX_LENGTH_S = 0.05, 600


@dataclasses.dataclass
class FeatureConfig(Config):
    """Log-mel front end (D1). The feature-cache key is derived from every field but normalize
    (normalisation is applied after reading from the cache)."""
    sample_rate_hz: int = option(16000, "Audio is resampled to this rate before features.")
    n_mels: int = option(64, "Number of mel bands.")
    n_fft: int = option(1024, "FFT size in samples.")
    hop_length: int = option(320, "Hop between frames in samples (320 at 16 kHz = 20 ms).")
    f_min_hz: float = option(0.0, "Lowest mel frequency; 500 acts as the plan's high-pass (D1).")
    f_max_hz: float | Literal["auto"] | None = option(
        None, "Highest mel frequency; null = half the sample rate; auto = the Nyquist of the source rate 95% of the "
              "training clips reach, where that is lower (8 kHz audio holds nothing above 4 kHz). auto is fixed when "
              "a run starts and logged.")
    max_length_s: float | Literal["auto"] = option(
        AUTO, "Clips are cropped or padded to this length; auto = the 95th percentile of the training clips' "
              "durations, rounded up (fixed when a run starts and logged; the sirens plan pins 10 s, A6).")
    crop: Literal["start", "center", "random"] = option("center", "Which part of a longer clip to keep.")
    pad: Literal["zeros", "repeat"] = option("zeros", "How a shorter clip is filled up to max_length_s.")
    top_db: float | None = option(80.0, "dB dynamic range kept below each clip's peak; null keeps all.")
    normalize: bool = option(True, "Standardise with mean/std from the training split (C2).")
    front_end: Literal["log_mel", "waveform"] = option(
        "log_mel", "log_mel: the log-mel bands the CNN and AST read. waveform: the resampled, cropped or padded samples "
                   "themselves, for a model that brings its own feature extractor (the audio LLM's Whisper front end); "
                   "the mel fields are then unused and normalize must be false.")

    def __post_init__(self) -> None:
        check_range("features.sample_rate_hz", self.sample_rate_hz, low=1000, high=192000)
        check_range("features.n_mels", self.n_mels, low=8, high=512)
        check_range("features.n_fft", self.n_fft, low=64, high=16384)
        check_range("features.hop_length", self.hop_length, low=1, high=self.n_fft)
        if self.max_length_s != AUTO:
            check_range("features.max_length_s", self.max_length_s, low=MIN_LENGTH_S, high=MAX_LENGTH_S)
        nyquist = self.sample_rate_hz / 2
        check_range("features.f_min_hz", self.f_min_hz, low=0, high=nyquist, high_inclusive=False)
        if self.f_max_hz not in (None, AUTO):
            check_range("features.f_max_hz", self.f_max_hz, low=self.f_min_hz, high=nyquist, low_inclusive=False)
        if self.front_end == "waveform" and self.normalize:
            raise ConfigError("features.normalize: must be false with front_end waveform (the model's own feature "
                              "extractor scales its input; per-band statistics have no bands to work on)")

    def concrete(self, name: str) -> Any:
        """The value of field `name`, refusing 'auto': a size or filterbank needs the number the clips fix."""
        value = getattr(self, name)
        if value == AUTO:
            raise ConfigError(f"features.{name} is 'auto': it is fixed from the training clips when a run starts "
                              f"(core/feature_fit.py); set a number to use these features outside a run")
        return value

    def require_resolved(self) -> None:
        """Raise ConfigError when any field is still 'auto' (what gets computed must be known exactly)."""
        for name in AUTO_FIELDS:
            self.concrete(name)

    @property
    def n_samples(self) -> int:
        return int(round(self.concrete("max_length_s") * self.sample_rate_hz))

    @property
    def n_frames(self) -> int:
        """Time steps of one clip's features: STFT frames, or samples for the waveform front end."""
        return self.n_samples if self.front_end == "waveform" else self.n_samples // self.hop_length + 1

    @property
    def feature_shape(self) -> tuple[int, int]:
        """One clip's features as stored and batched: (n_mels, n_frames), or (1, n_samples) for waveform."""
        return (1, self.n_frames) if self.front_end == "waveform" else (self.n_mels, self.n_frames)


@dataclasses.dataclass
class LoraSettings(Config):
    """LoRA adapters on AST attention (B3 grid defaults)."""
    enabled: bool = option(False, "Train LoRA adapters + head instead of the whole backbone.")
    rank: int = option(8, "Adapter rank r.")
    alpha: int = option(16, "LoRA scaling alpha.")
    dropout: float = option(0.05, "Dropout on the adapter input.")
    target_modules: list[str] = option(factory=lambda: ["q_proj", "v_proj"],
                                       help="Module names to adapt (transformers 5 AST: q_proj, k_proj, v_proj, o_proj).")

    def __post_init__(self) -> None:
        check_range("model.lora.rank", self.rank, low=1, high=1024)
        check_range("model.lora.dropout", self.dropout, low=0, high=1, high_inclusive=False)


# Plan B8's five hand-written prompts (seeds/002): every one asks for A = speech.
PLAN_B_PROMPTS = (
    "Choose one:\nA) SPEECH (human voice)\nB) NONSPEECH (music/noise/silence/animals)\n\nAnswer with A or B ONLY.",
    "Listen carefully to this audio clip.\n\nDoes it contain human speech?\n\nA) Yes - I hear human voice speaking\n"
    "B) No - I hear music, noise, silence, or non-human sounds\n\nYour answer:",
    "Task: Detect if human speech is present in this audio.\n\nA) SPEECH detected\nB) NO SPEECH detected\n\nAnswer:",
    "Is there human speech in this audio?\n\nA) Yes\nB) No\n\nYour response:",
    "Classification task: SPEECH vs NONSPEECH\n\nListen to the audio.\n\nA = Contains human voice\n"
    "B = Does not contain human voice\n\nSelect:",
)
ANSWER_LETTERS = ("A", "B")


@dataclasses.dataclass
class PromptCandidate(Config):
    """A question the audio LLM is asked after the clip, and which letter means speech."""
    text: str = option(help="The prompt text placed after the audio in the user turn.")
    speech_answer: Literal["A", "B"] = option("A", "The answer letter that means speech (the other means non-speech).")

    def __post_init__(self) -> None:
        if not self.text.strip():
            raise ConfigError("model.speech_llm prompt text: must not be empty")


@dataclasses.dataclass
class SpeechLLMSettings(Config):
    """The audio LLM speech detector (B1, B8): prompt, answer letters, LoRA extras, prompt search."""
    prompt: str = option(PLAN_B_PROMPTS[0], "The prompt after the audio; the model answers with one letter.")
    speech_answer: Literal["A", "B"] = option("A", "The letter that means speech in the prompt.")
    prompt_from_search: bool = option(
        True, "Use the best prompt of this session's latest finished prompt search for the same base model, when "
              "there is one (the run's saved config then holds that prompt); false = the prompt above.")
    speech_label: str = option("SPEECH", "Which of the session's two labels the speech letter stands for.")
    add_mlp_targets: bool = option(False, "Also put LoRA adapters on the language model's MLP projections "
                                          "(gate_proj, up_proj, down_proj; the plan's --add_mlp_targets).")
    train_projector: bool = option(False, "Also train the audio-to-text projector (the audio encoder stays frozen).")
    loss_on_end_of_turn: bool = option(False, "Count the end-of-turn token after the answer in the loss, beside the answer.")
    dtype: Literal["auto", "float32", "bfloat16"] = option(
        "auto", "Weights of the frozen base model: auto = bfloat16 on a GPU, float32 on the CPU.")
    prompt_candidates: list[PromptCandidate] = option(
        factory=lambda: [PromptCandidate(text=text) for text in PLAN_B_PROMPTS],
        help="Prompt search: the hand-written candidates (default: plan B's five).")
    template_variants: bool = option(True, "Prompt search: add rephrasings of each candidate (options swapped, "
                                           "A/B wording, a task line, a question form).")
    generated_prompts: int = option(4, "Prompt search: prompts the model itself proposes from an OPRO meta-prompt "
                                       "showing the best so far with their scores; 0 = none.")
    free_generation_tokens: int = option(4, "Prompt search: tokens generated freely per clip to count answers "
                                            "outside A/B; 0 skips free generation.")

    def __post_init__(self) -> None:
        if not self.prompt.strip():
            raise ConfigError("model.speech_llm.prompt: must not be empty")
        if not self.prompt_candidates:
            raise ConfigError("model.speech_llm.prompt_candidates: needs at least one prompt")
        check_range("model.speech_llm.generated_prompts", self.generated_prompts, low=0, high=100)
        check_range("model.speech_llm.free_generation_tokens", self.free_generation_tokens, low=0, high=64)


@dataclasses.dataclass
class ModelConfig(Config):
    """Which architecture to build (a registry name) and its sizes."""
    name: str = option("cnn", "Registered model name: cnn, ast or speech_llm.")
    head_dropout: float = option(0.1, "Dropout before the classification head (A6: 0.1).")
    pretrained: str | None = option(None, "Local folder or hub id of a pretrained checkpoint (AST; the audio LLM's "
                                          "base model, e.g. a Qwen2-Audio folder).")
    cnn_channels: list[int] = option(factory=lambda: [32, 64, 128, 128], help="CNN: channels per conv block.")
    ast_hidden_size: int = option(192, "AST built from scratch: hidden size.")
    ast_layers: int = option(4, "AST built from scratch: transformer layers.")
    ast_heads: int = option(4, "AST built from scratch: attention heads.")
    ast_patch_stride: int = option(10, "AST: patch stride in both axes (10 = the paper's overlap).")
    lora: LoraSettings = option(factory=LoraSettings, help="LoRA settings.")
    speech_llm: SpeechLLMSettings = option(factory=SpeechLLMSettings, help="Audio LLM (model.name speech_llm) settings.")

    def __post_init__(self) -> None:
        check_range("model.head_dropout", self.head_dropout, low=0, high=1, high_inclusive=False)


@dataclasses.dataclass
class AugmentSpec(Config):
    """One augmentation: a registered name, its probability and its parameters."""
    name: str = option(help="Registered augmentation name.")
    p: float = option(1.0, "Probability of applying it to a sample.")
    params: dict[str, Any] = option(factory=dict, help="Parameters of the transform.")

    def __post_init__(self) -> None:
        check_range(f"augment.{self.name}.p", self.p, low=0, high=1)


@dataclasses.dataclass
class CurriculumStage(Config):
    """One stage of a curriculum (A7)."""
    epochs: int = option(1, "Epochs in this stage.")
    hard_examples: bool = option(False, "Add hard clips (misclassified before, since corrected).")
    hard_repeat: int = option(2, "How many times each hard clip is repeated.")
    hard_fraction: float = option(0.5, "Fraction of the hard clips drawn each epoch.")
    hard_classes: list[str] = option(factory=list, help="Limit hard clips to these classes (empty = all).")
    augment: list[AugmentSpec] | None = option(None, "Augmentations for this stage; null keeps the run's list.")
    lr: float | None = option(None, "Learning-rate override for this stage.")

    def __post_init__(self) -> None:
        check_range("curriculum.epochs", self.epochs, low=1)
        check_range("curriculum.hard_fraction", self.hard_fraction, low=0, high=1)


@dataclasses.dataclass
class TrainConfig(Config):
    """The optimisation recipe: optimiser, schedule, loss, batches, stopping."""
    epochs: int = option(10, "Epochs (ignored when a curriculum is given: its stages decide).")
    batch_size: int = option(32, "Clips per batch.")
    grad_accum_steps: int = option(1, "Gradient accumulation steps.")
    lr: float = option(1e-3, "Learning rate (the head's when backbone_lr is set).")
    backbone_lr: float | None = option(None, "Backbone learning rate for discriminative LRs (D2: 5e-5).")
    weight_decay: float = option(0.01, "AdamW weight decay.")
    warmup_steps: int = option(0, "Linear warm-up steps; 0 disables (D2: warm-up can wreck transfer).")
    schedule: Literal["cosine", "linear", "constant"] = option("cosine", "Decay after warm-up.")
    loss: Literal["ce", "focal"] = option("ce", "Cross-entropy or focal loss.")
    focal_gamma: float = option(2.0, "Focal loss gamma (D2: 2).")
    class_weights: Literal["none", "balanced", "effective", "sqrt"] = option("none", "Class weighting (C1).")
    effective_beta: float = option(0.999, "Beta of effective-number class weights.")
    label_smoothing: float = option(0.0, "Label smoothing for cross-entropy.")
    batch_composition: dict[str, int] | None = option(
        None, "Clips per class in each batch (A5); null = plain shuffled batches.")
    oversample: dict[str, float] | None = option(None, "Class -> oversampling factor for plain batches.")
    curriculum: list[CurriculumStage] = option(factory=list, help="Curriculum stages (A7); empty = none.")
    early_stopping_patience: int = option(3, "Epochs without improvement before stopping; 0 disables.")
    early_stopping_metric: Literal["accuracy", "f1_macro", "balanced_accuracy", "loss"] = option(
        "f1_macro", "Validation metric to watch.")
    mixed_precision: Literal["no", "auto", "bf16"] = option(
        "no", "bf16 autocast for the forward pass on a GPU (ignored on the CPU); auto = bf16 when the GPU supports it.")
    seed: int = option(42, "Seed for every random draw of the run.")
    num_workers: int = option(0, "Data-loader worker processes.")

    def __post_init__(self) -> None:
        check_range("train.epochs", self.epochs, low=1, high=10000)
        check_range("train.batch_size", self.batch_size, low=1, high=65536)
        check_range("train.grad_accum_steps", self.grad_accum_steps, low=1)
        check_range("train.lr", self.lr, low=0, low_inclusive=False, high=10)
        if self.backbone_lr is not None:
            check_range("train.backbone_lr", self.backbone_lr, low=0, low_inclusive=False, high=10)
        check_range("train.weight_decay", self.weight_decay, low=0)
        check_range("train.warmup_steps", self.warmup_steps, low=0)
        check_range("train.focal_gamma", self.focal_gamma, low=0)
        check_range("train.effective_beta", self.effective_beta, low=0, high=1, high_inclusive=False)
        check_range("train.label_smoothing", self.label_smoothing, low=0, high=1, high_inclusive=False)
        if self.batch_composition is not None:
            for cls_name, n in self.batch_composition.items():
                check_range(f"train.batch_composition.{cls_name}", n, low=0)


@dataclasses.dataclass
class GatePolicy(Config):
    """Promotion gates (A8, A9, C3): what a candidate's audit must show before it may replace
    production. Accuracies and F1 are fractions in [0, 1], higher is better; a threshold set to
    null is not checked. The defaults are the sirens plan's targets (A, A8)."""
    split: str = option("test", "The audited split the gates read.")
    key_classes: list[str] = option(factory=lambda: ["emergency_sirens"],
                                    help="Classes held to min_key_class_accuracy instead of min_class_accuracy.")
    min_key_class_accuracy: float | None = option(0.95, "Lowest accuracy (recall) allowed for each key class (A: sirens 0.95).")
    min_class_accuracy: float | None = option(0.93, "Lowest accuracy (recall) allowed for every other class (A: 0.93).")
    max_relative_regression: float | None = option(
        0.02, "Largest drop of any class's accuracy relative to the production model, (production - candidate) / production (A8: 2%).")
    min_accuracy: float | None = option(None, "Lowest overall accuracy (C3 go/no-go).")
    min_f1_macro: float | None = option(None, "Lowest F1-macro (C3 go/no-go).")
    min_rare_class_f1: float | None = option(None, "Lowest mean F1 over the rare classes (C3 go/no-go).")
    rare_classes: list[str] = option(
        factory=list, help="Classes the rare-class gate reads; empty = the rare_class_count classes with the fewest clips in the split.")
    rare_class_count: int = option(3, "How many of the least represented classes count as rare when rare_classes is empty.")
    min_balanced_accuracy: float | None = option(None, "Lowest balanced accuracy, the mean of the per-class accuracies "
                                                       "(B9: a detector's headline number).")
    max_ece: float | None = option(None, "Highest expected calibration error of the top-class probability (B9).")
    beat_vads_at_snr_db: float | None = option(
        None, "Speech detectors (B9): on the clips at or below this SNR (dB), the candidate's balanced accuracy must "
              "beat the best VAD baseline's (webrtc modes, Silero), each at its dev-calibrated threshold.")

    def __post_init__(self) -> None:
        for name in ("min_key_class_accuracy", "min_class_accuracy", "min_accuracy", "min_f1_macro", "min_rare_class_f1",
                     "min_balanced_accuracy", "max_ece"):
            value = getattr(self, name)
            if value is not None:
                check_range(f"gates.{name}", value, low=0, high=1)
        if self.max_relative_regression is not None:
            check_range("gates.max_relative_regression", self.max_relative_regression, low=0, high=1)
        check_range("gates.rare_class_count", self.rare_class_count, low=1)


MIN_FOLDS = 3  # cross-validation: a held-out, a validation and at least one training fold


@dataclasses.dataclass
class AuditConfig(Config):
    """How an audit judges labels and how far it trusts its model (issue 11), validated here once
    for the CLI, the UI and the pipeline. Probabilities are fractions in [0, 1]. The defaults
    derive the thresholds and the queue size from the model's own held-out behaviour instead of
    fixed numbers tuned on the demo."""
    calibrate: bool = option(True, "Fit temperature scaling on the validation split before judging; extreme-off "
                                   "and label-issue scores use the calibrated probabilities.")
    thresholds: Literal["per_class", "fixed"] = option(
        "per_class", "Extreme-off thresholds: per_class = from the model's calibrated validation behaviour "
                     "(cleanlab's per-class confident thresholds); fixed = max_label_prob and min_top_prob.")
    max_label_prob: float = option(0.1, "Fixed thresholds: extreme-off when the label's probability is at most this.")
    min_top_prob: float = option(0.7, "Fixed thresholds: extreme-off when the top class's probability is at least this.")
    min_class_accuracy: float = option(
        0.8, "Trust check: no proposals in a class whose held-out accuracy (recall) is below this "
             "(validation for the audited model, out-of-fold for the label-issue ranking).")
    max_queue_share: float = option(
        0.1, "The label-issue queue holds cleanlab's estimate of the number of label issues plus two standard "
             "errors, never more than this share of the ranked clips.")
    max_label_issues: int | None = option(None, "Queue at most this many ranked label issues (wins over the "
                                                "estimate and the share).")
    # The names of core.label_issues.LABEL_QUALITY_METHODS (a test keeps the two equal).
    method: Literal["self_confidence", "normalized_margin"] = option(
        "self_confidence", "Label-issue ranking: cleanlab's label quality score (self_confidence = p(given label); "
                           "normalized_margin = also low when another class is clearly preferred).")
    folds: int = option(5, f"Label-issue ranking: cross-validation folds, grouped by source group (at least {MIN_FOLDS}: "
                           "held-out, validation and training folds).")

    def __post_init__(self) -> None:
        for name in ("max_label_prob", "min_top_prob", "min_class_accuracy"):
            check_range(f"audit.{name}", getattr(self, name), low=0, high=1)
        check_range("audit.max_queue_share", self.max_queue_share, low=0, high=1)
        if self.max_label_issues is not None:
            check_range("audit.max_label_issues", self.max_label_issues, low=0)
        check_range("audit.folds", self.folds, low=MIN_FOLDS)


@dataclasses.dataclass
class HygieneConfig(Config):
    """VAD hygiene (B6): which labelled clips a voice-activity detector contradicts, validated
    here once for the CLI, the UI and the pipeline. Fractions are the share of a clip's frames
    the detector calls speech, in [0, 1]."""
    # Silero by default: on the speech demo's clean non-speech clips (music, noise, environmental)
    # WebRTC mode 3 calls a median 100% of frames speech, so B6's 5% limit fails nearly all of them
    # and the trust check has to set the class aside (recall of the planted faults 0.07 against
    # Silero's 0.81).
    vad: Literal["webrtc", "silero"] = option("silero", "The detector: silero (Silero VAD, a speech probability per "
                                                        "32 ms frame) or webrtc (WebRTC VAD, frame by frame: fast, "
                                                        "but it calls most noise and music speech).")
    mode: int = option(3, "WebRTC aggressiveness, 0 (calls the most frames speech) to 3 (the fewest).")
    frame_ms: int = option(30, "WebRTC frame length: 10, 20 or 30 ms.")
    threshold: float = option(0.5, "Silero: a frame is speech when its probability is at least this.")
    speech_min: float = option(0.70, "A speech clip fails when less than this share of its frames is speech (B6: 0.70).")
    nonspeech_max: float = option(0.05, "A non-speech clip fails when more than this share of its frames is speech "
                                        "(B6: 0.05).")
    speech_label: str = option("SPEECH", "The label of speech clips.")
    nonspeech_label: str = option("NONSPEECH", "The label of non-speech clips.")
    min_pass_rate: float = option(
        0.5, "Trust check: in a group of clips (one label at one SNR, when clips carry snr_db) where fewer than this "
             "share pass, the detector cannot judge that condition; none of the group's clips is queued.")

    def __post_init__(self) -> None:
        if self.mode not in (0, 1, 2, 3):
            raise ConfigError(f"hygiene.mode: {self.mode!r} must be 0, 1, 2 or 3")
        if self.frame_ms not in (10, 20, 30):
            raise ConfigError(f"hygiene.frame_ms: {self.frame_ms!r} must be 10, 20 or 30")
        for name in ("threshold", "speech_min", "nonspeech_max", "min_pass_rate"):
            check_range(f"hygiene.{name}", getattr(self, name), low=0, high=1)
        if self.speech_label == self.nonspeech_label:
            raise ConfigError(f"hygiene.nonspeech_label: {self.nonspeech_label!r} must differ from speech_label")

    def vad_options(self) -> dict[str, Any]:
        """The chosen detector's own options (core.vad.measure)."""
        return {"mode": self.mode, "frame_ms": self.frame_ms} if self.vad == "webrtc" else {"threshold": self.threshold}

    def vad_description(self) -> str:
        """The detector as a person reads it in a summary line ("webrtc mode 3, 30 ms frames")."""
        if self.vad == "webrtc":
            return f"webrtc mode {self.mode}, {self.frame_ms} ms frames"
        return f"silero, speech at p >= {self.threshold:g}"


@dataclasses.dataclass
class DuplicatesConfig(Config):
    """Near-duplicate search (issue 17): what a duplicate is and how the search looks for one.
    The similarity threshold is not here: each run derives it from the session's own clips."""
    embedding: Literal["auto", "model", "logmel"] = option(
        "auto", "What clips are compared by: model (the penultimate layer of the production model, or of --run), "
                "logmel (a gain- and shift-robust log-mel fingerprint), auto (model when there is one, else logmel).")
    neighbours: int = option(10, "Nearest neighbours looked at per clip; a clip with more duplicates than this still "
                                 "gets a candidate, with its closest ones.")
    calibration_clips: int = option(200, "Clips copied (at another gain, shifted a little) to learn how similar a "
                                         "duplicate is in this session; fewer when the session is smaller.")
    copy_gain_db: float = option(6.0, "A duplicate may be up to this much louder or quieter (dB).")
    copy_shift_s: float = option(0.1, "A duplicate may start up to this much earlier or later (s).")
    seed: int = option(0, "Seed of which clips are copied and how.")

    def __post_init__(self) -> None:
        check_range("duplicates.neighbours", self.neighbours, low=1, high=1000)
        check_range("duplicates.calibration_clips", self.calibration_clips, low=10, high=100_000)
        check_range("duplicates.copy_gain_db", self.copy_gain_db, low=0, high=40)
        check_range("duplicates.copy_shift_s", self.copy_shift_s, low=0, high=5)


@dataclasses.dataclass
class ComparisonConfig(Config):
    """Speech detectors side by side (B5, B9): which VAD baselines to score beside the trained
    runs, how each detector's threshold is chosen on the dev (val) split, and how much the
    report resamples and lists; validated here once for the CLI, the UI and the pipeline."""
    detectors: list[str] = option(
        factory=lambda: ["webrtc-0", "webrtc-1", "webrtc-2", "webrtc-3", "silero"],
        help="Baseline detectors scored beside the trained runs (core.detectors names: webrtc-0 .. webrtc-3, silero); "
             "empty = the trained runs alone.")
    # The names of core.detector_report.OBJECTIVES (a test keeps the two equal).
    objective: Literal["accuracy", "balanced_accuracy", "youden"] = option(
        "balanced_accuracy", "What each detector's threshold maximises on the val split before it is applied unchanged "
                             "to test (B5): accuracy, balanced_accuracy or youden (TPR - FPR).")
    speech_label: str = option("SPEECH", "The label of speech clips (a trained run's model must have it).")
    nonspeech_label: str = option("NONSPEECH", "The label of non-speech clips.")
    bootstrap_draws: int = option(200, "Resamples of the test clips for the DT50 / DT75 95% intervals; 0 = none.")
    worst_clips: int = option(10, "Wrong test clips listed per detector, most confident first.")
    reliability_bins: int = option(10, "Equal-width score bins of the reliability diagrams (ECE, MCE).")
    seed: int = option(0, "Seed of the bootstrap's generator.")

    def __post_init__(self) -> None:
        if len(set(self.detectors)) != len(self.detectors):
            raise ConfigError(f"comparison.detectors: {self.detectors!r} names a detector twice")
        check_range("comparison.bootstrap_draws", self.bootstrap_draws, low=0, high=10000)
        check_range("comparison.worst_clips", self.worst_clips, low=0, high=1000)
        check_range("comparison.reliability_bins", self.reliability_bins, low=2, high=100)
        if self.speech_label == self.nonspeech_label:
            raise ConfigError(f"comparison.nonspeech_label: {self.nonspeech_label!r} must differ from speech_label")


@dataclasses.dataclass
class BreakdownBins(Config):
    """Cut points that group one numeric metadata column for breakdowns, e.g. SNR at 0/5/10/20 dB."""
    column: str = option(help="Metadata column (duration_s, snr_db, or a key the dataset's manifest brought).")
    cuts: list[float] = option(help="Increasing cut points; the bins are open-ended at both ends (< first, >= last).")
    unit: str = option("", "Unit written after the numbers in bin names.")

    def __post_init__(self) -> None:
        if not self.cuts or any(b <= a for a, b in zip(self.cuts, self.cuts[1:])):
            raise ConfigError(f"evaluation.breakdown_bins: cuts of {self.column!r} must be increasing numbers, got {self.cuts}")


@dataclasses.dataclass
class EvaluationConfig(Config):
    """Breakdowns: accuracy and F1 per group of clip metadata (SNR, duration bin, source, ...)."""
    breakdown_columns: list[str] = option(
        factory=list, help="Metadata columns to break metrics down by; empty = duration_s, dataset and every column "
                           "the dataset's manifest brought.")
    breakdown_bins: list[BreakdownBins] = option(
        factory=lambda: [BreakdownBins(column="duration_s", cuts=[1.0, 3.0, 5.0, 8.0, 10.0], unit="s"),
                         BreakdownBins(column="snr_db", cuts=[0.0, 5.0, 10.0, 20.0], unit="dB")],
        help="How numeric columns are binned; a numeric column not listed is grouped by value when it has few, "
             "else cut at its quartiles.")
    breakdown_max_groups: int = option(12, "A text column with more distinct values than this (e.g. a recording id) "
                                           "is not broken down.")

    def __post_init__(self) -> None:
        check_range("evaluation.breakdown_max_groups", self.breakdown_max_groups, low=2, high=100)
        named = [b.column for b in self.breakdown_bins]
        if len(set(named)) != len(named):
            raise ConfigError(f"evaluation.breakdown_bins: a column is listed twice in {named}")


@dataclasses.dataclass
class ContrastiveHead(Config):
    """A supervised contrastive term (Khosla et al. 2020, SupCon) on the model's embedding (A10)."""
    enabled: bool = option(False, "Add a supervised contrastive term on the embedding before the classifier "
                                  "(pulls clips of a class together, pushes the paired classes apart).")
    weight: float = option(0.1, "Weight of the contrastive term beside the classification loss.")
    pairs: list[list[str]] = option(
        factory=list, help="Class pairs that contrast with each other, e.g. [[emergency_sirens, alert_sounds]]; "
                           "empty = every class with every other (plain SupCon).")
    temperature: float = option(0.1, "SupCon temperature: lower = harder on near neighbours (the paper's 0.1).")

    def __post_init__(self) -> None:
        check_range("heads.contrastive.weight", self.weight, low=0)
        check_range("heads.contrastive.temperature", self.temperature, low=0, low_inclusive=False, high=10)
        for pair in self.pairs:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise ConfigError(f"heads.contrastive.pairs: {pair!r} must name two different classes")

    def classes(self) -> list[str]:
        """Every class a pair names, in first-seen order."""
        return list(dict.fromkeys(name for pair in self.pairs for name in pair))


@dataclasses.dataclass
class EnvelopeHead(Config):
    """An auxiliary head regressing the clip's amplitude-envelope modulation rate (A10), on a log
    scale; the target is measured from the clean clip audio and cached per clip (core/envelope.py)."""
    enabled: bool = option(False, "Add a head that regresses the clip's amplitude-envelope modulation rate "
                                  "(log Hz) from the embedding.")
    weight: float = option(0.1, "Weight of the envelope-rate term beside the classification loss.")
    min_hz: float = option(0.5, "Lowest modulation rate searched (Hz); clips shorter than 2 periods of it search "
                                "from 2 / duration.")
    max_hz: float = option(20.0, "Highest modulation rate searched (Hz).")
    hop_ms: float = option(10.0, "Hop of the frame-RMS envelope (ms); the envelope is sampled at 1000 / hop_ms Hz.")
    min_depth: float = option(0.1, "A clip whose strongest modulation in the band is shallower than this (amplitude "
                                   "relative to the envelope's mean) counts as unmodulated: its target is min_hz.")

    def __post_init__(self) -> None:
        check_range("heads.envelope.weight", self.weight, low=0)
        check_range("heads.envelope.hop_ms", self.hop_ms, low=1, high=100)
        check_range("heads.envelope.min_hz", self.min_hz, low=0, low_inclusive=False)
        check_range("heads.envelope.max_hz", self.max_hz, low=self.min_hz, low_inclusive=False,
                    high=500 / self.hop_ms, high_inclusive=False)  # below the envelope's Nyquist
        check_range("heads.envelope.min_depth", self.min_depth, low=0, high=1)


@dataclasses.dataclass
class HeadsConfig(Config):
    """Optional auxiliary training terms on the embedding (A10). They train beside the classifier
    and are dropped afterwards: checkpoints and inference never need them."""
    contrastive: ContrastiveHead = option(factory=ContrastiveHead, help="Supervised contrastive term.")
    envelope: EnvelopeHead = option(factory=EnvelopeHead, help="Envelope modulation-rate head.")

    @property
    def any(self) -> bool:
        return self.contrastive.enabled or self.envelope.enabled


@dataclasses.dataclass
class ExperimentConfig(Config):
    """A whole preset: what a run is built from, saved resolved into every run folder."""
    name: str = option("custom", "Preset name.")
    description: str = option("", "What this preset is for.")
    features: FeatureConfig = option(factory=FeatureConfig, help="Log-mel features.")
    model: ModelConfig = option(factory=ModelConfig, help="Model.")
    train: TrainConfig = option(factory=TrainConfig, help="Training recipe.")
    augment: list[AugmentSpec] = option(factory=list, help="Training augmentations ({name, p, params}; see core/augment).")
    augment_copies: int = option(0, "Augmented copies of each clip added to every epoch beside the clean one "
                                    "(A7: clean set + augmentations); 0 augments the drawn clips in place.")
    augment_classes: list[str] = option(factory=list, help="Augment only clips of these classes (A4: sirens); empty = all.")
    augment_mode: Literal["auto", "on_the_fly", "offline"] = option(
        "auto", "auto: waveform augmentation runs on the fly while it costs less than the model step it feeds, "
                "else it is rendered once before training; the choice is logged.")
    noise_bank: str | None = option(
        None, "Folder in MUSAN layout (music/, speech/, noise/) for background_noise: an absolute path, or one relative "
              "to the session folder (the speech demo writes its own at noise_bank/). Read when a run, a preview or "
              "augmented copies start in a session; a run's saved config holds the absolute folder.")
    mixup_alpha: float = option(0.0, "MixUp Beta(alpha); 0 disables (A6: none for sirens).")
    mixup_p: float = option(0.0, "Probability of MixUp per batch (D3: 0.5-0.6).")
    gates: GatePolicy = option(factory=GatePolicy, help="Promotion gates a run's audit must pass.")
    evaluation: EvaluationConfig = option(factory=EvaluationConfig, help="Metric breakdowns by clip metadata.")
    heads: HeadsConfig = option(factory=HeadsConfig, help="Optional auxiliary heads trained beside the classifier (A10).")

    def __post_init__(self) -> None:
        check_range("augment_copies", self.augment_copies, low=0, high=100)
        check_range("mixup_alpha", self.mixup_alpha, low=0)
        check_range("mixup_p", self.mixup_p, low=0, high=1)
        # Every augmentation list is built once here, so a bad name or option fails when the
        # preset is loaded, not in the training child. The bank is not read here: a relative one
        # names a folder of a session not known yet, and a saved run config must load without it;
        # for_session opens it. (Imported here: core.augment imports this module.)
        from core.augment import NoiseBank, build_pipeline
        bank = None if self.noise_bank is None else NoiseBank.unopened(self.noise_bank)
        for specs in self.augment_lists():
            pipeline = build_pipeline(specs, sample_rate_hz=self.features.sample_rate_hz, noise_bank=bank)
            if pipeline.spec_steps and self.features.front_end == "waveform":
                raise ConfigError(f"augment: {', '.join(sorted(pipeline.names('spec')))} works on log-mel features, but "
                                  f"features.front_end is waveform; use waveform augmentations only")
        if self.model.name == "speech_llm" and self.mixup_p > 0:
            raise ConfigError("mixup_p: must be 0 for speech_llm (it answers one letter per clip; a mixed clip has no answer)")
        self._check_heads()

    def _check_heads(self) -> None:
        """The auxiliary heads read the embedding before the classifier: the audio LLM answers with
        a letter and has none. A MixUp'd batch trains the classifier only (a blend of two clips has
        no single class to contrast nor one envelope rate), so MixUp on every batch would leave the
        heads nothing to learn from."""
        enabled = [name for name in ("contrastive", "envelope") if getattr(self.heads, name).enabled]
        if not enabled:
            return
        if self.model.name == "speech_llm":
            raise ConfigError(f"heads.{enabled[0]}.enabled: the audio LLM (speech_llm) has no embedding for "
                              "auxiliary heads; use cnn or ast")
        if self.mixup_p >= 1:
            raise ConfigError(f"heads.{enabled[0]}.enabled: mixup_p is 1, so every batch is mixed and the auxiliary "
                              "heads (trained on unmixed batches only) would never train; lower mixup_p")

    def augment_lists(self) -> list[list[AugmentSpec]]:
        """The run's augmentation list and each curriculum stage's own."""
        return [self.augment, *(s.augment for s in self.train.curriculum if s.augment is not None)]

    def for_session(self, session_dir: str | Path, *, open_bank: bool = True) -> ExperimentConfig:
        """This config as a run in the session at session_dir uses it: noise_bank absolute (see
        noise_bank_folder) and, when an augmentation draws from it, opened and checked against
        every list. Raises ConfigError in one line naming the folder and what to do when the bank
        is missing, or NoiseBank's / the transform's error when it cannot serve the lists.
        open_bank=False checks only that the folder is there: opening reads every file's header
        (a MUSAN bank: thousands), too slow for a form that checks itself on every keystroke."""
        if self.noise_bank is None:
            return self
        folder = noise_bank_folder(self.noise_bank, session_dir=session_dir)
        bound = self.with_overrides({"noise_bank": str(folder)})
        from core.augment import NoiseBank, build_pipeline, needs_noise_bank
        lists = bound.augment_lists()
        if any(needs_noise_bank(specs) for specs in lists):
            if not folder.is_dir():
                raise ConfigError(f"noise_bank: {folder} is not a folder; put a noise bank in MUSAN layout there "
                                  f"(music/, speech/, noise/), or --set noise_bank=/path/to/musan, or remove "
                                  f"background_noise from augment")
            if not open_bank:
                return bound
            bank = NoiseBank(folder, sample_rate_hz=bound.features.sample_rate_hz)
            for specs in lists:
                build_pipeline(specs, sample_rate_hz=bound.features.sample_rate_hz, noise_bank=bank)
        return bound


def noise_bank_folder(noise_bank: str | Path, *, session_dir: str | Path) -> Path:
    """The one place a noise_bank setting becomes a folder: an absolute path (or ~/...) as it
    is, a relative one under the session folder (Store.session_dir), never the working directory."""
    folder = Path(noise_bank).expanduser()
    return folder if folder.is_absolute() else Path(session_dir).expanduser().resolve() / folder


PRESETS_DIR = Path(__file__).resolve().parent.parent / "data" / "presets"


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name_or_path: str, overrides: list[str] | None = None, *,
                session_dir: str | Path | None = None) -> ExperimentConfig:
    """A preset by name (data/presets/NAME.yaml) or by path, with dotted overrides applied; with
    session_dir, as that session's run uses it (ExperimentConfig.for_session: the noise bank
    resolved and checked). Without one, nothing on disk beyond the preset file is read."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(f"unknown preset {name_or_path!r}; available: {', '.join(list_presets()) or 'none'}")
    config = ExperimentConfig.load(path)
    config = config.with_overrides(overrides) if overrides else config
    return config if session_dir is None else config.for_session(session_dir)
