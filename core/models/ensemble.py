"""An ensemble of finished models (plan D5): the weighted mean of their calibrated probabilities.

The members may read different features (a CNN on 64 log-mel bands at 16 kHz beside an AST
on 128 bands), so the ensemble reads waveforms (FeatureConfig.front_end "waveform") at the
highest member rate and length, and makes each member's input itself: resampled, cropped or
padded, turned into its log-mels, rounded to float16 as the feature cache stores them, and
normalised with the member's own stats. Each member's probabilities are
softmax(logits / T_member), T fitted on val (core.evaluate.fit_temperature) so that an
over-confident member cannot outvote a calibrated one.

A checkpoint of the ensemble holds every member's weights and description, so it loads and
predicts on its own even after the member runs are deleted. It is assembled from finished
runs (pipelines/ensemble.py), never built from a preset or trained by gradient.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from core.audio import fit_length, resample
from core.config import FeatureConfig, ModelConfig
from core.models import AudioClassifier, build_model, register_model

ENSEMBLE = "ensemble"


@dataclasses.dataclass
class Member:
    """One member: where it came from, its checkpoint description, its temperature and weight."""
    run_id: str
    description: dict[str, Any]  # the member checkpoint's config.json: model, features, labels, norm_stats, architecture
    temperature: float = 1.0
    weight: float = 1.0

    @property
    def model_cfg(self) -> ModelConfig:
        return ModelConfig.from_dict(self.description["model"], prefix="model.")

    @property
    def feature_cfg(self) -> FeatureConfig:
        return FeatureConfig.from_dict(self.description["features"], prefix="features.")


def ensemble_features(members: list[Member]) -> FeatureConfig:
    """What the ensemble reads: waveforms at the highest member rate, as long as the longest member
    input, cropped the members' common way (a random crop becomes the centre: scores must not
    depend on a draw). Short clips are padded with zeros, which each member trims off again before
    cropping or padding the clip its own way (EnsembleClassifier._member_waves)."""
    configs = [m.feature_cfg for m in members]
    crops = {"center" if c.crop == "random" else c.crop for c in configs}
    return FeatureConfig(sample_rate_hz=max(c.sample_rate_hz for c in configs),
                         max_length_s=max(c.concrete("max_length_s") for c in configs),
                         crop=crops.pop() if len(crops) == 1 else "center", pad="zeros",
                         front_end="waveform", normalize=False)


class EnsembleClassifier(AudioClassifier):
    """Waveforms (B, 1, T) -> log of the weighted mean of the members' calibrated probabilities,
    so softmax(output) is that mean and every caller that softmaxes logits gets it."""

    head_name = "no_head"  # nothing here trains

    def __init__(self, *, labels: list[str], members: list[Member], models: list[AudioClassifier],
                 feature_cfg: FeatureConfig) -> None:
        super().__init__(labels=labels)
        from core.features import feature_transform

        self.members = list(members)
        self.models = nn.ModuleList(models)
        self.sample_rate_hz = feature_cfg.sample_rate_hz
        # Front ends hold no weights worth saving (their filterbanks are rebuilt from the configs):
        # a plain list keeps them out of the state dict.
        self._front_ends = [feature_transform(m.feature_cfg) for m in members]
        self._columns = [[m.description["labels"].index(label) for label in labels] for m in members]

    def architecture(self) -> dict[str, Any]:
        return {"members": [dataclasses.asdict(m) for m in self.members]}

    def member_probabilities(self, waves: torch.Tensor) -> list[torch.Tensor]:
        """Each member's probabilities (B, C) in the ensemble's label order: softmax(logits / T) with
        its temperature (1 until the ensemble is calibrated)."""
        waves = waves[:, 0] if waves.dim() == 3 else waves
        outputs = []
        for member, model, front_end, columns in zip(self.members, self.models, self._front_ends, self._columns):
            features = front_end(self._member_waves(waves, member.feature_cfg)).half().float()
            stats = member.description["norm_stats"]
            if stats:
                from core.features import normalize
                features = normalize(features, stats)
            logits = model(features.to(waves.device)).float()
            outputs.append(torch.softmax(logits / member.temperature, dim=-1)[:, columns])
        return outputs

    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        weights = torch.tensor([m.weight for m in self.members], dtype=torch.float32)
        mean = sum(w * p for w, p in zip(weights / weights.sum(), self.member_probabilities(waves)))
        return torch.log(mean.clamp_min(1e-12))

    def _member_waves(self, waves: torch.Tensor, cfg: FeatureConfig) -> torch.Tensor:
        """The batch as this member's feature cache would have cut it (random crops become the centre).

        The ensemble's zero padding is trimmed first, so a clip shorter than the ensemble's length
        is cropped or padded by the member as its own cache would; a clip ending in digital silence
        loses that silence too, which moves a centre crop by half its length at most."""
        crop = "center" if cfg.crop == "random" else cfg.crop
        rows = [fit_length(resample(_without_end_padding(wave), orig_hz=self.sample_rate_hz, target_hz=cfg.sample_rate_hz),
                           cfg.n_samples, crop=crop, pad=cfg.pad)
                for wave in waves.detach().cpu().numpy()]
        return torch.from_numpy(np.stack(rows)).float()


def _without_end_padding(wave: np.ndarray) -> np.ndarray:
    """The wave up to its last non-zero sample (at least one sample: an all-zero clip stays silent)."""
    nonzero = np.flatnonzero(wave)
    return wave[:nonzero[-1] + 1] if len(nonzero) else wave[:1]


@register_model(ENSEMBLE)
def build_ensemble(model_cfg: ModelConfig, *, feature_cfg: FeatureConfig, labels: list[str],
                   architecture: dict[str, Any]) -> EnsembleClassifier:
    """Rebuild a saved ensemble's shape from its architecture (the members' descriptions)."""
    if not architecture.get("members"):
        raise ValueError("model.name ensemble is assembled from finished runs ('earmark ensemble --members A,B' or "
                         "the Runs tab), not built from a preset")
    members = [Member(**m) for m in architecture["members"]]
    return EnsembleClassifier(labels=labels, members=members, models=[member_model(m) for m in members],
                              feature_cfg=feature_cfg)


def member_model(member: Member) -> AudioClassifier:
    """A member's network with fresh weights, in its saved shape (the checkpoint fills them in)."""
    description = member.description
    return build_model(member.model_cfg, feature_cfg=member.feature_cfg, labels=description["labels"],
                       architecture=description["architecture"]).eval()
