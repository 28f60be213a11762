"""Image files in and out: reading the user's images for a model, writing generated images,
and grids (previews, samples, reports).

    pixels = load_images(["a.png", "b.jpg"], size=64)     # (2, 3, 64, 64) in [-1, 1]
    save_samples(images, "out/", captions)                 # out/0000.png ..., prompts.txt, grid.png
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lgvq.data.transforms import to_tensor, to_uint8
from lgvq.errors import DataError, InputFileError, OutputExistsError


def load_image(image: str | Path | Image.Image, size: int, max_pixels: int | None = None) -> torch.Tensor:
    """A file (or PIL image), resized to size x size -> (3, size, size) in [-1, 1]. An image of
    more than `max_pixels` pixels (default: PIL's decompression-bomb limit) is refused before it
    is decoded."""
    if isinstance(image, Image.Image):
        _check_pixels(image, "the image", max_pixels)
        return to_tensor(np.array(image.convert("RGB").resize((size, size), Image.BICUBIC)))
    try:
        with Image.open(image) as im:
            _check_pixels(im, f"image {image}", max_pixels)
            return to_tensor(np.array(im.convert("RGB").resize((size, size), Image.BICUBIC)))
    except FileNotFoundError as e:
        raise InputFileError(f"image {image} not found") from e
    except Image.DecompressionBombError as e:  # PIL refuses it while reading the header
        limit = min(max_pixels or 2 * Image.MAX_IMAGE_PIXELS, 2 * Image.MAX_IMAGE_PIXELS)
        raise DataError(f"image {image} is too large ({str(e).split(' exceeds')[0].lower()}); the largest accepted "
                        f"is {limit:,} pixels (scale it down first)") from e
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"cannot read image {image}: {e}") from e


def _check_pixels(im: Image.Image, name: str, max_pixels: int | None) -> None:
    if max_pixels is not None and im.width * im.height > max_pixels:
        raise DataError(f"{name} is too large ({im.width} x {im.height} pixels); the largest accepted is "
                        f"{max_pixels:,} pixels (scale it down first)")


def load_images(images: Sequence[str | Path | Image.Image], size: int) -> torch.Tensor:
    """Several images -> (B, 3, size, size) in [-1, 1]."""
    return torch.stack([load_image(image, size) for image in images])


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


SAMPLE_FILE = re.compile(r"^\d{4,}\.png$")


def old_samples(out: Path) -> list[Path]:
    """The files a previous `save_samples` left in `out`."""
    if not out.is_dir():
        return []
    return [p for p in out.iterdir() if SAMPLE_FILE.match(p.name) or p.name in ("prompts.txt", "grid.png")]


def check_samples_folder(out: str | Path, overwrite: bool = False) -> None:
    """Refuse a folder that already holds samples unless `overwrite` (new images would replace
    some of them and leave the others beside a prompts.txt that no longer describes them)."""
    if Path(out).exists() and not Path(out).is_dir():
        raise OutputExistsError(f"--out {out} is a file, not a folder; choose another --out")
    found = old_samples(Path(out))
    if found and not overwrite:
        raise OutputExistsError(f"{out} already holds samples ({len(found)} files); choose another --out, "
                                f"or pass --overwrite to replace them")


def save_samples(images: Sequence[Image.Image], out: str | Path, captions: Sequence[str] | None = None,
                 per_row: int = 8, overwrite: bool = False) -> Path:
    """NNNN.png per image, prompts.txt (line i = the prompt of image i) and grid.png (`per_row`
    images a row, the last row padded with black). A folder holding older samples is refused
    unless `overwrite`, which removes them first."""
    out = Path(out)
    check_samples_folder(out, overwrite)
    for old in old_samples(out):
        old.unlink()
    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(out / f"{i:04d}.png")
    if captions is not None:
        (out / "prompts.txt").write_text("\n".join(captions) + "\n")
    pixels = torch.stack([to_tensor(np.array(im.convert("RGB"))) for im in images])
    per_row = min(len(images), per_row)
    rows = [pixels[i:i + per_row] for i in range(0, len(images), per_row)]
    if len(rows) > 1 and rows[-1].shape[0] < per_row:
        rows[-1] = torch.cat([rows[-1], -torch.ones(per_row - rows[-1].shape[0], *rows[-1].shape[1:])])
    return save_grid(rows, out / "grid.png", scale=2)
