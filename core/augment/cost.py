"""What a model step costs, measured the way training runs it: the yardstick for on-the-fly
augmentation (which must cost less than the step it feeds, or move offline)."""
from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable

import torch

__all__ = ["time_model_step"]


def time_model_step(model: torch.nn.Module, features: torch.Tensor, targets: torch.Tensor, *,
                    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                    device: torch.device | str = "cpu", repeats: int = 3) -> float:
    """Seconds for one training step (forward, backward, AdamW step) on this batch: the median of
    `repeats` after one warm-up (the augmentation it is weighed against is a median too), on a
    copy of model, so its weights, batch-norm statistics and optimizer state are left exactly
    as they were."""
    if repeats < 1:
        raise ValueError(f"repeats: {repeats!r} must be >= 1")
    twin = copy.deepcopy(model).to(device).train()
    optimizer = torch.optim.AdamW([p for p in twin.parameters() if p.requires_grad], lr=1e-9)
    features, targets = features.to(device), targets.to(device)
    synchronize = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    def step() -> float:
        started = time.perf_counter()
        loss = loss_fn(twin(features), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize()
        return time.perf_counter() - started

    step()
    return float(statistics.median(step() for _ in range(repeats)))
