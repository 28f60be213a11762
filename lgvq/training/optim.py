"""The optimizers stages train with: Adam, fused where torch has a fused kernel, and Muon for the
weight matrices of a model's hidden layers (`train.optimizer: muon`: priors and tokenizers).

torch's default Adam on a CPU runs its update parameter by parameter (a dozen small ops each);
the fused kernel does one pass over all of them (about 4x less optimizer time per step:
docs/results.md#speed). Same update rule; the arithmetic order differs only within float rounding.

Muon (torch.optim.Muon: momentum, then the update orthogonalised by Newton-Schulz iterations) takes
the weights of the hidden layers only; embeddings, codebooks, the output head, norms and biases stay
with Adam (Keller Jordan's recipe). A convolution's filters (out, in, kh, kw) are updated as the
matrix (out, in * kh * kw) they apply, as in Keller Jordan's CIFAR-10 runs; torch's Muon takes 2-D
weights only, so `MatrixMuon` hands it that view. Its update is rescaled to AdamW's RMS
(`adjust_lr_fn="match_rms_adamw"`), so a learning rate tuned for Adam is a fair start for both
(`train.muon_lr`, when set, gives Muon its own).
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


class MatrixMuon(torch.optim.Muon):
    """torch's Muon for weights of rank 2 or more, each updated as the matrix (rows, rest) it holds;
    on 2-D weights exactly torch's Muon. The momentum buffers have the matrices' shapes."""

    def __init__(self, params: Iterable[torch.nn.Parameter], **kwargs):
        params = list(params)
        if any(p.ndim < 2 for p in params):
            raise ValueError("Muon takes weights of rank 2 or more; give vectors and scalars to Adam")
        # torch's constructor refuses anything but 2-D weights: let it check the options on a
        # stand-in matrix and take over its defaults
        defaults = torch.optim.Muon([torch.zeros(1, 1, requires_grad=True)], **kwargs).defaults
        torch.optim.Optimizer.__init__(self, params, defaults)

    def _init_group(self, group, params_with_grad, grads, muon_momentum_bufs) -> bool:
        for p in group["params"]:
            if p.grad is None:
                continue
            params_with_grad.append(p.view(len(p), -1))  # a view: the update lands in the weight itself
            grads.append(p.grad.reshape(len(p), -1))
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grads[-1])
            muon_momentum_bufs.append(state["momentum_buffer"])
        return False  # no complex weights


def build_optimizer(parameters: Iterable[torch.nn.Parameter], kind: str, lr: float,
                    betas: tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """`kind`: adam, or muon (weights of rank 2 or more only; see the module's docstring)."""
    if kind == "muon":
        return MatrixMuon(parameters, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
    return build_adam(parameters, lr, betas, weight_decay)
