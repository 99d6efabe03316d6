"""Learning-rate schedule: linear warm-up, then cosine, linear or no decay.

The schedule is a pure function of the step, a multiplier in [0, 1] applied to each
parameter group's own base LR, so discriminative LRs (D2: backbone 5e-5, head 1e-3) keep
their ratio, and a resumed run recomputes the LR from its step alone.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

__all__ = ["apply_lr", "available_schedules", "lr_multiplier"]

# Decay shapes over progress in [0, 1] after warm-up: 1 at the start, 0 at the end.
_DECAYS: dict[str, Callable[[float], float]] = {
    "cosine": lambda progress: 0.5 * (1.0 + math.cos(math.pi * progress)),
    "linear": lambda progress: 1.0 - progress,
    "constant": lambda progress: 1.0,
}


def available_schedules() -> list[str]:
    return list(_DECAYS)


def lr_multiplier(step: int, *, total_steps: int, warmup_steps: int, schedule: str, min_ratio: float = 0.0) -> float:
    """The LR multiplier for 0-based optimiser step `step` in [0, total_steps].

    Warm-up: steps 0..warmup_steps-1 ramp linearly as (step + 1) / warmup_steps, so the
    first step already moves (1/warmup_steps) and step warmup_steps - 1 reaches 1.
    warmup_steps = 0 means none: step 0 runs at 1 (D2: warm-up can wreck transfer).
    Decay: from 1 at step warmup_steps down to min_ratio at step total_steps (cosine or
    linear); "constant" stays at 1 and ignores min_ratio. With warmup_steps >= total_steps
    the run never leaves warm-up.
    """
    if schedule not in _DECAYS:
        raise ValueError(f"schedule: {schedule!r} is not a schedule; valid: {', '.join(_DECAYS)}")
    for name, value, low in (("step", step, 0), ("total_steps", total_steps, 1), ("warmup_steps", warmup_steps, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name}: {value!r} must be an integer >= {low}")
    if not 0.0 <= min_ratio <= 1.0:
        raise ValueError(f"min_ratio: {min_ratio!r} is out of range; allowed: [0, 1]")
    if step > total_steps:
        raise ValueError(f"step: {step} is past total_steps={total_steps}; allowed: 0..total_steps")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_ratio + (1.0 - min_ratio) * _DECAYS[schedule](progress)


def apply_lr(optimizer: torch.optim.Optimizer, *, base_lrs: Sequence[float], multiplier: float) -> None:
    """Set param group g's lr to base_lrs[g] * multiplier (one base LR per group, in order)."""
    groups = optimizer.param_groups
    if len(base_lrs) != len(groups):
        raise ValueError(f"base_lrs: got {len(base_lrs)} learning rates for {len(groups)} param groups; "
                         f"give one per group")
    if not multiplier >= 0:
        raise ValueError(f"multiplier: {multiplier!r} is out of range; allowed: >= 0")
    for group, base in zip(groups, base_lrs):
        group["lr"] = base * multiplier
