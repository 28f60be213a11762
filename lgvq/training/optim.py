"""The one optimizer every stage trains with: Adam, fused where torch has a fused kernel.

torch's default Adam on a CPU runs its update parameter by parameter (a dozen small ops each);
the fused kernel does one pass over all of them (about 4x less optimizer time per step:
docs/results.md#speed). Same update rule; the arithmetic order differs only within float rounding.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")


def build_adam(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
               weight_decay: float = 0.0) -> torch.optim.Adam:
    params = list(parameters)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)
