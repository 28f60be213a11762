"""Write `shapes` out in the Hugging Face `imagefolder` layout:

    OUT/train/000000.png ...  OUT/train/metadata.jsonl
    OUT/validation/...        OUT/validation/metadata.jsonl

Each metadata line has `file_name`, `text` (the canonical caption) and the other fields of the
spec (captions, label, class_name, qa, objects, relation), so the export loads back through the
generic folder path (`data.source=folder data.path=OUT`).
"""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from lgvq.data import shapes


def export_shapes(out: str | Path, num: int, num_val: int = 0, image_size: int = 64, seed: int = 0,
                  two_object_fraction: float = 0.5, progress: bool = True) -> dict[str, int]:
    """Export `num` train and `num_val` validation samples; returns the count per split."""
    out = Path(out)
    counts = {}
    for split, n in (("train", num), ("validation", num_val)):
        if n <= 0:
            continue
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "metadata.jsonl.tmp"
        with tmp.open("w") as meta:
            for i in tqdm(range(n), desc=f"export {split}", disable=not progress):
                s = shapes.make_sample(i, split, seed, image_size, two_object_fraction)
                name = f"{i:06d}.png"
                Image.fromarray(s.image).save(folder / name)
                meta.write(json.dumps({"file_name": name, **s.metadata()}) + "\n")
        tmp.replace(folder / "metadata.jsonl")
        counts[split] = n
    return counts
