"""Learning-rate schedules: linear warmup, then cosine decay to `min_lr_ratio` (or constant)."""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lgvq.errors import ConfigError


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(optimizer: Optimizer, warmup_steps: int, max_steps: int, schedule: str,
                    min_lr_ratio: float) -> LambdaLR:
    if schedule not in ("cosine", "constant"):
        raise ConfigError(f"train.schedule must be cosine or constant, not {schedule!r}")
    return LambdaLR(optimizer, partial(lr_factor, warmup_steps=warmup_steps, max_steps=max_steps,
                                       schedule=schedule, min_lr_ratio=min_lr_ratio))
