"""LoRA adapters (peft) on the attention of an AST classifier (B1, B3).

Only the adapters and the classification head train: the head is a peft "module to save", so
its trained copy travels with the adapters while the frozen backbone stays as loaded.
`merge_lora` folds the adapters into the base weights for export, leaving a plain AST whose
outputs equal the adapted model's.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from torch import nn

from core.config import LoraSettings

if TYPE_CHECKING:
    from core.models.ast import ASTClassifier

# The transformers submodule names of the AST: adapters go in the backbone, the head is saved whole.
BACKBONE_NAME = "audio_spectrogram_transformer"
HEAD_NAME = "classifier"


def lora_candidates(network: nn.Module) -> list[str]:
    """Short names of the Linear layers in the AST backbone that LoRA can target, sorted.

    transformers 5 names AST attention q_proj/k_proj/v_proj/o_proj (and the MLP fc1/fc2).
    """
    backbone = getattr(network, BACKBONE_NAME)
    return sorted({name.rsplit(".", 1)[-1] for name, module in backbone.named_modules()
                   if isinstance(module, nn.Linear)})


def apply_lora(model: ASTClassifier, *, settings: LoraSettings) -> ASTClassifier:
    """Wrap model.network with LoRA adapters in place; returns the same model.

    Every entry of settings.target_modules must name at least one backbone Linear layer, so
    a typo (e.g. the pre-transformers-5 name "query") fails instead of adapting nothing.
    """
    if has_lora_adapters(model):
        raise ValueError("model: already carries LoRA adapters")
    candidates = lora_candidates(model.network)
    targets = list(settings.target_modules)
    unmatched = [name for name in targets if name not in candidates]
    if not targets or unmatched:
        raise ValueError(f"model.lora.target_modules: {targets!r} "
                         f"{'is empty' if not targets else f'has no match for {unmatched!r}'}; "
                         f"AST layers that can be adapted: {', '.join(candidates)}")
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=settings.rank,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        # A regex over full names keeps adapters off the head even if it shares a short name.
        target_modules=rf".*{BACKBONE_NAME}\..*\.({'|'.join(targets)})",
        modules_to_save=[HEAD_NAME],
    )
    model.network = get_peft_model(model.network, config)
    return model


def has_lora_adapters(model: nn.Module) -> bool:
    """True when some layer of the model carries (unmerged) peft adapters."""
    if "peft" not in sys.modules:  # no adapter exists before peft is loaded; importing it costs ~3 s
        return False
    from peft.tuners.tuners_utils import BaseTunerLayer

    return any(isinstance(module, BaseTunerLayer) for module in model.modules())


def merge_lora(model: ASTClassifier) -> ASTClassifier:
    """Fold the adapters into the base weights in place (for export); returns the same model.

    Afterwards model.network is a plain transformers AST with the trained head, all of its
    parameters trainable again; save it with model_cfg.lora.enabled = False.
    """
    if not has_lora_adapters(model):
        raise ValueError("model: has no LoRA adapters to merge")
    model.network = model.network.merge_and_unload()
    model.network.requires_grad_(True)
    return model
