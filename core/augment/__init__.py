"""Augmentations: waveform, noise-bank and spectrogram transforms, declared in presets.

A preset lists `{name, p, params}` entries (core.config.AugmentSpec); `build_pipeline` turns
them into registered transforms that draw their parameters from a seeded generator in one
step and apply them deterministically in another, so what was applied can be recorded
(augmented copies), previewed (`preview`) and replayed. Batch-level MixUp lives in
core.mixup. Training uses them through `AugmentFeed` (on the fly, or rendered offline).

Registered names: time_stretch, pitch_shift, gain, gain_dips, band_stop, gaussian_snr,
background_noise (waveform) and spec_augment (spectrogram); `TRANSFORMS` holds them all.
"""
from core.augment.base import TRANSFORMS, Transform, register_transform
from core.augment.noise_bank import CATEGORIES, NoiseBank
from core.augment.pipeline import Pipeline, all_specs, build_pipeline, merge_specs, needs_noise_bank

# Importing each transform module registers it (explicit, so the registry is never partial).
from core.augment import (background_noise, band_stop, gain, gain_dips, gaussian_snr,  # noqa: E402,F401  isort: skip
                          pitch_shift, spec_augment, time_stretch)
from core.augment.feed import AugmentDecision, AugmentFeed  # noqa: E402
from core.augment.preview import Preview, preview  # noqa: E402

__all__ = ["CATEGORIES", "TRANSFORMS", "AugmentDecision", "AugmentFeed", "NoiseBank", "Pipeline", "Preview", "Transform",
           "all_specs", "build_pipeline", "merge_specs", "needs_noise_bank", "preview", "register_transform"]
