"""LPIPS perceptual distance (Zhang et al. 2018) on torchvision's VGG16.

The calibrated linear heads ship inside the `lpips` package; the VGG16 ImageNet backbone is
torchvision's `vgg16-397923af.pth`, which is downloaded at run time and therefore often absent
offline. `find_vgg16_weights` looks in the places torchvision would, and `LPIPS` refuses to be
built without real weights, so a run with a perceptual weight > 0 never trains silently without it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from lgvq.errors import MissingWeightsError

VGG16_FILE = "vgg16-397923af.pth"
VGG16_URL = f"https://download.pytorch.org/models/{VGG16_FILE}"
_VGG_SLICES = (4, 9, 16, 23, 30)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_CHANNELS = (64, 128, 256, 512, 512)


def default_vgg16_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


TRAINING_FIX = ("pass loss.lpips_vgg_path=FILE, or set loss.perceptual_weight=0 to train without the "
                "perceptual loss")


def find_vgg16_weights(path: str | os.PathLike | None = None, fix: str = TRAINING_FIX) -> Path:
    """The VGG16 ImageNet weights file: `path` if given, else torchvision's cache. `fix`: what the
    caller's user can do when it is missing (training and evaluation have different options)."""
    candidate = Path(path) if path else default_vgg16_path()
    if candidate.is_dir():
        candidate = candidate / VGG16_FILE
    if not candidate.is_file():
        raise MissingWeightsError(
            f"LPIPS needs torchvision's VGG16 ImageNet weights, file {VGG16_FILE}, not found at {candidate}. "
            f"Download {VGG16_URL} and put it there, or {fix}.")
    return candidate


class LPIPS(nn.Module):
    """Frozen LPIPS-VGG. Inputs (B, 3, H, W) in [-1, 1]; output (B,) distances."""

    def __init__(self, vgg_path: str | os.PathLike | None = None):
        super().__init__()
        import lpips as lpips_pkg
        from torchvision.models import vgg16

        vgg = vgg16(weights=None)
        state = torch.load(find_vgg16_weights(vgg_path), map_location="cpu", weights_only=True)
        vgg.load_state_dict(state)
        self.slices = nn.ModuleList()
        prev = 0
        for end in _VGG_SLICES:
            self.slices.append(nn.Sequential(*[vgg.features[i] for i in range(prev, end)]))
            prev = end
        self.heads = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        head_file = Path(lpips_pkg.__file__).parent / "weights" / "v0.1" / "vgg.pth"
        heads = torch.load(head_file, map_location="cpu", weights_only=True)
        for i, head in enumerate(self.heads):
            head.weight.data.copy_(heads[f"lin{i}.model.1.weight"])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188])[None, :, None, None])
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450])[None, :, None, None])
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # always frozen

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        hx, hy = (x - self.shift) / self.scale, (y - self.shift) / self.scale
        total = 0.0
        for block, head in zip(self.slices, self.heads):
            hx, hy = block(hx), block(hy)
            nx = hx / (hx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            ny = hy / (hy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + head((nx - ny).pow(2)).mean(dim=(2, 3))
        return total.view(-1)
