"""Which device to run on, and whether it computes bf16 natively.

    device = resolve_device(None)            # "cuda" when a GPU is visible, else "cpu"
    precision = resolve_mixed_precision("auto", device)   # "bf16" where native, else "no"

Why `auto` matters: on a CPU without AVX512-BF16 or AMX (e.g. an AVX2-only EPYC) a bf16 matmul
is emulated and runs about a hundred times slower than fp32 (docs/results.md#speed), so a config
that asks for bf16 unconditionally would crawl there.
"""

from __future__ import annotations

import os

import torch

from lgvq.errors import ConfigError

MIXED_PRECISIONS = ("auto", "no", "fp16", "bf16")


def resolve_device(requested: str | torch.device | None = None) -> torch.device:
    """The requested device, or CUDA when one is visible (and accelerate is not told to use the
    CPU), else the CPU."""
    if requested is not None:
        return torch.device(requested)
    use_cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    return torch.device("cuda" if torch.cuda.is_available() and not use_cpu else "cpu")


def native_bf16(device: str | torch.device) -> bool:
    """Whether the device computes bf16 matmuls natively (CUDA with bf16 support; CPUs with
    AVX512-BF16 or AMX, which oneDNN reports)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):  # a private oneDNN query; absent in some builds
            return False
    return False


def resolve_mixed_precision(value: str, device: str | torch.device | None = None) -> str:
    """`train.mixed_precision` as accelerate takes it: `auto` becomes bf16 where the device runs
    it natively and no (fp32) elsewhere; the other values pass through."""
    if value not in MIXED_PRECISIONS:
        raise ConfigError(f"train.mixed_precision must be one of {', '.join(MIXED_PRECISIONS)}, not {value!r}")
    if value != "auto":
        return value
    return "bf16" if native_bf16(resolve_device(device)) else "no"

