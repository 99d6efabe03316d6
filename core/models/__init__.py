"""The model zoo: architectures registered by name, built from typed configs.

Every registered model maps a batch of normalised log-mel features, float (B, n_mels,
n_frames) as `core.features` produces them for a `FeatureConfig`, to logits (B, n_classes),
and derives from `AudioClassifier`, so training code can ask any of them for AdamW
parameter groups and the labels its outputs stand for. The UI drop-down lists
`available_models()`.
"""
from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import nn

from core.config import FeatureConfig, ModelConfig
from core.registry import Registry

__all__ = ["AudioClassifier", "ModelBuilder", "available_models", "build_model", "count_parameters", "register_model"]


class AudioClassifier(nn.Module):
    """Base of every registered model: features (B, n_mels, n_frames) -> logits (B, len(labels)).

    A classifier with an embedding implements embed() and classify() and inherits forward; the
    audio LLM, which answers with a letter, has its own forward. Subclasses name the submodule that is their classification head (`head_name`); that
    name decides which parameters get the head learning rate.
    """

    head_name: str = "head"
    # True when the weights that matter are few adapters on a pretrained base that is read from its
    # source, never saved (the audio LLM): checkpoints and resume points keep the trainable tensors only.
    frozen_base: bool = False

    def __init__(self, *, labels: list[str]) -> None:
        super().__init__()
        self.labels = list(labels)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The embedding the classification head reads: float (B, embedding_dim). What the
        auxiliary heads (core/aux_heads.py) train on; models without one raise NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} has no embedding before its classifier")

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Logits (B, len(labels)) from embed()'s output: head dropout, then the head."""
        raise NotImplementedError(f"{type(self).__name__} has no embedding before its classifier")

    @property
    def embedding_dim(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} has no embedding before its classifier")

    def forward(self, features: torch.Tensor, *, return_embedding: bool = False) -> Any:
        """Logits (B, len(labels)); with return_embedding, (logits, embedding). Training asks for
        both through forward, not embed(), so a DDP wrapper sees one forward per step."""
        embedding = self.embed(features)
        logits = self.classify(embedding)
        return (logits, embedding) if return_embedding else logits

    def is_head_parameter(self, name: str) -> bool:
        """True for parameters (by state-dict name) that belong to the classification head."""
        return self.head_name in name.split(".")

    def architecture(self) -> dict[str, Any]:
        """What besides the ModelConfig is needed to rebuild this exact shape (for checkpoints).

        Empty when the ModelConfig says it all; a pretrained AST returns its transformers config.
        """
        return {}

    def trainable_names(self) -> set[str]:
        """State-dict names of the parameters that train."""
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def save_weights(self, path: str) -> None:
        """Write what a checkpoint keeps (safetensors at path): the whole state, or with a
        frozen_base only the trainable tensors (the base is read from its source)."""
        from safetensors.torch import save_file, save_model

        if not self.frozen_base:
            save_model(self, path)
            return
        save_file({name: p.detach().contiguous().cpu() for name, p in self.named_parameters() if p.requires_grad}, path)

    def load_weights(self, path: str) -> None:
        """Load what save_weights wrote; raises (RuntimeError, or safetensors' error) for a file
        that does not fit this model."""
        from safetensors.torch import load_file, load_model

        if not self.frozen_base:
            load_model(self, path, strict=True)
            return
        self.load_trainable(load_file(path), source=path)

    def load_trainable(self, tensors: dict[str, Any], *, source: str) -> None:
        """Load exactly the trainable tensors of a frozen-base model (checkpoint or resume point)."""
        trainable = self.trainable_names()
        unexpected, missing = sorted(set(tensors) - trainable), sorted(trainable - set(tensors))
        if unexpected or missing:
            raise RuntimeError(f"{source}: the saved tensors do not fit the model's trainable ones: {len(missing)} "
                               f"missing ({', '.join(missing[:3])}), {len(unexpected)} unexpected ({', '.join(unexpected[:3])})")
        self.load_state_dict(tensors, strict=False)

    def parameter_groups(self, *, backbone_lr: float, head_lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """AdamW parameter groups: discriminative LRs (D2) and no decay on biases or norm weights.

        Only parameters that require grad are listed (frozen LoRA bases are left out); empty
        groups are dropped. Each group carries a "name" ("backbone", "backbone_no_decay",
        "head", "head_no_decay") for logging.
        """
        for name, value in (("backbone_lr", backbone_lr), ("head_lr", head_lr)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        if not weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
        groups: dict[str, dict[str, Any]] = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            part = "head" if self.is_head_parameter(name) else "backbone"
            # Biases and 1-d norm scales only shift/scale activations: decaying them hurts.
            decays = param.ndim > 1 and not name.endswith("bias")
            key = part if decays else f"{part}_no_decay"
            group = groups.setdefault(key, {
                "name": key,
                "params": [],
                "lr": head_lr if part == "head" else backbone_lr,
                "weight_decay": weight_decay if decays else 0.0,
            })
            group["params"].append(param)
        return list(groups.values())


class ModelBuilder(Protocol):
    def __call__(self, model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str],
                 architecture: dict[str, Any]) -> AudioClassifier: ...


_MODELS: Registry[ModelBuilder] = Registry("model")
register_model = _MODELS.register  # decorator: @register_model("cnn")
# Built from finished runs (core/models/ensemble.py), never trained from a preset.
ASSEMBLED_MODELS = frozenset({"ensemble"})


def available_models() -> list[str]:
    """The registered models a preset can train, sorted (the UI drop-down)."""
    return [name for name in _MODELS.names() if name not in ASSEMBLED_MODELS]




def build_model(model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str],
                architecture: dict[str, Any] | None = None) -> AudioClassifier:
    """Build the model `model_cfg.name` for features of `feature_cfg` and these class labels.

    `architecture` is what a checkpoint saved from `model.architecture()`: when given, the
    exact saved shape is built with fresh weights and no pretrained source is read (the
    checkpoint's weights are loaded afterwards).
    """
    builder = _MODELS.get(model_cfg.name, parameter="model.name")
    if len(labels) < 2:
        raise ValueError(f"labels: need at least 2 classes, got {labels!r}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels: must be unique, got {labels!r}")
    if not all(isinstance(label, str) and label for label in labels):
        raise ValueError(f"labels: must be non-empty strings, got {labels!r}")
    return builder(model_cfg, feature_cfg=feature_cfg, labels=list(labels), architecture=architecture or {})


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of scalar parameters (only those requiring grad when trainable_only)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# Importing the built-in architectures registers them (explicit, so the registry is never empty).
from core.models import ast, cnn, ensemble, speech_llm  # noqa: E402,F401
