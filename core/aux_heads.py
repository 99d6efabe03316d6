"""The optional auxiliary heads of plan A (A10), trained beside the classifier on its embedding.

- contrastive: a projection MLP (embedding -> 128, as in Khosla et al. 2020) whose normalised
  output takes the supervised contrastive term (core.losses.supervised_contrastive_loss),
  restricted to the preset's class pairs (emergency_sirens vs alert_sounds in the siren presets);
- envelope: a linear read-out of the clip's amplitude-envelope modulation rate in log Hz
  (core/envelope.py), with a Huber loss (delta 1 log unit: a rate measured an octave or more off
  counts linearly, not squared); clips without a measurable rate are left out.

They live outside the model: a checkpoint holds the classifier alone, so old checkpoints load as
before and inference never builds these. The resume point keeps them (Accelerate saves every
prepared module).

MixUp: a batch MixUp blends trains the classifier only. A blend of two clips' log-mels has no
single class to contrast and no one envelope rate (the rate of a mix is not the blend of the
rates), so the auxiliary terms come from the batches MixUp leaves alone (1 - mixup_p of them);
the config refuses mixup_p = 1 with a head on.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from core.config import HeadsConfig
from core.losses import contrast_matrix, supervised_contrastive_loss

__all__ = ["AuxiliaryHeads", "PROJECTION_DIM", "TERMS", "describe_terms"]

PROJECTION_DIM = 128
TERMS = {"contrastive": "train_contrastive_loss", "envelope": "train_envelope_loss"}  # term -> history key


def describe_terms(row: dict) -> str:
    """The auxiliary terms of an epoch row for a log line ("  contrastive loss 0.7579"), or ""."""
    return "".join(f"  {name} loss {row[key]:.4f}" for name, key in TERMS.items() if row.get(key) is not None)


class AuxiliaryHeads(nn.Module):
    """The enabled heads for an embedding of embedding_dim and these class labels (the run's
    order). ValueError naming a contrastive class the labels lack."""

    def __init__(self, *, embedding_dim: int, heads: HeadsConfig, labels: Sequence[str]) -> None:
        super().__init__()
        self.heads = heads
        self.projection = None
        self.envelope = None
        if heads.contrastive.enabled:
            self.projection = nn.Sequential(nn.Linear(embedding_dim, embedding_dim), nn.ReLU(inplace=True),
                                            nn.Linear(embedding_dim, PROJECTION_DIM))
            self.register_buffer("contrasts", contrast_matrix(list(labels), heads.contrastive.pairs))
        if heads.envelope.enabled:
            self.envelope = nn.Linear(embedding_dim, 1)

    def start_envelope_at(self, log_rate: float) -> None:
        """Start the envelope read-out at the training clips' mean log rate, so its first steps
        learn differences between clips, not the offset."""
        if self.envelope is not None:
            nn.init.constant_(self.envelope.bias, log_rate)

    def forward(self, embedding: torch.Tensor, targets: torch.Tensor, log_rates: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """The unweighted term of each enabled head (TERMS order) on one unmixed batch.
        embedding float (B, D); targets int class ids (B,); log_rates float (B,), nan = no rate."""
        terms: dict[str, torch.Tensor] = {}
        if self.projection is not None:
            terms["contrastive"] = supervised_contrastive_loss(
                self.projection(embedding), targets, temperature=self.heads.contrastive.temperature,
                contrasts=self.contrasts)
        if self.envelope is not None:
            predicted = self.envelope(embedding).squeeze(1).float()
            known = ~torch.isnan(log_rates)
            terms["envelope"] = (F.huber_loss(predicted[known], log_rates[known], delta=1.0) if known.any()
                                 else predicted.sum() * 0.0)
        return terms

    def weighted(self, terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """The terms summed with the preset's weights."""
        return sum(getattr(self.heads, name).weight * value for name, value in terms.items())
