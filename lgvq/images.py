"""Saving image grids (previews, samples, reports)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from lgvq.data.transforms import to_uint8


def grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Rows of image batches (B, 3, H, W) in [-1, 1] -> one uint8 (H', W', 3) grid."""
    arrays = [to_uint8(r) for r in rows]
    b, h, w, _ = arrays[0].shape
    out = np.full((len(arrays) * (h + pad) + pad, b * (w + pad) + pad, 3), 64, dtype=np.uint8)
    for r, batch in enumerate(arrays):
        for c, img in enumerate(batch):
            y, x = pad + r * (h + pad), pad + c * (w + pad)
            out[y:y + h, x:x + w] = img
    return out


def save_grid(rows: list[torch.Tensor], path: str | Path, scale: int = 1) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(grid(rows))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    img.save(path)
    return path
