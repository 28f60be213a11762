"""Dataset converters on tiny fixtures laid out like the real raw releases; the output loads
through the generic folder path with its captions, labels and questions."""

import json
import pickle
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from lgvq.config import DataConfig
from lgvq.data import converters
from lgvq.data.datasets import build_dataset
from tests.conftest import REPO


def jpg(path, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(path)


def load(out, split="train", captions=True):
    return build_dataset(DataConfig(source="folder", path=str(out), image_size=16), split, require_captions=captions)


def test_cub_with_reed_captions(tmp_path):
    cub, reed = tmp_path / "CUB_200_2011", tmp_path / "cvpr2016_cub"
    names = ["001.Black_footed_Albatross/Black_Footed_Albatross_0046_18.jpg",
             "002.Laysan_Albatross/Laysan_Albatross_0002_1027.jpg"]
    (cub).mkdir()
    (cub / "images.txt").write_text("".join(f"{i + 1} {n}\n" for i, n in enumerate(names)))
    (cub / "train_test_split.txt").write_text("1 1\n2 0\n")
    (cub / "image_class_labels.txt").write_text("1 1\n2 2\n")
    for i, n in enumerate(names):
        jpg(cub / "images" / n, i)
        caption_file = reed / "text_c10" / n.replace(".jpg", ".txt")
        caption_file.parent.mkdir(parents=True, exist_ok=True)
        caption_file.write_text("".join(f"bird {i} caption {k}\n" for k in range(10)))
    counts = converters.convert_cub(cub, reed, tmp_path / "out", progress=False)
    assert counts == {"train": 1, "validation": 1}
    item = load(tmp_path / "out", "validation")[0]
    assert item["label"] == 1 and item["captions"][0] == "bird 1 caption 0" and len(item["captions"]) == 10


def test_celebahq_split_from_tedigan_pickle_and_refusal_of_code(tmp_path):
    for i in range(4):
        jpg(tmp_path / "CelebA-HQ-img" / f"{i}.jpg", i)
        (tmp_path / "celeba-caption").mkdir(exist_ok=True)
        (tmp_path / "celeba-caption" / f"{i}.txt").write_text(f"face {i} smiles\nface {i} has hair\n")
    test_list = tmp_path / "filenames.pickle"
    test_list.write_bytes(pickle.dumps(["3"]))
    counts = converters.convert_celebahq(tmp_path / "CelebA-HQ-img", tmp_path / "celeba-caption", tmp_path / "out",
                                         test_list, progress=False)
    assert counts == {"train": 3, "validation": 1}
    assert load(tmp_path / "out", "validation")[0]["captions"] == ["face 3 smiles", "face 3 has hair"]
    evil = tmp_path / "evil.pickle"
    evil.write_bytes(pickle.dumps(Image.Image))  # a pickle that names a class
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        converters.read_name_list(evil)


def coco_fixture(root):
    for part, ids in (("train", [9, 25]), ("val", [42])):
        images = [{"id": i, "file_name": f"COCO_{part}2014_{i:012d}.jpg"} for i in ids]
        anns = [{"image_id": i, "caption": f"picture {i} number {k}"} for i in ids for k in range(5)]
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"captions_{part}2014.json").write_text(json.dumps({"images": images,
                                                                                   "annotations": anns}))
        for i in ids:
            jpg(root / f"{part}2014" / f"COCO_{part}2014_{i:012d}.jpg", i)


def test_coco_captions(tmp_path):
    coco_fixture(tmp_path / "coco")
    assert converters.convert_coco(tmp_path / "coco", tmp_path / "out", progress=False) == {"train": 2,
                                                                                         "validation": 1}
    items = [load(tmp_path / "out")[i] for i in range(2)]
    assert sorted(len(it["captions"]) for it in items) == [5, 5]


def test_cocoqa_questions_grouped_per_image(tmp_path):
    coco_fixture(tmp_path / "coco")
    for part, rows in (("train", [("9", "what is on the table", "cake", "0"), ("9", "how many dogs", "two", "1")]),
                       ("test", [("42", "what colour is the bus", "red", "2")])):
        folder = tmp_path / "cocoqa" / part
        folder.mkdir(parents=True)
        for k, col in enumerate(("img_ids", "questions", "answers", "types")):
            (folder / f"{col}.txt").write_text("".join(r[k] + "\n" for r in rows))
    counts = converters.convert_cocoqa(tmp_path / "cocoqa", tmp_path / "coco", tmp_path / "out", progress=False)
    assert counts == {"train": 1, "validation": 1}
    item = load(tmp_path / "out", captions=False)[0]
    assert [q["type"] for q in item["qa"]] == ["object", "number"] and item["qa"][1]["answer"] == "two"


def test_textcaps_and_the_script(tmp_path):
    root = tmp_path / "textcaps"
    for part, ids in (("train", ["0a1b", "0c2d"]), ("val", ["0e3f"])):
        data = [{"image_id": i, "caption_str": f"a sign reading {i} {k}",
                 "reference_strs": [f"a sign reading {i} {j}" for j in range(5)]} for i in ids for k in range(5)]
        root.mkdir(exist_ok=True)
        (root / f"TextCaps_0.1_{part}.json").write_text(json.dumps({"data": data}))
        for i in ids:
            jpg(root / "train_images" / f"{i}.jpg")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_dataset.py"), "textcaps", "--textcaps",
                           str(root), "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert len(load(tmp_path / "out")[0]["captions"]) == 5
    missing = subprocess.run([sys.executable, str(REPO / "scripts" / "convert_dataset.py"), "coco", "--coco",
                              str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")], capture_output=True,
                             text=True, check=False)
    assert missing.returncode == 2 and "captions_train2014.json" in missing.stderr
