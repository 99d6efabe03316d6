"""Class weights (C1) and the training loss: weighted cross-entropy or focal loss (D2); the
supervised contrastive term of the optional heads (A10).

Both losses accept integer class targets (B,) or soft targets (B, C) from MixUp, so the
training loop never branches on whether a batch was mixed. Focal loss is cross-entropy
with each class term scaled by (1 - p_c)^gamma, so one module with gamma = 0 is exactly
cross-entropy; the registry below only decides gamma.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.config import TrainConfig

__all__ = ["ClassificationLoss", "available_losses", "available_weightings", "build_loss", "class_weights",
           "contrast_matrix", "supervised_contrastive_loss"]

# A soft-target row may drift this far from summing to 1 (float32 MixUp arithmetic).
TARGET_SUM_TOLERANCE = 1e-4


# --- class weights --------------------------------------------------------------------------

def _balanced(counts: np.ndarray) -> np.ndarray:
    # N / (C * n_c); the constant N / C vanishes in the normalisation.
    return counts.sum() / (len(counts) * counts)


def _sqrt(counts: np.ndarray) -> np.ndarray:
    return 1.0 / np.sqrt(counts)


def _effective(counts: np.ndarray, beta: float) -> np.ndarray:
    # Cui et al. 2019: the "effective number" of n samples is (1 - beta^n) / (1 - beta).
    return (1.0 - beta) / (1.0 - np.power(beta, counts))


# Raw weights for the classes that have clips (counts > 0); "none" needs no formula.
_WEIGHTINGS: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "balanced": lambda counts, beta: _balanced(counts),
    "effective": _effective,
    "sqrt": lambda counts, beta: _sqrt(counts),
}


def available_weightings() -> list[str]:
    return ["none", *_WEIGHTINGS]


def class_weights(counts: Sequence[int], *, method: str, beta: float = 0.999) -> torch.Tensor:
    """Per-class loss weights, float32 (C,), from training clip counts per class (C1).

    balanced: N / (C * n_c); effective: (1 - beta) / (1 - beta^n_c) (Cui et al. 2019; beta in
    [0, 1), larger beta -> closer to balanced, 0 -> no weighting); sqrt: 1 / sqrt(n_c); none:
    all ones. Each is rescaled so the weights average to 1 over the classes that have clips,
    which keeps the loss on the same scale as the unweighted one. A class with 0 clips gets
    weight 0 (it has nothing to weight), except under "none", where every weight is 1.
    """
    if method not in available_weightings():
        raise ValueError(f"method: {method!r} is not a class weighting; valid: {', '.join(available_weightings())}")
    counts_array = _check_counts(counts)
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta: {beta!r} is out of range; allowed: 0 <= beta < 1")
    if method == "none":
        return torch.ones(len(counts_array), dtype=torch.float32)
    present = counts_array > 0
    weights = np.zeros(len(counts_array))
    weights[present] = _WEIGHTINGS[method](counts_array[present], beta)
    weights[present] /= weights[present].mean()
    return torch.tensor(weights, dtype=torch.float32)


def _check_counts(counts: Sequence[int]) -> np.ndarray:
    array = np.asarray(counts)
    if array.ndim != 1 or len(array) == 0 or not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"counts: expected a non-empty 1-D sequence of integers, got {counts!r}")
    if (array < 0).any() or not (array > 0).any():
        raise ValueError(f"counts: {array.tolist()} must be >= 0 with at least one class above 0")
    return array.astype(np.float64)


# --- the loss module ------------------------------------------------------------------------

class ClassificationLoss(nn.Module):
    """Class-weighted cross-entropy (gamma = 0) or focal loss (gamma > 0) with label smoothing.

    forward(logits (B, C), targets) -> scalar float32. targets: int class ids (B,) in [0, C)
    or soft targets float (B, C), rows summing to 1. Hard targets are turned into one-hot
    rows, so both kinds go through one formula. With t the target rows, q = (1 - eps) * t +
    eps / C the smoothed rows, w the class weights and p = softmax(logits):

        loss = sum_i sum_c w_c * q_ic * (1 - p_ic)^gamma * -log p_ic  /  sum_i sum_c w_c * t_ic

    For hard targets and gamma = 0 this is exactly F.cross_entropy(weight=w,
    label_smoothing=eps) with its weighted mean (divided by the summed weights of the target
    classes). Soft targets divide by each row's expected class weight, not by B as torch
    does for probability targets, so a one-hot soft row gives the same loss as its hard
    label and a MixUp row weighs lambda * w_a + (1 - lambda) * w_b. A batch whose targets all
    have weight 0 divides by 0 and gives nan, as torch does.
    """

    def __init__(self, *, weight: torch.Tensor, gamma: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__()
        if weight.ndim != 1 or len(weight) == 0 or (weight < 0).any():
            raise ValueError(f"weight: expected a non-empty 1-D tensor of weights >= 0, got {weight!r}")
        if gamma < 0:
            raise ValueError(f"gamma: {gamma!r} is out of range; allowed: gamma >= 0")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing: {label_smoothing!r} is out of range; allowed: [0, 1)")
        self.register_buffer("weight", weight.detach().to(torch.float32))
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)

    @property
    def num_classes(self) -> int:
        return len(self.weight)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        target_rows = self._target_rows(logits, targets)
        log_p = F.log_softmax(logits.float(), dim=1)
        per_class = -log_p
        if self.gamma > 0:
            per_class = per_class * (1.0 - log_p.exp()).pow(self.gamma)
        smoothed = (1.0 - self.label_smoothing) * target_rows + self.label_smoothing / self.num_classes
        numerator = (smoothed * self.weight * per_class).sum()
        return numerator / (target_rows @ self.weight).sum()

    def _target_rows(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Validate logits and targets; return float32 target rows (B, C)."""
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits: expected shape (B, {self.num_classes}), got {tuple(logits.shape)}")
        batch = logits.shape[0]
        if not targets.is_floating_point():
            if targets.shape != (batch,):
                raise ValueError(f"targets: integer class ids must have shape ({batch},), got {tuple(targets.shape)}")
            if batch and (targets.min() < 0 or targets.max() >= self.num_classes):
                raise ValueError(f"targets: class ids must lie in [0, {self.num_classes}), "
                                 f"got min {int(targets.min())} and max {int(targets.max())}")
            return F.one_hot(targets.long(), self.num_classes).float()
        if targets.shape != logits.shape:
            raise ValueError(f"targets: soft targets must have the logits' shape {tuple(logits.shape)}, "
                             f"got {tuple(targets.shape)}")
        rows = targets.float()
        if batch and ((rows < 0).any() or ((rows.sum(dim=1) - 1).abs() > TARGET_SUM_TOLERANCE).any()):
            raise ValueError("targets: soft target rows must be >= 0 and sum to 1")
        return rows


_LOSSES: dict[str, Callable[[TrainConfig, torch.Tensor], ClassificationLoss]] = {
    "ce": lambda cfg, weight: ClassificationLoss(weight=weight, label_smoothing=cfg.label_smoothing),
    "focal": lambda cfg, weight: ClassificationLoss(weight=weight, gamma=cfg.focal_gamma,
                                                    label_smoothing=cfg.label_smoothing),
}


def available_losses() -> list[str]:
    return list(_LOSSES)


def build_loss(train_cfg: TrainConfig, *, class_counts: Sequence[int]) -> ClassificationLoss:
    """The loss named by train_cfg.loss, weighted by train_cfg.class_weights over the
    training clip counts per class (class_counts[c] for class id c)."""
    if train_cfg.loss not in _LOSSES:
        raise ValueError(f"train.loss: {train_cfg.loss!r} is not a loss; valid: {', '.join(_LOSSES)}")
    weight = class_weights(class_counts, method=train_cfg.class_weights, beta=train_cfg.effective_beta)
    return _LOSSES[train_cfg.loss](train_cfg, weight)


# --- supervised contrastive term (A10) ------------------------------------------------------

def contrast_matrix(labels: Sequence[str], pairs: Sequence[Sequence[str]]) -> torch.Tensor:
    """Which classes contrast with which: bool (C, C), symmetric, True where class i and class j
    are a named pair; empty pairs = every class with every other. The diagonal is False (a class
    is its own positives, not a contrast). ValueError naming a class that is not in labels."""
    index = {label: i for i, label in enumerate(labels)}
    if not pairs:
        return ~torch.eye(len(labels), dtype=torch.bool)
    matrix = torch.zeros(len(labels), len(labels), dtype=torch.bool)
    for pair in pairs:
        unknown = [name for name in pair if name not in index]
        if unknown:
            raise ValueError(f"heads.contrastive.pairs: class {unknown[0]!r} is not in the run's classes "
                             f"({', '.join(labels)})")
        a, b = index[pair[0]], index[pair[1]]
        matrix[a, b] = matrix[b, a] = True
    return matrix


def supervised_contrastive_loss(embeddings: torch.Tensor, targets: torch.Tensor, *, temperature: float,
                                contrasts: torch.Tensor) -> torch.Tensor:
    """SupCon, L_out of Khosla et al. 2020 ("Supervised Contrastive Learning", eq. 2), restricted
    to the classes that contrast. With z = embeddings L2-normalised, s_ia = z_i . z_a / temperature,
    A(i) the other samples of i's class or of a class contrasting with it, P(i) those of i's class:

        loss = mean over anchors i of  -1/|P(i)| sum_{p in P(i)} log( exp(s_ip) / sum_{a in A(i)} exp(s_ia) )

    Anchors are the samples of a class that contrasts with some class and that have at least one
    positive in the batch; 0 (still differentiable) when the batch holds none.
    embeddings float (B, D); targets int class ids (B,); contrasts bool (C, C) (contrast_matrix).
    """
    if embeddings.ndim != 2 or targets.shape != embeddings.shape[:1]:
        raise ValueError(f"embeddings (B, D) and targets (B,) expected, got {tuple(embeddings.shape)} and "
                         f"{tuple(targets.shape)}")
    z = F.normalize(embeddings.float(), dim=1)
    similarity = z @ z.T / temperature
    targets = targets.long()
    same = targets[:, None] == targets[None, :]
    others = ~torch.eye(len(targets), dtype=torch.bool, device=z.device)
    contrasts = contrasts.to(z.device)
    in_contrast = (same | contrasts[targets][:, targets]) & others        # A(i)
    positives = same & others                                            # P(i)
    anchors = contrasts[targets].any(dim=1) & positives.any(dim=1)
    if not anchors.any():
        return similarity.sum() * 0.0
    similarity, in_contrast, positives = similarity[anchors], in_contrast[anchors], positives[anchors]
    log_denominator = torch.logsumexp(similarity.masked_fill(~in_contrast, -torch.inf), dim=1, keepdim=True)
    log_prob = (similarity - log_denominator).masked_fill(~positives, 0.0)
    return (-log_prob.sum(dim=1) / positives.sum(dim=1)).mean()
