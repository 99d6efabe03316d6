"""Self-describing checkpoint folders: everything needed to rebuild a model, and nothing else.

A folder holds two files:
- `model.safetensors`: the full state dict (for a LoRA AST, that of the peft-wrapped
  model: frozen base, adapters and head, so no pretrained source is needed to rebuild it); the
  audio LLM keeps only its adapters (AudioClassifier.save_weights) and names its base model in
  the architecture, so that base must be readable where the checkpoint is loaded;
- `config.json`: format version, model and feature configs, labels (output order),
  feature normalisation stats, the model's architecture description (the exact
  transformers config for an AST) and free-form `extra` (run id, metrics, step ...).

`config.json` is written last, so a folder that has one is complete. `load_checkpoint`
rebuilds from the folder alone; `init_from_checkpoint` starts a new fine-tune from one.
A training run keeps its best model in `checkpoint/` under its run folder: ask
`checkpoint_dir(run_dir)` and `has_checkpoint(folder)` rather than spelling the layout out.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from core.config import ConfigError, FeatureConfig, ModelConfig
from core.models import AudioClassifier, build_model
from core.models.lora import has_lora_adapters

__all__ = ["CHECKPOINT_DIR", "CONFIG_FILE", "FORMAT_VERSION", "WEIGHTS_FILE", "LoadedCheckpoint", "WeightTransfer",
           "checkpoint_dir", "checkpoint_labels", "has_checkpoint", "init_from_checkpoint", "load_checkpoint",
           "read_configs", "save_checkpoint", "update_extra"]

FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_REQUIRED_KEYS = ("format_version", "model", "features", "labels", "norm_stats", "extra", "architecture")


@dataclasses.dataclass
class LoadedCheckpoint:
    """A rebuilt model (in eval mode) and everything saved beside it."""
    folder: Path
    model: AudioClassifier
    model_cfg: ModelConfig
    feature_cfg: FeatureConfig
    labels: list[str]
    norm_stats: dict[str, Any]
    extra: dict[str, Any]


@dataclasses.dataclass
class WeightTransfer:
    """What `init_from_checkpoint` did, by state-dict name."""
    copied: list[str]
    kept_fresh: list[str]   # in the model, left as initialised (new head, or no same-shaped match)
    unused: list[str]       # in the checkpoint, with no same-named, same-shaped place in the model

    @property
    def total(self) -> int:
        """Tensors in the model's state dict (copied + kept fresh)."""
        return len(self.copied) + len(self.kept_fresh)

    def __str__(self) -> str:
        fresh = ", ".join(self.kept_fresh[:4]) + (", ..." if len(self.kept_fresh) > 4 else "")
        return (f"copied {len(self.copied)} of {self.total} tensors; {len(self.kept_fresh)} kept freshly initialised "
                f"({fresh or 'none'}); {len(self.unused)} checkpoint tensors unused")


def checkpoint_dir(run_dir: str | Path) -> Path:
    """The checkpoint folder of a training run's folder (it may not exist yet)."""
    return Path(run_dir) / CHECKPOINT_DIR


def has_checkpoint(folder: str | Path) -> bool:
    """Whether folder holds a complete checkpoint (its config.json, written last, is there)."""
    return (Path(folder) / CONFIG_FILE).is_file()


def checkpoint_labels(folder: str | Path) -> list[str]:
    """The model's output classes, in probability-column order, read from the description alone."""
    return list(_read_description(Path(folder))[0]["labels"])


def save_checkpoint(folder: str | Path, *, model: AudioClassifier, model_cfg: ModelConfig,
                    feature_cfg: FeatureConfig, labels: list[str], norm_stats: dict[str, Any],
                    extra: dict[str, Any] | None = None) -> Path:
    """Write `model` and its description into `folder` (created; an older checkpoint is replaced).

    norm_stats and extra must be JSON-serialisable; numpy arrays and tensors inside them are
    stored as (nested) lists. Returns the folder.
    """
    folder = Path(folder)
    if not isinstance(model, AudioClassifier):
        raise ValueError(f"model: expected a model from core.models.build_model, got {type(model).__name__}")
    if list(labels) != model.labels:
        raise ValueError(f"labels: {list(labels)!r} differ from the model's output labels {model.labels!r}")
    if has_lora_adapters(model) != model_cfg.lora.enabled:
        raise ValueError(f"model_cfg.lora.enabled is {model_cfg.lora.enabled} but the model "
                         f"{'has' if has_lora_adapters(model) else 'has no'} LoRA adapters "
                         "(a merged model is saved with lora.enabled = False)")
    for name, value in (("norm_stats", norm_stats), ("extra", extra or {})):
        if not isinstance(value, dict):
            raise ValueError(f"{name}: expected a dict, got {type(value).__name__}")
    description = {
        "format_version": FORMAT_VERSION,
        "model": model_cfg.to_dict(),
        "features": feature_cfg.to_dict(),
        "labels": list(labels),
        "norm_stats": norm_stats,
        "extra": extra or {},
        "architecture": model.architecture(),
    }
    try:
        text = json.dumps(description, indent=2, default=_as_json)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"norm_stats/extra: not JSON-serialisable: {exc}") from None
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).unlink(missing_ok=True)   # the folder is incomplete until config.json is back
    model.save_weights(str(folder / WEIGHTS_FILE))
    partial = folder / f"{CONFIG_FILE}.partial"
    partial.write_text(text)
    partial.replace(folder / CONFIG_FILE)
    return folder


def load_checkpoint(folder: str | Path, *, device: str | torch.device = "cpu") -> LoadedCheckpoint:
    """Rebuild the model saved in `folder` (eval mode, on `device`) with its configs and stats.

    The model is ready for inference, or for further training after `.train()`: parameters
    that trained before (all, or LoRA adapters + head) still require grad.
    """
    folder = Path(folder)
    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"device: {device!r} is not a torch device ({exc})") from None
    description, model_cfg, feature_cfg = _read_description(folder)
    try:
        model = build_model(model_cfg, feature_cfg=feature_cfg, labels=description["labels"],
                            architecture=description["architecture"])
    except ValueError as exc:
        raise ValueError(f"checkpoint {folder}: cannot rebuild the model: {exc}") from None
    weights = _weights_path(folder)
    try:
        model.load_weights(str(weights))
    except (SafetensorError, RuntimeError, OSError) as exc:
        raise ValueError(f"checkpoint {folder}: {WEIGHTS_FILE} does not fit the described model "
                         f"or is corrupt: {exc}") from None
    model.to(target).eval()
    return LoadedCheckpoint(folder=folder, model=model, model_cfg=model_cfg, feature_cfg=feature_cfg,
                            labels=list(description["labels"]), norm_stats=description["norm_stats"],
                            extra=description["extra"])


def update_extra(folder: str | Path, **values: Any) -> None:
    """Add entries to a finished checkpoint's extra (what is learnt after saving, e.g. a
    threshold chosen on val), replacing config.json atomically."""
    folder = Path(folder)
    description, _, _ = _read_description(folder)
    description["extra"].update(values)
    partial = folder / f"{CONFIG_FILE}.partial"
    partial.write_text(json.dumps(description, indent=2, default=_as_json))
    partial.replace(folder / CONFIG_FILE)


def read_configs(folder: str | Path) -> tuple[ModelConfig, FeatureConfig]:
    """The model and feature configs a checkpoint was trained with, read from its config.json
    alone (no weights), so a fine-tune can be checked against it before anything runs."""
    _, model_cfg, feature_cfg = _read_description(Path(folder))
    return model_cfg, feature_cfg


def init_from_checkpoint(model: AudioClassifier, folder: str | Path) -> WeightTransfer:
    """Copy same-named, same-shaped weights from a checkpoint into a freshly built `model`.

    For a different label list (any change, even order) the head is left freshly
    initialised: old output rows mean other classes. Raises ValueError when nothing matches
    (e.g. a cnn checkpoint offered to an AST).
    """
    folder = Path(folder)
    description, saved_cfg, _ = _read_description(folder)
    try:
        saved = load_file(str(_weights_path(folder)))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"checkpoint {folder}: {WEIGHTS_FILE} is corrupt: {exc}") from None
    same_labels = description["labels"] == model.labels
    current = model.state_dict()
    copy = {name: tensor for name, tensor in saved.items()
            if name in current and tensor.shape == current[name].shape
            and (same_labels or not model.is_head_parameter(name))}
    if not copy:
        raise ValueError(f"checkpoint {folder}: none of its weights fit this {type(model).__name__} "
                         f"(it holds a {saved_cfg.name!r} model)")
    model.load_state_dict(copy, strict=False)
    return WeightTransfer(copied=sorted(copy), kept_fresh=sorted(set(current) - set(copy)),
                          unused=sorted(set(saved) - set(copy)))


def _read_description(folder: Path) -> tuple[dict[str, Any], ModelConfig, FeatureConfig]:
    if not folder.is_dir():
        raise ValueError(f"checkpoint {folder}: no such folder")
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise ValueError(f"checkpoint {folder}: no {CONFIG_FILE} (not a checkpoint, or saving never finished)")
    try:
        description = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"checkpoint {folder}: {CONFIG_FILE} is not valid JSON: {exc}") from None
    if not isinstance(description, dict):
        raise ValueError(f"checkpoint {folder}: {CONFIG_FILE} must hold a mapping, got {type(description).__name__}")
    missing = [key for key in _REQUIRED_KEYS if key not in description]
    if missing:
        raise ValueError(f"checkpoint {folder}: {CONFIG_FILE} lacks {', '.join(missing)}")
    if description["format_version"] != FORMAT_VERSION:
        raise ValueError(f"checkpoint {folder}: format_version {description['format_version']!r} "
                         f"is not the supported version {FORMAT_VERSION}")
    labels = description["labels"]
    if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
        raise ValueError(f"checkpoint {folder}: labels must be a list of strings, got {labels!r}")
    for key in ("norm_stats", "extra", "architecture"):
        if not isinstance(description[key], dict):
            raise ValueError(f"checkpoint {folder}: {key} must be a mapping, got {type(description[key]).__name__}")
    try:
        model_cfg = ModelConfig.from_dict(description["model"], prefix="model.")
        feature_cfg = FeatureConfig.from_dict(description["features"], prefix="features.")
    except ConfigError as exc:
        raise ValueError(f"checkpoint {folder}: {exc}") from None
    return description, model_cfg, feature_cfg


def _weights_path(folder: Path) -> Path:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise ValueError(f"checkpoint {folder}: no {WEIGHTS_FILE}")
    return path


def _as_json(value: Any) -> Any:
    """json.dumps fallback: arrays and tensors become lists, numpy scalars plain numbers."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")
