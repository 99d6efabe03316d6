"""The shared base of every augmentation: draw the parameters, then apply them.

A transform splits its work in two, as audiomentations does with randomize_parameters() and
apply(), but without hidden state: `randomize(rng, shape=...)` returns a plain JSON-able dict
of what it will do (recorded with an augmented copy, shown by the preview, frozen into a run)
and `apply(x, params)` is a pure function of its inputs, so applying a recorded dict again
gives the same output. All randomness comes from the numpy Generator passed in; nothing reads
the global `random` or `np.random` state.

Transforms are registered by name with `@register_transform("name")`; that name is what an
`AugmentSpec` in a preset says. Options are keyword-only constructor arguments, validated
where they enter: a bad one raises ConfigError naming the transform, the option, the value
and what is allowed.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import numpy as np

from core.config import ConfigError

__all__ = ["TRANSFORMS", "Transform", "ValueDraw", "check_number", "check_pair", "register_transform",
           "run_audiomentations"]

Domain = Literal["wave", "spec"]


class Transform:
    """Base of every augmentation.

    domain "wave": x is mono float32 audio (samples,) at sample_rate_hz, in [-1, 1] nominally.
    domain "spec": x is one clip's log-mel, a float torch tensor (n_mels, n_frames).
    `shape` given to randomize is x.shape. A waveform transform that changes the length says
    by how much in output_length, so the transforms after it draw for the right length.
    """

    name: ClassVar[str] = ""
    domain: ClassVar[Domain] = "wave"

    def __init__(self, *, sample_rate_hz: int) -> None:
        self.sample_rate_hz = sample_rate_hz

    def randomize(self, rng: np.random.Generator, *, shape: tuple[int, ...]) -> dict[str, Any]:
        """Draw this application's parameters (JSON-able; units in the key names)."""
        raise NotImplementedError

    def apply(self, x: Any, params: dict[str, Any]) -> Any:
        """x transformed by params; a new array/tensor, x is left as it was."""
        raise NotImplementedError

    def output_length(self, n_samples: int, params: dict[str, Any]) -> int:
        """Length of apply's output for an input of n_samples (waveform transforms)."""
        return n_samples

    def time_scale(self, params: dict[str, Any]) -> float:
        """How much faster the output plays than the input (time_stretch: its rate); rates of
        events in the clip, e.g. its amplitude modulation (core/envelope.py), scale by it."""
        return 1.0


TRANSFORMS: dict[str, type[Transform]] = {}


def register_transform(name: str) -> Callable[[type[Transform]], type[Transform]]:
    """Class decorator registering a Transform under `name` (the AugmentSpec name)."""
    def decorate(cls: type[Transform]) -> type[Transform]:
        if name in TRANSFORMS:
            raise ValueError(f"augmentation name {name!r} is already registered by {TRANSFORMS[name].__name__}")
        cls.name = name
        TRANSFORMS[name] = cls
        return cls
    return decorate


def check_number(transform: str, param: str, value: Any, *, low: float, high: float) -> float:
    """value as a float when it is a number in [low, high]; ConfigError naming it otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise ConfigError(f"augment {transform}: {param}={value!r} must be a number in [{low}, {high}]")
    if not low <= value <= high:
        raise ConfigError(f"augment {transform}: {param}={value!r} is out of range [{low}, {high}]")
    return float(value)


def check_pair(transform: str, low_name: str, low: Any, high_name: str, high: Any, *,
               bounds: tuple[float, float]) -> tuple[float, float]:
    """A (low, high) range inside bounds with low <= high."""
    low = check_number(transform, low_name, low, low=bounds[0], high=bounds[1])
    high = check_number(transform, high_name, high, low=bounds[0], high=bounds[1])
    if low > high:
        raise ConfigError(f"augment {transform}: {low_name}={low} must not exceed {high_name}={high}")
    return low, high


class ValueDraw:
    """One number drawn either from a set of values or uniformly from a range.

    The plans give both forms: A4 time-stretch "0.95x/1.05x" (a set) and B2 "0.9-1.1" (a
    range). Exactly one of `values` or (`low`, `high`) is given; names are the option names
    the user wrote, for messages.
    """

    def __init__(self, transform: str, *, values: Sequence[float] | None, low: float | None, high: float | None,
                 names: tuple[str, str, str], bounds: tuple[float, float]) -> None:
        values_name, low_name, high_name = names
        if values is not None and (low is not None or high is not None):
            raise ConfigError(f"augment {transform}: give either {values_name} (a set) or "
                              f"{low_name}/{high_name} (a range), not both")
        if values is not None:
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ConfigError(f"augment {transform}: {values_name}={values!r} must be a non-empty list of numbers")
            self.values = [check_number(transform, f"{values_name}[{i}]", v, low=bounds[0], high=bounds[1])
                           for i, v in enumerate(values)]
            self.range = None
        elif low is not None and high is not None:
            self.values = None
            self.range = check_pair(transform, low_name, low, high_name, high, bounds=bounds)
        else:
            raise ConfigError(f"augment {transform}: needs {values_name} (a set, e.g. [{bounds[0]}, {bounds[1]}]) "
                              f"or both {low_name} and {high_name} (a range)")

    def draw(self, rng: np.random.Generator) -> float:
        if self.values is not None:
            return float(self.values[int(rng.integers(len(self.values)))])
        return float(rng.uniform(*self.range))


def run_audiomentations(transform_name: str, parameters: dict[str, Any], wave: np.ndarray, sample_rate_hz: int,
                        **init: Any) -> np.ndarray:
    """Apply the audiomentations transform of that class name with parameters drawn here,
    bypassing its own draw.

    A fresh instance per call: audiomentations keeps the parameters on the instance, so one
    shared across the loader's threads would race. Imported on first use: audiomentations pulls
    in scipy.signal, 1.3 s at the start of every child job, most of which augment nothing.
    """
    import audiomentations

    instance = getattr(audiomentations, transform_name)(p=1.0, **init)
    instance.parameters = {"should_apply": True, **parameters}
    return instance.apply(np.ascontiguousarray(wave, dtype=np.float32), sample_rate_hz)
