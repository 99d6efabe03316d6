"""A list of AugmentSpecs built into transforms, drawn and applied in two recorded steps.

`build_pipeline(specs, sample_rate_hz=...)` looks every name up in the registry and validates
its options. Waveform steps run first, in spec order, then (after the log-mel) the spectrogram
steps. Each step applies with its probability p, decided in the draw; the draw returns only
what will be applied, as records {"step": index in the spec list, "name", "params"}: the
record of an augmented copy, the preview's "applied" list, and replayable with apply_*.
"""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.augment.base import TRANSFORMS, Transform
from core.augment.noise_bank import NoiseBank
from core.config import AugmentSpec, ConfigError, ExperimentConfig

__all__ = ["Pipeline", "Step", "all_specs", "build_pipeline", "merge_specs", "needs_noise_bank"]

Applied = list[dict[str, Any]]
# Constructor arguments filled in by build_pipeline, never by a spec's params.
_RESOURCES = ("sample_rate_hz", "noise_bank")


@dataclasses.dataclass(frozen=True)
class Step:
    index: int
    spec: AugmentSpec
    transform: Transform

    @property
    def name(self) -> str:
        return self.spec.name


class Pipeline:
    """Built transforms in order; wave_steps act on mono float32 audio at sample_rate_hz,
    spec_steps on one clip's log-mel (n_mels, n_frames) torch tensor."""

    def __init__(self, steps: Sequence[Step], *, sample_rate_hz: int) -> None:
        self.steps = list(steps)
        self.sample_rate_hz = sample_rate_hz
        self.wave_steps = [s for s in self.steps if s.transform.domain == "wave"]
        self.spec_steps = [s for s in self.steps if s.transform.domain == "spec"]

    @property
    def specs(self) -> list[AugmentSpec]:
        return [s.spec for s in self.steps]

    def names(self, domain: str | None = None) -> set[str]:
        return {s.name for s in self.steps if domain is None or s.transform.domain == domain}

    def randomize_wave(self, rng: np.random.Generator, *, n_samples: int) -> Applied:
        """Records of the waveform steps to apply to a clip of n_samples samples."""
        applied: Applied = []
        for step in self.wave_steps:
            if rng.random() < step.spec.p:
                params = step.transform.randomize(rng, shape=(n_samples,))
                applied.append({"step": step.index, "name": step.name, "params": params})
                n_samples = step.transform.output_length(n_samples, params)
        return applied

    def apply_wave(self, wave: np.ndarray, applied: Applied) -> np.ndarray:
        """wave (samples,) float32 through the recorded waveform steps; deterministic."""
        out = np.asarray(wave, dtype=np.float32)
        for record in applied:
            out = self._step(record, "wave").transform.apply(out, record["params"])
        return out

    def time_scale(self, applied: Applied) -> float:
        """How much faster than the source a wave plays after the recorded waveform steps."""
        scale = 1.0
        for record in applied:
            scale *= self._step(record, "wave").transform.time_scale(record["params"])
        return scale

    def randomize_spec(self, rng: np.random.Generator, *, shape: tuple[int, int]) -> Applied:
        """Records of the spectrogram steps for a log-mel of shape (n_mels, n_frames)."""
        return [{"step": step.index, "name": step.name, "params": step.transform.randomize(rng, shape=shape)}
                for step in self.spec_steps if rng.random() < step.spec.p]

    def apply_spec(self, spec: torch.Tensor, applied: Applied) -> torch.Tensor:
        for record in applied:
            spec = self._step(record, "spec").transform.apply(spec, record["params"])
        return spec

    def augment_wave(self, wave: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Applied]:
        applied = self.randomize_wave(rng, n_samples=wave.shape[-1])
        return self.apply_wave(wave, applied), applied

    def augment_spec(self, spec: torch.Tensor, rng: np.random.Generator) -> tuple[torch.Tensor, Applied]:
        applied = self.randomize_spec(rng, shape=tuple(spec.shape[-2:]))
        return self.apply_spec(spec, applied), applied

    def _step(self, record: dict[str, Any], domain: str) -> Step:
        index = record.get("step")
        if not isinstance(index, int) or not 0 <= index < len(self.steps) or self.steps[index].name != record.get("name") \
                or self.steps[index].transform.domain != domain:
            raise ValueError(f"applied record {record!r:.120} does not name a {domain} step of this pipeline "
                             f"({', '.join(s.name for s in self.steps) or 'empty'})")
        return self.steps[index]


def build_pipeline(specs: Iterable[AugmentSpec | dict[str, Any]], *, sample_rate_hz: int,
                   noise_bank: NoiseBank | str | Path | None = None) -> Pipeline:
    """Transforms for specs (AugmentSpecs or {name, p, params} mappings), validated.

    noise_bank: a NoiseBank or a folder in MUSAN layout; read only when a background_noise
    step needs it. Raises ConfigError for an unknown name (listing the registered ones), an
    unknown or bad option (naming the transform and the option), or a missing noise bank.
    """
    parsed = [s if isinstance(s, AugmentSpec) else AugmentSpec.from_dict(s, prefix=f"augment[{i}].")
              for i, s in enumerate(specs)]
    steps = []
    for index, spec in enumerate(parsed):
        cls = TRANSFORMS.get(spec.name)
        if cls is None:
            raise ConfigError(f"augment: unknown augmentation {spec.name!r}; registered: {', '.join(sorted(TRANSFORMS))}")
        accepted = _accepted(cls)
        options = [p for p in accepted if p not in _RESOURCES]
        unknown = sorted(set(spec.params) - set(options))
        if unknown:
            raise ConfigError(f"augment {spec.name}: unknown option {', '.join(map(repr, unknown))}; "
                              f"allowed: {', '.join(options) or 'none'}")
        resources: dict[str, Any] = {"sample_rate_hz": sample_rate_hz}
        if "noise_bank" in accepted:
            if noise_bank is not None and not isinstance(noise_bank, NoiseBank):
                noise_bank = NoiseBank(noise_bank, sample_rate_hz=sample_rate_hz)
            resources["noise_bank"] = noise_bank
        steps.append(Step(index=index, spec=spec, transform=cls(**resources, **spec.params)))
    return Pipeline(steps, sample_rate_hz=sample_rate_hz)


def needs_noise_bank(specs: Iterable[AugmentSpec]) -> bool:
    """Whether any of specs names a transform that draws from the noise bank (background_noise)."""
    return any(spec.name in TRANSFORMS and "noise_bank" in _accepted(TRANSFORMS[spec.name]) for spec in specs)


def _accepted(cls: type[Transform]) -> list[str]:
    """The constructor's arguments: the resources build_pipeline fills and the spec's options."""
    return [p for p in inspect.signature(cls.__init__).parameters if p != "self"]


def merge_specs(lists: Iterable[Sequence[AugmentSpec]]) -> list[AugmentSpec]:
    """One list holding every augmentation named in any of lists, first-seen order.

    Offline copies are rendered once for a whole run, so each name must mean one setting:
    the same name with another p or params raises ConfigError.
    """
    merged: dict[str, AugmentSpec] = {}
    for specs in lists:
        for spec in specs:
            seen = merged.setdefault(spec.name, spec)
            if seen.to_dict() != spec.to_dict():
                raise ConfigError(f"augment {spec.name}: set differently in two lists ({seen.to_dict()} and "
                                  f"{spec.to_dict()}); offline copies need one setting per augmentation")
    return list(merged.values())


def all_specs(config: ExperimentConfig) -> list[AugmentSpec]:
    """Every augmentation a preset uses: the run's list and each curriculum stage's own."""
    return merge_specs([config.augment, *(s.augment for s in config.train.curriculum if s.augment is not None)])
