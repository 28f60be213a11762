"""Learning-rate schedules: linear warmup, then cosine or linear decay to `min_lr_ratio`, or constant.

Linear decay (warmup, then a straight line down to the end) is one of the prior's time-to-quality
levers: with a budget of steps rather than a target, it spends longer at a high rate than cosine."""

from __future__ import annotations

import math
from functools import partial

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lgvq.errors import ConfigError

SCHEDULES = ("cosine", "linear", "constant")


def lr_factor(step: int, warmup_steps: int, max_steps: int, schedule: str, min_lr_ratio: float) -> float:
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    remaining = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_lr_ratio + (1.0 - min_lr_ratio) * remaining


def build_scheduler(optimizer: Optimizer, warmup_steps: int, max_steps: int, schedule: str,
                    min_lr_ratio: float) -> LambdaLR:
    if schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule must be cosine, linear or constant, not {schedule!r}")
    return LambdaLR(optimizer, partial(lr_factor, warmup_steps=warmup_steps, max_steps=max_steps,
                                       schedule=schedule, min_lr_ratio=min_lr_ratio))
