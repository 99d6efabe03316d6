"""Features that fit the clips: `auto` clip length and mel range, fixed from the training clips.

A preset may leave `features.max_length_s` and `features.f_max_hz` as "auto". A run fixes them
when it starts, from its frozen manifest (each clip's duration and source sample rate), saves
the concrete numbers in its config and checkpoint (so audits and inference reuse them) and logs
why. The same check warns about settings that do not fit the clips, explicit ones included:
inputs that are mostly padding, and audio sampled below the feature rate (resampling 8 kHz
audio to 16 kHz adds nothing above 4 kHz, so the mel bands up there stay empty).

    fit = fit_to_clips(config.features, manifest[manifest.split == "train"])
    fit.features   # a FeatureConfig without "auto"; fit.info and fit.warnings say why and what is off
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from core.config import AUTO, MAX_LENGTH_S, ConfigError, FeatureConfig

if TYPE_CHECKING:  # the training child reads manifests only and never imports the store
    from core.store import Store

__all__ = ["COMMON_RATE_SHARE", "LENGTH_PERCENTILE", "MAX_PADDED_SHARE", "FeatureFit", "fit_features", "fit_to_clips",
           "fit_to_session", "round_up_length"]

# auto length: this percentile of the training clips' durations. The longest 5% are cropped
# rather than every clip padded to the longest outlier.
LENGTH_PERCENTILE = 95.0
# Rounding steps (up to, step) in seconds: a few more clips rarely move the length, so the
# feature cache built for a session keeps serving it.
LENGTH_STEPS_S = ((2.0, 0.1), (10.0, 0.5), (math.inf, 1.0))
# Warn when more than this share of the average input is padding.
MAX_PADDED_SHARE = 0.5
# auto f_max: the Nyquist of the rate this share of the training clips reach; a few
# low-rate strays do not take the upper band from every other clip.
COMMON_RATE_SHARE = 0.95


@dataclasses.dataclass(frozen=True)
class FeatureFit:
    """features: the config with every 'auto' replaced by a number (explicit values untouched);
    info: what auto chose and why; warnings: settings that do not fit the clips."""
    features: FeatureConfig
    info: list[str]
    warnings: list[str]


def fit_features(feature_cfg: FeatureConfig, *, durations_s: Sequence[float | None] | np.ndarray,
                 sample_rates_hz: Sequence[float | None] | np.ndarray) -> FeatureFit:
    """Fix feature_cfg's 'auto' fields from the training clips and check the result against them.

    durations_s (seconds) and sample_rates_hz (source rates, Hz): one value per training clip,
    None or NaN where not known. Raises ConfigError when max_length_s is 'auto' and no
    duration is known.
    """
    durations = _known("durations_s", durations_s)
    rates = _known("sample_rates_hz", sample_rates_hz)
    info: list[str] = []
    warnings: list[str] = []
    if feature_cfg.max_length_s == AUTO:
        length, line = _auto_length(feature_cfg, durations)
        info.append(line)
    else:
        length = feature_cfg.max_length_s
        warnings += _padding_warnings(feature_cfg, durations)
    f_max, band_info, band_warnings = _band(feature_cfg, rates)
    return FeatureFit(features=dataclasses.replace(feature_cfg, max_length_s=length, f_max_hz=f_max),
                      info=info + band_info, warnings=warnings + band_warnings)


def fit_to_clips(feature_cfg: FeatureConfig, clips: pd.DataFrame) -> FeatureFit:
    """fit_features on a frame of training clips with duration_s and sample_rate_hz columns (a run's
    manifest or the store's clips table); a missing column counts as not known."""
    return fit_features(feature_cfg, durations_s=_column(clips, "duration_s"),
                        sample_rates_hz=_column(clips, "sample_rate_hz"))


def fit_to_session(feature_cfg: FeatureConfig, store: Store) -> FeatureFit:
    """fit_to_clips on a session's readable original training clips: what a run started now would
    fix, for work done outside a run (augmented copies, previews)."""
    clips = store.clips(status="ok")
    return fit_to_clips(feature_cfg, clips[(clips["split"] == "train") & clips["parent_clip_id"].isna()])


def round_up_length(seconds: float) -> float:
    """seconds rounded up to 0.1 s below 2 s, 0.5 s below 10 s, whole seconds above (see LENGTH_STEPS_S)."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"seconds: expected a positive number, got {seconds!r}")
    step = next(step for up_to, step in LENGTH_STEPS_S if seconds <= up_to)
    return round(math.ceil(seconds / step - 1e-9) * step, 6)  # float noise (0.30000000000000004 / 0.1) adds no step


def _column(clips: pd.DataFrame, name: str) -> np.ndarray:
    """A numeric column as float64 with NaN for missing values (all NaN when the column is absent)."""
    if name not in clips.columns:
        return np.full(len(clips), np.nan)
    return pd.to_numeric(clips[name], errors="coerce").astype("Float64").to_numpy(dtype=np.float64, na_value=np.nan)


def _known(name: str, values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """The finite, positive values as float64 (unknown ones dropped); ValueError for a non-1-D input."""
    array = np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)
    if array.ndim != 1:
        raise ValueError(f"{name}: expected one value per clip, got shape {array.shape}")
    return array[np.isfinite(array) & (array > 0)]


def _auto_length(feature_cfg: FeatureConfig, durations: np.ndarray) -> tuple[float, str]:
    """The auto length (seconds, at least one FFT window) and the line saying why."""
    if durations.size == 0:
        raise ConfigError("features.max_length_s is 'auto' but no training clip's duration is known; "
                          "set a number (seconds)")
    percentile = float(np.percentile(durations, LENGTH_PERCENTILE))
    window_s = feature_cfg.n_fft / feature_cfg.sample_rate_hz
    length = min(round_up_length(max(percentile, window_s)), MAX_LENGTH_S)
    why = (f"the {LENGTH_PERCENTILE:g}th percentile of the {durations.size} training clips' durations is "
           f"{percentile:.2f} s (mean {durations.mean():.2f} s, longest {durations.max():.2f} s)")
    if window_s > percentile:
        why += f", below one FFT window ({window_s:.3f} s)"
    cropped = float((durations > length).mean())
    return length, (f"features.max_length_s auto -> {length:g} s: {why}, rounded up; {cropped:.0%} of the clips "
                    f"are longer and cropped ({feature_cfg.crop})")


def _padding_warnings(feature_cfg: FeatureConfig, durations: np.ndarray) -> list[str]:
    """A warning when an explicit length makes more than MAX_PADDED_SHARE of the average input padding."""
    if durations.size == 0:
        return []
    length = feature_cfg.max_length_s
    padded = float(np.clip(length - durations, 0, None).mean() / length)
    if padded <= MAX_PADDED_SHARE:
        return []
    suggested, _ = _auto_length(feature_cfg, durations)
    return [f"features.max_length_s = {length:g} s but the training clips average {durations.mean():.2f} s: "
            f"{padded:.0%} of the average input is padding ({feature_cfg.pad}), which costs time and can cost "
            f"accuracy; features.max_length_s: auto would choose {suggested:g} s"]


def _band(feature_cfg: FeatureConfig, rates: np.ndarray) -> tuple[float | None, list[str], list[str]]:
    """(f_max_hz, info, warnings): the mel range's top, capped by auto at the common source Nyquist
    where the clips are sampled below the feature rate."""
    rate = feature_cfg.sample_rate_hz
    requested = feature_cfg.f_max_hz
    low = rates[rates < rate]
    if low.size == 0:
        if requested != AUTO:
            return requested, [], []
        why = "no training clip's sample rate is known" if rates.size == 0 else f"every training clip is sampled at >= {rate} Hz"
        return None, [f"features.f_max_hz auto -> {rate / 2:g} Hz (half the feature rate): {why}"], []
    # The rate COMMON_RATE_SHARE of the clips reach: the band every clip but a few strays holds.
    common = float(np.quantile(rates, 1 - COMMON_RATE_SHARE, method="lower"))
    top = rate / 2 if requested in (None, AUTO) else requested
    cap = common / 2
    warning = (f"{low.size} of {rates.size} training clips ({low.size / rates.size:.0%}) are sampled below "
               f"features.sample_rate_hz = {rate} Hz (lowest {low.min():g} Hz): resampling adds nothing above "
               f"their Nyquist, so mel bands above {low.min() / 2:g} Hz are empty for them")
    warnings = [warning] if top > low.min() / 2 else []  # an explicit f_max below every Nyquist wastes nothing
    helps = common < rate and feature_cfg.f_min_hz < cap < top
    if requested != AUTO:
        hint = f"; features.f_max_hz: auto would cap the mel range at {cap:g} Hz" if helps else ""
        return requested, [], [line + hint for line in warnings]
    if not helps:
        why = (f"features.f_min_hz = {feature_cfg.f_min_hz:g} Hz leaves no band below {cap:g} Hz"
               if common < rate else f"{COMMON_RATE_SHARE:.0%} of the clips are sampled at >= {rate} Hz")
        return None, [f"features.f_max_hz auto -> {rate / 2:g} Hz (half the feature rate): {why}"], warnings
    return cap, [f"features.f_max_hz auto -> {cap:g} Hz: the Nyquist of {common:g} Hz, the rate "
                 f"{COMMON_RATE_SHARE:.0%} of the training clips reach, so the {feature_cfg.n_mels} mel bands "
                 f"cover the range the audio holds"], warnings
