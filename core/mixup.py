"""MixUp on a batch (D3): blend each clip's features and labels with another clip's.

One lambda per batch, as in the MixUp paper's reference code; pairs come from a random
permutation of the batch, so a clip may be paired with itself (it then stays unchanged).
The soft targets always come back, mixed or not, so the loss sees one kind of target.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["mixup"]


def mixup(features: torch.Tensor, targets: torch.Tensor, *, num_classes: int, alpha: float, p: float,
          generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, bool]:
    """(mixed features, soft targets float32 (B, C), applied) for features float (B, ...) and
    int class ids targets (B,) in [0, num_classes).

    With probability p (per batch), lambda ~ Beta(alpha, alpha) and a permutation j of the
    batch give features lambda * x_i + (1 - lambda) * x_j and targets lambda * onehot(y_i) +
    (1 - lambda) * onehot(y_j); rows sum to 1. Otherwise features come back unchanged with
    one-hot targets. alpha = 0 disables MixUp, as in ExperimentConfig.mixup_alpha. All draws
    come from `generator` (on the generator's device), so a seeded generator repeats them.
    """
    if not features.is_floating_point() or features.ndim < 1:
        raise ValueError(f"features: expected a floating tensor (B, ...), got {features.dtype} {tuple(features.shape)}")
    if targets.is_floating_point() or targets.shape != features.shape[:1]:
        raise ValueError(f"targets: expected int class ids of shape ({features.shape[0]},), "
                         f"got {targets.dtype} {tuple(targets.shape)}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes: {num_classes!r} must be an integer >= 1")
    if len(targets) and (targets.min() < 0 or targets.max() >= num_classes):
        raise ValueError(f"targets: class ids must lie in [0, {num_classes}), "
                         f"got min {int(targets.min())} and max {int(targets.max())}")
    if not 0.0 <= alpha < float("inf"):
        raise ValueError(f"alpha: {alpha!r} is out of range; allowed: a finite number >= 0 (0 disables)")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"p: {p!r} is out of range; allowed: [0, 1]")
    one_hot = F.one_hot(targets.long(), num_classes).float()
    applied = alpha > 0 and torch.rand((), generator=generator, device=generator.device).item() < p
    if not applied:
        return features, one_hot, False
    # torch's Beta sampler takes no generator; seed numpy's from this one to stay reproducible.
    beta_seed = int(torch.randint(2**62, (), generator=generator, device=generator.device))
    lam = float(np.random.default_rng(beta_seed).beta(alpha, alpha))
    pairs = torch.randperm(len(targets), generator=generator, device=generator.device).to(features.device)
    mixed = lam * features + (1.0 - lam) * features[pairs]
    return mixed, lam * one_hot + (1.0 - lam) * one_hot[pairs.to(one_hot.device)], True
