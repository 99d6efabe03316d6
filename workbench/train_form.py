"""The Train tab's form as data: preset -> field values, and field values (or YAML) -> overrides.

Why overrides and not a whole config: a run records its preset by name, and the dotted
overrides the person changed say exactly how this run differs from it (they are shown in the
queue and the log). Both the form and the advanced YAML view go through the typed config, so
a bad value raises ConfigError naming its dotted key, the same message the CLI gives.
No Gradio here: the tab module maps these values onto components.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import typing
from typing import Any

import pandas as pd
import yaml

from core.config import Config, ConfigError, ExperimentConfig

# Scalar settings shown as form fields, in form order (dotted config keys).
SCALAR_KEYS = ("model.name", "train.epochs", "train.batch_size", "train.lr", "train.backbone_lr",
               "train.warmup_steps", "train.schedule", "train.loss", "train.class_weights",
               "train.early_stopping_patience", "mixup_p", "mixup_alpha")
# The audio LLM's settings (model.name speech_llm), shown only for it: base model, LoRA, prompt.
LLM_KEYS = ("model.pretrained", "model.lora.rank", "model.lora.alpha", "model.lora.dropout",
            "model.speech_llm.add_mlp_targets", "model.speech_llm.train_projector",
            "model.speech_llm.prompt_from_search", "model.speech_llm.speech_answer",
            "model.speech_llm.generated_prompts", "model.speech_llm.template_variants",
            "model.speech_llm.free_generation_tokens", "model.speech_llm.prompt")
# The optional auxiliary heads (A10): a switch and a weight each; their other settings stay in the preset.
HEAD_KEYS = ("heads.contrastive.enabled", "heads.contrastive.weight", "heads.envelope.enabled", "heads.envelope.weight")
FORM_KEYS = SCALAR_KEYS + HEAD_KEYS + LLM_KEYS  # every field's value, in this order, reaches the handlers
MULTILINE_KEYS = {"model.speech_llm.prompt"}  # text kept exactly as typed (other text fields are trimmed)
COMPOSITION_COLUMNS = ["class", "per batch"]
AUGMENT_COLUMNS = ["augmentation", "p", "parameters"]
CURRICULUM_COLUMNS = ["epochs", "hard examples", "hard repeat", "hard fraction", "hard classes", "lr"]


def scalar_values(config: ExperimentConfig) -> dict[str, Any]:
    """The form fields' values for a config (dotted key -> value, FORM_KEYS order)."""
    return {key: _get(config, key) for key in FORM_KEYS}


def is_llm(config: ExperimentConfig) -> bool:
    """Whether the config builds the audio LLM, whose fields (LLM_KEYS) the form then shows."""
    return config.model.name == "speech_llm"


@functools.cache
def field_hint(key: str) -> Any:
    """The type hint of a dotted config key (model.lora.rank -> int)."""
    section, _, name = key.rpartition(".")
    owner: Any = ExperimentConfig
    for part in filter(None, section.split(".")):
        owner = typing.get_type_hints(owner)[part]
    return typing.get_type_hints(owner)[name]


def literal_choices(key: str) -> list[str]:
    """The allowed values of a Literal-typed field (schedule, loss, the speech letter); [] otherwise."""
    hint = field_hint(key)
    return list(typing.get_args(hint)) if typing.get_origin(hint) is typing.Literal else []


def is_text(key: str) -> bool:
    """A free-text field (a folder, a prompt): its value is taken as text, never read as YAML, so
    a prompt with colons or a folder named 123 stays text."""
    return field_hint(key) in (str, str | None)


def epochs_note(config: ExperimentConfig) -> str | None:
    """Why the epochs field does not apply, or None when it does: a curriculum's stages decide
    the number of epochs (train.epochs is then ignored by the trainer)."""
    stages = config.train.curriculum
    if not stages:
        return None
    total = sum(stage.epochs for stage in stages)
    return (f"Set by the curriculum below: {len(stages)} stage(s), {total} epoch(s) in all; edit the stages' "
            "epochs instead (train.epochs is ignored while a curriculum is given).")


def composition_table(config: ExperimentConfig, classes: list[str]) -> pd.DataFrame:
    """One row per class (the session's, then any the preset names); 0 = not in composed batches."""
    wanted = config.train.batch_composition or {}
    rows = [(name, int(wanted.get(name, 0))) for name in [*classes, *sorted(set(wanted) - set(classes))]]
    return pd.DataFrame(rows, columns=COMPOSITION_COLUMNS)


def augment_table(config: ExperimentConfig) -> pd.DataFrame:
    rows = [(spec.name, spec.p, _flow(spec.params) if spec.params else "") for spec in config.augment]
    return pd.DataFrame(rows, columns=AUGMENT_COLUMNS)


def curriculum_table(config: ExperimentConfig) -> pd.DataFrame:
    rows = [(s.epochs, s.hard_examples, s.hard_repeat, s.hard_fraction, ", ".join(s.hard_classes),
             "" if s.lr is None else f"{s.lr:g}") for s in config.train.curriculum]
    return pd.DataFrame(rows, columns=CURRICULUM_COLUMNS)


def config_from_form(preset: ExperimentConfig, scalars: dict[str, Any], composition: pd.DataFrame,
                     augment: pd.DataFrame, curriculum: pd.DataFrame) -> ExperimentConfig:
    """The preset with the form's values applied; ConfigError names the first bad field.

    A curriculum stage keeps what the preset set for fields the form does not show (its
    per-stage augmentations); an all-zero composition means plain shuffled batches.
    """
    values: dict[str, Any] = {key: _text(value, trim=key not in MULTILINE_KEYS) if is_text(key) else _cell(value)
                              for key, value in scalars.items()}
    counts = {str(row[0]).strip(): _cell(row[1], default=0) for row in _rows(composition)}
    values["train.batch_composition"] = {k: v for k, v in counts.items() if v != 0} or None
    values["augment"] = [_augment_spec(i, row) for i, row in enumerate(_rows(augment))]
    stages = [stage.to_dict() for stage in preset.train.curriculum]
    values["train.curriculum"] = [_curriculum_stage(row, stages[i] if i < len(stages) else {})
                                  for i, row in enumerate(_rows(curriculum))]
    return preset.with_overrides(values)


def config_from_yaml(text: str) -> ExperimentConfig:
    """The advanced view's YAML as a config; ConfigError names the bad key."""
    try:
        data = yaml.safe_load(text) if text and text.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"advanced YAML: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError("advanced YAML: expected a mapping of settings (features, model, train, augment, ...)")
    return ExperimentConfig.from_dict(data)


def to_yaml(config: ExperimentConfig) -> str:
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def overrides_between(base: Config, changed: Config, *, prefix: str = "") -> list[str]:
    """Dotted `key=value` assignments turning base into changed (values as JSON, which YAML reads)."""
    out: list[str] = []
    for field in dataclasses.fields(base):
        old, new = getattr(base, field.name), getattr(changed, field.name)
        if isinstance(new, Config) and type(new) is type(old):
            out += overrides_between(old, new, prefix=f"{prefix}{field.name}.")
        elif _plain(old) != _plain(new):
            out.append(f"{prefix}{field.name}={json.dumps(_plain(new))}")
    return out


# --- cells -> typed values -----------------------------------------------------------------

def _rows(table: pd.DataFrame | None) -> list[list[Any]]:
    """The table's rows, without the blank ones an editable table leaves behind."""
    if table is None or len(table) == 0:
        return []
    return [list(row) for row in table.itertuples(index=False) if any(_filled(_cell(v)) for v in row)]


def _filled(value: Any) -> bool:
    return value is not None and value is not False and value != ""


def _cell(value: Any, *, default: Any = None) -> Any:
    """A table/form cell as a typed value: numbers stay numbers, text is read as YAML ('3' -> 3)."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return default
    if hasattr(value, "item"):  # numpy scalars from pandas
        value = value.item()
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return default
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError:
            return text
    return value


def _text(value: Any, *, trim: bool) -> str | None:
    """A text field's value: None when blank (an unset folder); a one-line field trimmed (a
    pasted folder's stray spaces), a prompt exactly as typed (its line breaks are the prompt)."""
    if value is None or not str(value).strip():
        return None
    return str(value).strip() if trim else str(value)


def _augment_spec(index: int, row: list[Any]) -> dict[str, Any]:
    name, p, params = (row + [None] * 3)[:3]
    params = _cell(params, default={})
    if not isinstance(params, dict):
        raise ConfigError(f"augment[{index}].params: expected a mapping like {{min_snr_db: 5}}, got {params!r}")
    return {"name": str(_cell(name, default="")), "p": _cell(p, default=1.0), "params": params}


def _curriculum_stage(row: list[Any], kept: dict[str, Any]) -> dict[str, Any]:
    epochs, hard, repeat, fraction, classes, lr = (row + [None] * 6)[:6]
    classes = _cell(classes, default="")
    names = [c.strip() for c in str(classes).split(",") if c.strip()] if not isinstance(classes, list) else classes
    return {**kept, "epochs": _cell(epochs, default=1), "hard_examples": bool(_cell(hard, default=False)),
            "hard_repeat": _cell(repeat, default=2), "hard_fraction": _cell(fraction, default=0.5),
            "hard_classes": names, "lr": _cell(lr)}


def _get(config: Config, key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _plain(value: Any) -> Any:
    return value.to_dict() if isinstance(value, Config) else (
        [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value)


def _flow(mapping: dict[str, Any]) -> str:
    return yaml.safe_dump(mapping, default_flow_style=True, sort_keys=False).strip()
