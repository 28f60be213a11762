"""Image reconstruction metrics on [-1, 1] tensors, computed as on saved 8-bit images."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def quantize_01(images: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> [0, 1] float on the 8-bit grid (what a PNG would hold)."""
    return ((images.float().clamp(-1, 1) + 1) * 127.5).round() / 255.0


def psnr(reference: torch.Tensor, test: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB, (B,), data range 1, on 8-bit-rounded images."""
    mse = (quantize_01(reference) - quantize_01(test)).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).float()


def ssim(reference: torch.Tensor, test: torch.Tensor, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Per-image SSIM (Wang et al. 2004), (B,): Gaussian window 11 / sigma 1.5, K1 0.01, K2 0.03,
    data range 1, per RGB channel over the valid region, then averaged (not on grayscale as the
    official VQCT script does)."""
    x, y = quantize_01(reference).double(), quantize_01(test).double()
    c = x.shape[1]
    w = _gaussian_window(window, sigma).double().to(x.device).expand(c, 1, window, window)
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    sxx = F.conv2d(x * x, w, groups=c) - mu_x**2
    syy = F.conv2d(y * y, w, groups=c) - mu_y**2
    sxy = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return s.flatten(1).mean(1).float()
