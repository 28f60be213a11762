"""Image-text datasets: the built-in `shapes`, a local `imagefolder`, or a hub dataset.

Every dataset is indexed by `(index, epoch)`: the epoch feeds the per-sample random choices
(which caption, crop offset, flip), so data order and augmentation are reproducible and a
resumed run sees exactly what an uninterrupted one would. Items are dicts:

    {"image": (3, H, W) float in [-1, 1], "caption": str, "captions": list[str],
     "label": int (-1 when unlabelled), "qa": [{"type", "question", "answer"}, ...], "index": int}

An unreadable image yields `None` (counted by `collate`) unless `data.strict` is set.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from lgvq.config import DataConfig
from lgvq.data import shapes
from lgvq.data.shapes_score import ShapesScorer
from lgvq.data.transforms import ImageTransform, to_tensor
from lgvq.errors import DataError, UsageError

log = logging.getLogger(__name__)

CAPTION_COLUMNS = ("captions", "text")  # all captions of an image when given, else the one


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index, 0x1A6])


class ImageTextDataset(torch.utils.data.Dataset):
    """Base class: subclasses implement `__len__` and `load(index, rng)`."""

    seed: int = 0

    def load(self, index: int, rng: np.random.Generator) -> dict | None:
        raise NotImplementedError

    def all_captions(self) -> list[str]:
        """Every caption of the set (without decoding images), e.g. to precompute text features."""
        return [c for captions in self.item_captions() for c in captions]

    def item_captions(self) -> list[list[str]]:
        """The captions of each image, in index order (without decoding images)."""
        raise NotImplementedError

    # What some datasets know about themselves; generic code asks here instead of importing them.
    def class_names(self) -> list[str] | None:
        """The name of each label id, where the dataset has them."""
        return None

    def scorer(self):
        """A checker of generated images against prompts (`prompts(n)`, `score(image, caption)`,
        `rates(images, captions)`), where the dataset defines one; e.g. shapes'."""
        return None

    def content_words(self) -> set[str] | None:
        """Words that name what is in an image (e.g. colours and shapes), for diagnostics."""
        return None

    def fingerprint(self) -> str | None:
        """What the items were read from, beyond the data config (e.g. a hash of a folder's file
        names, sizes and times); None when the config alone determines them (shapes)."""
        return None

    def __getitem__(self, key: int | tuple[int, int]) -> dict | None:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        return self.load(index, sample_rng(self.seed, epoch, index))


class ShapesDataset(ImageTextDataset):
    """The procedural `shapes` data (its contract: docs/shapes.md)."""

    def __init__(self, split: str, num: int, image_size: int = 64, seed: int = 0,
                 two_object_fraction: float = 0.5, random_caption: bool = True):
        self.split, self.num, self.image_size, self.seed = split, num, image_size, seed
        self.two_object_fraction = two_object_fraction
        self.random_caption = random_caption

    def __len__(self) -> int:
        return self.num

    def sample(self, index: int) -> shapes.ShapesSample:
        if not 0 <= index < self.num:
            raise IndexError(f"shapes {self.split} index {index} out of range [0, {self.num})")
        return shapes.make_sample(index, self.split, self.seed, self.image_size, self.two_object_fraction)

    def item_captions(self) -> list[list[str]]:
        return [self.sample(i).captions for i in range(self.num)]

    def class_names(self) -> list[str]:
        return [shapes.class_name(i) for i in range(shapes.NUM_CLASSES)]

    def scorer(self) -> ShapesScorer:
        return ShapesScorer(self)

    def content_words(self) -> set[str]:
        return set(shapes.COLOURS) | set(shapes.SHAPES)

    def load(self, index: int, rng: np.random.Generator) -> dict:
        s = self.sample(index)
        caption = s.captions[int(rng.integers(len(s.captions)))] if self.random_caption else s.text
        return {"image": to_tensor(s.image), "caption": caption, "captions": s.captions, "label": s.label,
                "qa": s.qa, "index": index}


def _pick_caption_column(columns: list[str], wanted: str, required: bool, where: str) -> str | None:
    if wanted != "auto":
        if wanted not in columns:
            raise DataError(f"{where}: caption column '{wanted}' not found; the columns are {columns}. "
                            f"Set data.caption_column to one of them.")
        return wanted
    for name in CAPTION_COLUMNS:
        if name in columns:
            return name
    if required:
        raise DataError(f"{where}: no caption column (looked for {list(CAPTION_COLUMNS)}); the columns are "
                        f"{columns}. Name it with data.caption_column=COLUMN, or add `text` to metadata.jsonl.")
    return None


class RecordDecoder:
    """Turns one `datasets` row (image kept as encoded bytes) into an item dict.

    Images are decoded here, not by `datasets`, so that a corrupt file is skipped and counted
    (or, with `data.strict`, reported by name) instead of failing the whole run.
    """

    def __init__(self, columns: list[str], cfg: DataConfig, train: bool, where: str, require_captions: bool):
        if cfg.image_column not in columns:
            raise DataError(f"{where}: image column '{cfg.image_column}' not found; the columns are {columns}. "
                            f"Set data.image_column.")
        self.image_column = cfg.image_column
        self.caption_column = _pick_caption_column(columns, cfg.caption_column, require_captions, where)
        self.label_column = cfg.label_column or ("label" if "label" in columns else None)
        if self.label_column is not None and self.label_column not in columns:
            raise DataError(f"{where}: label column '{self.label_column}' not found; the columns are {columns}.")
        eval_crop = "none" if cfg.crop == "none" else "center"
        self.transform = ImageTransform(cfg.image_size, cfg.resize, cfg.crop if train else eval_crop,
                                        cfg.flip and train)
        self.strict, self.train = cfg.strict, train

    def __call__(self, row: dict, index: int, rng: np.random.Generator) -> dict | None:
        """Row -> item dict, or None for an unreadable image (non-strict)."""
        image_field = row[self.image_column]
        name = image_field.get("path") or f"row {index}"
        try:
            raw = image_field.get("bytes")
            with (Image.open(io.BytesIO(raw)) if raw is not None else Image.open(image_field["path"])) as img:
                img.load()
                image = self.transform(img, rng if self.train else None)
        except (OSError, UnidentifiedImageError, ValueError, TypeError) as e:
            if self.strict:
                raise DataError(f"cannot read image {name}: {e} (data.strict=true; remove or fix the file, "
                                f"or set data.strict=false to skip unreadable images)") from e
            warnings.warn(f"skipping unreadable image {name}: {e}", stacklevel=2)
            return None
        captions: list[str] = []
        if self.caption_column is not None:
            value = row[self.caption_column]
            captions = [value] if isinstance(value, str) else [str(c) for c in (value or [])]
        if not captions:
            caption = ""
        else:
            caption = captions[int(rng.integers(len(captions)))] if self.train else captions[0]
        raw_label = row[self.label_column] if self.label_column is not None else None
        label = int(raw_label) if raw_label is not None else -1
        qa = [dict(q) for q in row.get("qa") or [] if isinstance(q, dict)]  # optional `qa` column
        return {"image": image, "caption": caption, "captions": captions, "label": label, "qa": qa, "index": index}


class HFImageTextDataset(ImageTextDataset):
    """A map-style `datasets.Dataset` (local imagefolder or hub)."""

    def __init__(self, hf_dataset: Any, cfg: DataConfig, train: bool, where: str, require_captions: bool):
        from datasets import Image as ImageFeature

        self.decode = RecordDecoder(list(hf_dataset.column_names), cfg, train, where, require_captions)
        self.ds = hf_dataset.cast_column(cfg.image_column, ImageFeature(decode=False))
        self.seed = cfg.seed
        self.source_fingerprint = (folder_fingerprint(Path(cfg.path)) if cfg.source == "folder"
                                   else getattr(hf_dataset, "_fingerprint", None))

    def fingerprint(self) -> str | None:
        return self.source_fingerprint

    def __len__(self) -> int:
        return len(self.ds)

    def load(self, index: int, rng: np.random.Generator) -> dict | None:
        return self.decode(self.ds[index], index, rng)

    def item_captions(self) -> list[list[str]]:
        column = self.decode.caption_column
        if column is None:
            return [[] for _ in range(len(self.ds))]
        return [[v] if isinstance(v, str) else list(v or []) for v in self.ds[column]]


class WordFilteredDataset(ImageTextDataset):
    """`base` without the images any of whose captions holds one of `words` (whole words, any
    case; `data.exclude_words`): e.g. every image with a purple object, to hold a colour (and the
    classes it makes) out of pretraining and bring it in by fine-tuning. Indices are renumbered;
    the scorer, class names and content words are the base set's."""

    def __init__(self, base: ImageTextDataset, words: list[str]):
        self.base, self.seed = base, base.seed
        pattern = re.compile(r"\b(?:" + "|".join(re.escape(w) for w in words) + r")\b", re.IGNORECASE)
        self.keep = [i for i, captions in enumerate(base.item_captions())
                     if not any(pattern.search(c) for c in captions)]
        if not self.keep:
            raise DataError(f"data.exclude_words={words} leaves no image")

    def __len__(self) -> int:
        return len(self.keep)

    def load(self, index: int, rng: np.random.Generator) -> dict | None:
        item = self.base.load(self.keep[index], rng)
        if item is not None:
            item["index"] = index
        return item

    def item_captions(self) -> list[list[str]]:
        captions = self.base.item_captions()
        return [captions[i] for i in self.keep]

    def class_names(self) -> list[str] | None:
        return self.base.class_names()

    def scorer(self):
        return self.base.scorer()

    def content_words(self) -> set[str] | None:
        return self.base.content_words()

    def fingerprint(self) -> str | None:
        return self.base.fingerprint()


def folder_fingerprint(folder: Path) -> str:
    """A hash of every file's relative path, size and modification time under `folder`: it changes
    when an image or metadata.jsonl is added, removed or rewritten."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def check_metadata_files(folder: Path) -> None:
    """Every line of each metadata.jsonl under `folder` is a JSON object; else a DataError naming
    the file and line (the imagefolder loader would fail deep in pyarrow without naming either)."""
    for meta in sorted(folder.rglob("metadata.jsonl")):
        with open(meta, encoding="utf-8", errors="replace") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{meta}, line {number}: not valid JSON ({e.msg}); fix or remove that line") from None
                if not isinstance(record, dict):
                    raise DataError(f"{meta}, line {number}: expected a JSON object "
                                    f'{{"file_name": ..., "text": ...}}, got {type(record).__name__}')


def load_hf_dataset(cfg: DataConfig, split_name: str, streaming: bool = False):
    """`datasets.load_dataset` for an imagefolder path or a hub id; errors name the fix."""
    from datasets import load_dataset

    if not cfg.path:
        raise DataError(f"data.source={cfg.source} needs data.path (a folder or a hub dataset id)")
    if cfg.source == "folder":
        if not Path(cfg.path).is_dir():
            raise DataError(f"data.path {cfg.path} is not a folder; give the folder that holds "
                            f"train/ and validation/ (images + metadata.jsonl)")
        check_metadata_files(Path(cfg.path))
    try:
        if cfg.source == "folder":
            return load_dataset("imagefolder", data_dir=cfg.path, split=split_name, streaming=streaming)
        return load_dataset(cfg.path, split=split_name, streaming=streaming)
    except ValueError as e:
        if "unknown split" in str(e).lower():
            raise DataError(f"{cfg.path}: no split '{split_name}' ({e}). For a folder, put images and "
                            f"metadata.jsonl in {cfg.path}/{split_name}/, or set data.train_split / "
                            f"data.val_split.") from e
        raise
    except FileNotFoundError as e:
        raise DataError(f"{cfg.path}: {e}. data.path must be an imagefolder directory or a hub dataset id.") from e


def build_dataset(cfg: DataConfig, split: str = "train", require_captions: bool = False) -> ImageTextDataset:
    """The dataset of `split` ('train' or 'validation') described by `cfg` (map-style)."""
    if split not in ("train", "validation"):
        raise UsageError(f"split must be 'train' or 'validation', not {split!r}")
    train = split == "train"
    if cfg.source == "shapes":
        dataset = ShapesDataset(split, cfg.num_train if train else cfg.num_val, cfg.image_size, cfg.seed,
                                cfg.two_object_fraction, random_caption=train)
    elif cfg.source in ("folder", "hub"):
        split_name = cfg.train_split if train else cfg.val_split
        ds = load_hf_dataset(cfg, split_name)
        dataset = HFImageTextDataset(ds, cfg, train, f"{cfg.path} [{split_name}]", require_captions)
    else:
        raise DataError(f"unknown data.source {cfg.source!r}; expected shapes, folder or hub")
    return WordFilteredDataset(dataset, list(cfg.exclude_words)) if cfg.exclude_words else dataset
