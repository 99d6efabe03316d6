"""Audio Spectrogram Transformer (D2) from transformers, built small from config or loaded pretrained.

Sources, in order of precedence:
- a checkpoint's saved `architecture` (the exact transformers config; weights come after),
- `ModelConfig.pretrained`: a local folder written by `save_pretrained`, or a hub id that
  must already be in the local Hugging Face cache when HF_HUB_OFFLINE is set,
- otherwise a from-scratch AST sized by ModelConfig.ast_* for the FeatureConfig's input.

A pretrained model always gets a fresh head for the task's labels. Its mel-bin count must
equal FeatureConfig.n_mels (the patch grid has no sensible way to resample frequency); a
different length in frames is accepted by bilinearly interpolating the time axis of the
position embeddings, as the AST paper does when moving between clip lengths.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from core.config import FeatureConfig, ModelConfig
from core.models import AudioClassifier, register_model
from core.models.lora import apply_lora
from core.models.pretrained import hub_offline, pretrained_location, unreadable_source

if TYPE_CHECKING:
    from transformers import ASTConfig, ASTForAudioClassification

# transformers is imported where an AST is built, not here: it costs every training, audit and
# CLI child about 3 s to import, and most runs use the CNN.

AST_MODEL_TYPE = "audio-spectrogram-transformer"
# Side of the square patches cut from the spectrogram (as in the AST paper and its checkpoints).
PATCH_SIZE = 16


class ASTClassifier(AudioClassifier):
    """Features (B, n_mels, n_frames) -> logits (B, len(labels)) through a transformers AST.

    `network` is an ASTForAudioClassification, or the peft model wrapping it once LoRA
    adapters are applied. Head dropout sits between the pooled [CLS]/distillation embedding
    and the transformers head (which has none of its own).
    """

    head_name = "classifier"

    def __init__(self, network: nn.Module, *, labels: list[str], head_dropout: float) -> None:
        super().__init__(labels=labels)
        self.network = network
        self.dropout = nn.Dropout(head_dropout)

    @property
    def ast_config(self) -> ASTConfig:
        return self.network.config

    def architecture(self) -> dict[str, Any]:
        """The transformers config (label maps left out: checkpoints store the labels themselves)."""
        config = self.ast_config.to_dict()
        return {"ast_config": {k: v for k, v in config.items() if k not in ("id2label", "label2id")}}

    @property
    def embedding_dim(self) -> int:
        return self.ast_config.hidden_size

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        """The pooled [CLS]/distillation embedding (B, hidden_size)."""
        expected = (self.ast_config.num_mel_bins, self.ast_config.max_length)
        if features.ndim != 3 or tuple(features.shape[1:]) != expected:
            raise ValueError(f"features: expected shape (batch, {expected[0]}, {expected[1]}) "
                             f"(batch, n_mels, n_frames), got {tuple(features.shape)}")
        values = features.transpose(1, 2)  # transformers' AST reads (batch, time, mels)
        # Attribute access passes through a peft wrapper to the transformers model beneath it.
        return self.network.audio_spectrogram_transformer(values).pooler_output

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.network.classifier(self.dropout(embedding))

@register_model("ast")
def build_ast(model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str],
              architecture: dict[str, Any]) -> ASTClassifier:
    """An AST for these features and labels, with LoRA adapters when model_cfg.lora.enabled."""
    from transformers import ASTForAudioClassification

    _check_input_size(feature_cfg)
    if architecture:
        network = ASTForAudioClassification(_config_from_architecture(architecture, feature_cfg=feature_cfg,
                                                                      labels=labels))
    elif model_cfg.pretrained:
        network = _load_pretrained(model_cfg.pretrained, feature_cfg=feature_cfg, labels=labels)
    else:
        network = ASTForAudioClassification(_scratch_config(model_cfg, feature_cfg=feature_cfg, labels=labels))
    model = ASTClassifier(network, labels=labels, head_dropout=model_cfg.head_dropout)
    if model_cfg.lora.enabled:
        apply_lora(model, settings=model_cfg.lora)
    return model


def _check_input_size(feature_cfg: FeatureConfig) -> None:
    for name, size in (("n_mels", feature_cfg.n_mels), ("n_frames", feature_cfg.n_frames)):
        if size < PATCH_SIZE:
            raise ValueError(f"features.{name}: the AST cuts {PATCH_SIZE}x{PATCH_SIZE} patches, "
                             f"so it needs at least {PATCH_SIZE}, got {size}")


def _label_maps(labels: list[str]) -> dict[str, dict]:
    return {"id2label": dict(enumerate(labels)), "label2id": {label: i for i, label in enumerate(labels)}}


def _scratch_config(model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str]) -> ASTConfig:
    from transformers import ASTConfig

    hidden, heads, layers, stride = (model_cfg.ast_hidden_size, model_cfg.ast_heads, model_cfg.ast_layers,
                                     model_cfg.ast_patch_stride)
    for name, value in (("ast_hidden_size", hidden), ("ast_heads", heads), ("ast_layers", layers)):
        if value < 1:
            raise ValueError(f"model.{name}: must be >= 1, got {value}")
    if hidden % heads:
        raise ValueError(f"model.ast_hidden_size: {hidden} must be divisible by model.ast_heads ({heads})")
    if not 1 <= stride <= PATCH_SIZE:
        raise ValueError(f"model.ast_patch_stride: must be in [1, {PATCH_SIZE}] (the patch size), got {stride}")
    return ASTConfig(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                     intermediate_size=4 * hidden, patch_size=PATCH_SIZE, frequency_stride=stride,
                     time_stride=stride, num_mel_bins=feature_cfg.n_mels, max_length=feature_cfg.n_frames,
                     **_label_maps(labels))


def _config_from_architecture(architecture: dict[str, Any], *, feature_cfg: FeatureConfig,
                              labels: list[str]) -> ASTConfig:
    from huggingface_hub.errors import StrictDataclassError
    from transformers import ASTConfig

    if set(architecture) != {"ast_config"} or not isinstance(architecture["ast_config"], dict):
        raise ValueError(f"architecture: expected {{'ast_config': <mapping>}}, got keys {sorted(architecture)}")
    try:
        config = ASTConfig.from_dict({**architecture["ast_config"], **_label_maps(labels)})
    except (StrictDataclassError, TypeError, ValueError) as exc:
        raise ValueError(f"architecture: not a valid AST config: {exc}") from None
    saved = (config.num_mel_bins, config.max_length)
    if saved != (feature_cfg.n_mels, feature_cfg.n_frames):
        raise ValueError(f"architecture: AST was saved for (n_mels, n_frames) = {saved}, "
                         f"features give {(feature_cfg.n_mels, feature_cfg.n_frames)}")
    return config


def _load_pretrained(source: str, *, feature_cfg: FeatureConfig, labels: list[str]) -> ASTForAudioClassification:
    """Pretrained AST backbone from a local folder or a cached hub id, with a new head for `labels`."""
    from transformers import ASTForAudioClassification, AutoConfig

    location, is_local = pretrained_location(source)
    offline = hub_offline()
    try:
        config = AutoConfig.from_pretrained(location, local_files_only=offline)
    except (OSError, ValueError) as exc:
        raise unreadable_source(source, exc, is_local=is_local) from None
    if config.model_type != AST_MODEL_TYPE:
        raise ValueError(f"model.pretrained: {source!r} is a {config.model_type!r} model, "
                         f"not an Audio Spectrogram Transformer ({AST_MODEL_TYPE!r})")
    if config.num_mel_bins != feature_cfg.n_mels:
        raise ValueError(f"model.pretrained: {source!r} was trained on {config.num_mel_bins} mel bins but "
                         f"features.n_mels is {feature_cfg.n_mels}; set features.n_mels={config.num_mel_bins}")
    config.update(_label_maps(labels))
    try:
        network = ASTForAudioClassification.from_pretrained(location, config=config, local_files_only=offline,
                                                            ignore_mismatched_sizes=True)
    except (OSError, ValueError) as exc:
        raise ValueError(f"model.pretrained: could not read the weights of {source!r}: {exc}") from None
    _reset_head(network)
    if config.max_length != feature_cfg.n_frames:
        _resize_time_positions(network, n_frames=feature_cfg.n_frames)
    return network


def _reset_head(network: ASTForAudioClassification) -> None:
    """A new output layer even when the class count matches: old class meanings don't carry over."""
    dense = nn.Linear(network.config.hidden_size, network.config.num_labels)
    nn.init.normal_(dense.weight, std=network.config.initializer_range)  # small logits at the start
    nn.init.zeros_(dense.bias)
    network.classifier.dense = dense


def _resize_time_positions(network: ASTForAudioClassification, *, n_frames: int) -> None:
    """Interpolate the patch position embeddings to a new number of frames (frequency unchanged)."""
    embeddings = network.audio_spectrogram_transformer.embeddings
    old_freq, old_time = embeddings.get_shape(network.config)
    network.config.max_length = n_frames
    new_freq, new_time = embeddings.get_shape(network.config)
    positions = embeddings.position_embeddings.detach()       # (1, 2 + freq*time, hidden): [CLS], [DIST], patches
    special, grid = positions[:, :2], positions[:, 2:]
    grid = grid.reshape(1, old_freq, old_time, -1).permute(0, 3, 1, 2)  # patches are ordered frequency-major
    grid = F.interpolate(grid, size=(new_freq, new_time), mode="bilinear", align_corners=False)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_freq * new_time, -1)
    embeddings.position_embeddings = nn.Parameter(torch.cat([special, grid], dim=1))
