"""Image preprocessing: resize the shorter side, crop, optional flip, pixels to [-1, 1].

Randomness (random crop, flip) comes from an explicit numpy generator, so a sample's
augmentation is a function of (seed, epoch, index) and a resumed run sees the same pixels.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from lgvq.errors import ConfigError


class ImageTransform:
    def __init__(self, image_size: int, resize: int | None = None, crop: str = "center", flip: bool = False):
        if crop not in ("center", "random", "none"):
            raise ConfigError(f"data.crop must be center, random or none, not {crop!r}")
        self.image_size = image_size
        self.resize = resize or image_size
        self.crop = crop
        self.flip = flip

    def __call__(self, image: Image.Image, rng: np.random.Generator | None = None) -> torch.Tensor:
        """PIL image -> float tensor (3, image_size, image_size) in [-1, 1]."""
        image = image.convert("RGB")
        if self.crop == "none":
            image = image.resize((self.image_size, self.image_size), Image.BICUBIC)
        else:
            w, h = image.size
            if min(w, h) != self.resize:
                scale = self.resize / min(w, h)
                image = image.resize((max(self.resize, round(w * scale)), max(self.resize, round(h * scale))),
                                     Image.BICUBIC)
            w, h = image.size
            s = self.image_size
            if self.crop == "random" and rng is not None:
                left, top = int(rng.integers(0, w - s + 1)), int(rng.integers(0, h - s + 1))
            else:
                left, top = (w - s) // 2, (h - s) // 2
            image = image.crop((left, top, left + s, top + s))
        array = np.array(image, dtype=np.uint8)  # a writable copy
        if self.flip and rng is not None and rng.random() < 0.5:
            array = array[:, ::-1]
        return to_tensor(array)


def to_tensor(array: np.ndarray) -> torch.Tensor:
    """uint8 (H, W, 3) -> float (3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3), rounded like a saved PNG."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
