"""Converters from the raw releases of the papers' datasets to the `imagefolder` layout that
`data.source=folder` reads (OUT/{train,validation}/ images + metadata.jsonl). The scripts in
`scripts/convert_*.py` are thin command lines over these functions.

Each record: `{"file_name", "text" (first caption), "captions" [...], "label"?, "qa" [...]?}`.
Images are copied (hard-linked where the file system allows), never re-encoded.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from tqdm.auto import tqdm

from lgvq.errors import RawDataError


def need(path: Path, what: str) -> Path:
    if not path.exists():
        raise RawDataError(f"{path} not found: expected {what}. Point the converter at the unpacked release.")
    return path


def place_image(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        return
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def write_split(out: Path, split: str, records: Iterable[tuple[Path, dict]], progress: bool = True) -> int:
    """Place each (source image, metadata) pair in OUT/split/ and write metadata.jsonl atomically."""
    folder = out / split
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / "metadata.jsonl.tmp"
    n = 0
    with tmp.open("w") as meta:
        for src, record in tqdm(records, desc=f"{split}", disable=not progress):
            name = record["file_name"]
            place_image(need(src, "an image of the release"), folder / name)
            meta.write(json.dumps(record) + "\n")
            n += 1
    tmp.replace(folder / "metadata.jsonl")
    return n


def _caption_record(name: str, captions: list[str], **extra) -> dict:
    captions = [c.strip() for c in captions if c.strip()]
    return {"file_name": name, "text": captions[0] if captions else "", "captions": captions, **extra}


# -- CUB-200-2011 with Reed et al. captions ----------------------------------------------------------
def convert_cub(cub_root: Path, captions_root: Path, out: Path, progress: bool = True) -> dict[str, int]:
    """CUB_200_2011/ (images.txt, train_test_split.txt, image_class_labels.txt, images/) and the
    Reed et al. captions (text_c10/CLASS/IMAGE.txt, ten lines each). The official train/test split
    becomes train/validation; labels are the 200 classes (0-based)."""
    cub_root, captions_root = Path(cub_root), Path(captions_root)
    paths = dict(line.split() for line in need(cub_root / "images.txt", "CUB's images.txt").read_text().splitlines())
    is_train = dict(line.split() for line in need(cub_root / "train_test_split.txt", "CUB's split").read_text()
                    .splitlines())
    labels = dict(line.split() for line in need(cub_root / "image_class_labels.txt", "CUB's labels").read_text()
                  .splitlines())
    text_dir = captions_root / "text_c10" if (captions_root / "text_c10").is_dir() else captions_root
    splits: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    for image_id, rel in paths.items():
        caption_file = need(text_dir / Path(rel).with_suffix(".txt"), "a Reed et al. caption file (text_c10)")
        record = _caption_record(rel.replace("/", "__"), caption_file.read_text().splitlines(),
                                 label=int(labels[image_id]) - 1, class_name=rel.split("/")[0].split(".", 1)[-1])
        splits["train" if is_train[image_id] == "1" else "validation"].append((cub_root / "images" / rel, record))
    return {s: write_split(out, s, r, progress) for s, r in splits.items()}


# -- MM-CelebA-HQ captions -----------------------------------------------------------------------------
class _ListsOnly(pickle.Unpickler):
    """Reads a pickle of plain lists / strings / numbers; refuses anything that names a class."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a split file")


def read_name_list(path: Path) -> list[str]:
    """TediGAN's filenames.pickle (a list of names) or a text file with one name per line."""
    if path.suffix == ".pickle":
        with path.open("rb") as f:
            names = _ListsOnly(f).load()
        return [str(n) for n in names]
    return [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]


def convert_celebahq(images_dir: Path, captions_dir: Path, out: Path, test_list: Path | None = None,
                     num_train: int = 24000, progress: bool = True) -> dict[str, int]:
    """CelebA-HQ images (N.jpg) and MM-CelebA-HQ's celeba-caption/N.txt (ten lines each). The split
    comes from `test_list` (TediGAN's test/filenames.pickle, read without executing code, or a
    text file of names); without one the first `num_train` images train (TediGAN's 24k/6k sizes)."""
    images_dir, captions_dir = Path(images_dir), Path(captions_dir)
    images = sorted(need(images_dir, "the CelebA-HQ image folder").glob("*.jpg"), key=lambda p: int(p.stem))
    test = {Path(n).stem for n in read_name_list(test_list)} if test_list else None
    splits: dict[str, list[tuple[Path, dict]]] = defaultdict(list)
    for i, img in enumerate(images):
        caps = need(captions_dir / f"{img.stem}.txt", "an MM-CelebA-HQ caption file").read_text().splitlines()
        held_out = img.stem in test if test is not None else i >= num_train
        splits["validation" if held_out else "train"].append((img, _caption_record(img.name, caps)))
    return {s: write_split(out, s, r, progress) for s, r in splits.items()}


# -- MS-COCO captions ----------------------------------------------------------------------------------
def convert_coco(coco_root: Path, out: Path, year: str = "2014", progress: bool = True) -> dict[str, int]:
    """COCO's annotations/captions_{train,val}YEAR.json and {train,val}YEAR/ images; val becomes
    validation. Five captions per image."""
    coco_root = Path(coco_root)
    counts = {}
    for part, split in (("train", "train"), ("val", "validation")):
        ann = need(coco_root / "annotations" / f"captions_{part}{year}.json", f"COCO's captions_{part}{year}.json")
        data = json.loads(ann.read_text())
        caps: dict[int, list[str]] = defaultdict(list)
        for a in data["annotations"]:
            caps[a["image_id"]].append(a["caption"])
        records = [(coco_root / f"{part}{year}" / im["file_name"],
                    _caption_record(im["file_name"], caps.get(im["id"], []), image_id=im["id"]))
                   for im in data["images"]]
        counts[split] = write_split(out, split, records, progress)
    return counts


# -- COCO-QA ---------------------------------------------------------------------------------------------
COCOQA_TYPES = {"0": "object", "1": "number", "2": "colour", "3": "location"}


def convert_cocoqa(cocoqa_root: Path, coco_root: Path, out: Path, progress: bool = True) -> dict[str, int]:
    """COCO-QA's {train,test}/{img_ids,questions,answers,types}.txt (one line per question) and
    the COCO 2014 images (train2014/ or val2014/); test becomes validation. Types: object,
    number, colour, location."""
    cocoqa_root, coco_root = Path(cocoqa_root), Path(coco_root)
    counts = {}
    for part, split in (("train", "train"), ("test", "validation")):
        cols = {k: need(cocoqa_root / part / f"{k}.txt", f"COCO-QA's {part}/{k}.txt").read_text().splitlines()
                for k in ("img_ids", "questions", "answers", "types")}
        qa: dict[str, list[dict]] = defaultdict(list)
        for img, q, a, t in zip(cols["img_ids"], cols["questions"], cols["answers"], cols["types"]):
            qa[img.strip()].append({"question": q.strip(), "answer": a.strip(), "type": COCOQA_TYPES.get(t.strip(), t)})
        records = []
        for img, pairs in qa.items():
            src = _coco_image(coco_root, int(img))
            records.append((src, {"file_name": src.name, "qa": pairs, "image_id": int(img)}))
        counts[split] = write_split(out, split, records, progress)
    return counts


def _coco_image(coco_root: Path, image_id: int) -> Path:
    for part in ("train2014", "val2014"):
        p = coco_root / part / f"COCO_{part}_{image_id:012d}.jpg"
        if p.is_file():
            return p
    raise RawDataError(f"COCO image {image_id} not found in {coco_root}/train2014 or val2014")


# -- TextCaps ------------------------------------------------------------------------------------------
def convert_textcaps(textcaps_root: Path, out: Path, progress: bool = True) -> dict[str, int]:
    """TextCaps_0.1_{train,val}.json (one entry per caption, `reference_strs` holding all five)
    and the TextVQA images train_images/ (val images live there too); val becomes validation."""
    root = Path(textcaps_root)
    counts = {}
    for part, split in (("train", "train"), ("val", "validation")):
        data = json.loads(need(root / f"TextCaps_0.1_{part}.json", f"TextCaps_0.1_{part}.json").read_text())["data"]
        by_image: dict[str, dict] = {}
        for entry in data:
            rec = by_image.setdefault(entry["image_id"], {"entry": entry, "captions": []})
            refs = entry.get("reference_strs") or [entry["caption_str"]]
            rec["captions"] = list(dict.fromkeys(rec["captions"] + refs))
        records = []
        for image_id, rec in by_image.items():
            src = root / "train_images" / f"{image_id}.jpg"
            records.append((src, _caption_record(src.name, rec["captions"], image_id=image_id)))
        counts[split] = write_split(out, split, records, progress)
    return counts
