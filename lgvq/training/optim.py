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

torch's Muon runs its Newton-Schulz iterations in bf16 on every device. A CPU without native bf16
(AVX2 only) emulates it: there the quick prior's Muon step took 1.0 s, fifteen times its forward
and backward, and 0.06 s with the iterations in fp32 (docs/results.md#speed). `MatrixMuon` runs
them in bf16 where the weights' device computes bf16 natively (then step for step torch's) and in
fp32 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from lgvq.devices import native_bf16

FUSED_DEVICES = ("cpu", "cuda")


def build_adam(parameters: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float] = (0.9, 0.999),
               weight_decay: float = 0.0) -> torch.optim.Adam:
    params = list(parameters)
    fused = bool(params) and all(p.device.type in FUSED_DEVICES and p.is_floating_point() for p in params)
    return torch.optim.Adam(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay, fused=fused)


class MatrixMuon(torch.optim.Muon):
    """torch's Muon for weights of rank 2 or more, each updated as the matrix (rows, rest) it holds;
    on 2-D weights exactly torch's Muon where the device has native bf16. The momentum buffers have
    the matrices' shapes. `ns_dtype`: the Newton-Schulz iterations' dtype (None: bf16 where the
    weights' device computes it natively, else fp32; decided where the weights are when they step,
    since a trainer builds its optimizers before moving the modules to the GPU)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], ns_dtype: torch.dtype | None = None, **kwargs):
        params = list(params)
        if any(p.ndim < 2 for p in params):
            raise ValueError("Muon takes weights of rank 2 or more; give vectors and scalars to Adam")
        # torch's constructor refuses anything but 2-D weights: let it check the options on a
        # stand-in matrix and take over its defaults
        defaults = torch.optim.Muon([torch.zeros(1, 1, requires_grad=True)], **kwargs).defaults
        torch.optim.Optimizer.__init__(self, params, defaults)
        self.ns_dtype = ns_dtype
        self._device_dtypes: dict[torch.device, torch.dtype] = {}

    def iteration_dtype(self, device: torch.device) -> torch.dtype:
        """The Newton-Schulz iterations' dtype for weights on `device`."""
        if self.ns_dtype is not None:
            return self.ns_dtype
        if device not in self._device_dtypes:
            self._device_dtypes[device] = torch.bfloat16 if native_bf16(device) else torch.float32
        return self._device_dtypes[device]

    @torch.no_grad()
    def step(self, closure=None):
        """torch's Muon step (momentum, Newton-Schulz, the learning rate scaled by the matrix's
        shape, decoupled weight decay), its iterations in `ns_dtype`."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            lr, momentum = group["lr"], group["momentum"]
            for param, grad, buffer in zip(params, grads, buffers):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalise(update, group["ns_coefficients"], group["ns_steps"], group["eps"],
                                       self.iteration_dtype(param.device))
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-lr * shape_ratio(group["adjust_lr_fn"], param.shape))
        return loss

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


def orthogonalise(grad: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float,
                  dtype: torch.dtype) -> torch.Tensor:
    """torch's quintic Newton-Schulz iteration (Keller Jordan's Muon) on a (rows, cols) matrix, in
    `dtype`: roughly U V^T of its SVD U S V^T."""
    a, b, c = coefficients
    x = grad.to(dtype, copy=True)  # the caller's buffer stays as it is
    tall = grad.size(0) > grad.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=eps))  # spectral norm at most 1
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


def shape_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """torch's Muon learning-rate factor for a (rows, cols) weight."""
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return math.sqrt(max(1, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    if adjust_lr_fn == "spectral_unclamped":
        return math.sqrt(rows / cols)
    return 1.0
