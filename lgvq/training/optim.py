"""The optimizers stages train with: Adam, fused where torch has a fused kernel, and Muon for a
transformer's hidden matrices (`train.optimizer: muon`, priors).

torch's default Adam on a CPU runs its update parameter by parameter (a dozen small ops each);
the fused kernel does one pass over all of them (about 4x less optimizer time per step:
docs/results.md#speed). Same update rule; the arithmetic order differs only within float rounding.

Muon (torch.optim.Muon: momentum, then the update orthogonalised by Newton-Schulz iterations) takes
the 2-D weights of the hidden layers only; embeddings, the output head, norms and biases stay with
Adam (Keller Jordan's recipe). Its update is rescaled to AdamW's RMS (`adjust_lr_fn=
"match_rms_adamw"`), so one `train.lr` serves both.
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


def build_optimizer(parameters: Iterable[torch.nn.Parameter], kind: str, lr: float,
                    betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """`kind`: adam, or muon (2-D parameters only; see the module's docstring)."""
    if kind == "muon":
        return torch.optim.Muon(list(parameters), lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    return build_adam(parameters, lr, betas, weight_decay)
