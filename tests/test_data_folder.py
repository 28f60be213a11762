"""Generic image-text data through `datasets`: folders, hub-style repos, streaming, bad files."""

import json

import numpy as np
import pytest
from PIL import Image

from lgvq.config import DataConfig
from lgvq.data.datasets import DataError, build_dataset
from lgvq.data.loader import collate, eval_loader, train_stream


def make_folder(root, n=6, corrupt=(), captions_key="text", size=(40, 48)):
    split = root / "train"
    split.mkdir(parents=True)
    rng = np.random.default_rng(0)
    with (split / "metadata.jsonl").open("w") as f:
        for i in range(n):
            name = f"img{i}.png"
            if i in corrupt:
                (split / name).write_bytes(b"this is not a png")
            else:
                Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(split / name)
            row = {"file_name": name, "label": i % 3}
            if captions_key == "text":
                row["text"] = f"caption {i}"
            elif captions_key == "captions":
                row["captions"] = [f"caption {i}", f"another {i}"]
            else:
                row["description"] = f"caption {i}"
            f.write(json.dumps(row) + "\n")
    return root


def folder_cfg(root, **kw):
    return DataConfig(source="folder", path=str(root), image_size=32, **kw)


def test_folder_resize_crop_range_and_labels(tmp_path):
    ds = build_dataset(folder_cfg(make_folder(tmp_path)), "train", require_captions=True)
    item = ds[(1, 0)]
    assert item["image"].shape == (3, 32, 32)
    assert -1 <= item["image"].min() and item["image"].max() <= 1
    assert item["caption"] == "caption 1" and item["label"] == 1


def test_captions_list_column(tmp_path):
    ds = build_dataset(folder_cfg(make_folder(tmp_path, captions_key="captions")), "train", require_captions=True)
    assert ds[(0, 0)]["captions"] == ["caption 0", "another 0"]


def test_random_crop_and_flip_depend_on_epoch_only(tmp_path):
    ds = build_dataset(folder_cfg(make_folder(tmp_path, size=(64, 80)), crop="random", flip=True), "train")
    a, b = ds[(0, 0)]["image"], ds[(0, 0)]["image"]
    assert (a == b).all()  # same (index, epoch): same pixels
    assert any(not (ds[(0, e)]["image"] == a).all() for e in range(1, 6))


def test_corrupt_image_skipped_and_counted(tmp_path):
    ds = build_dataset(folder_cfg(make_folder(tmp_path, corrupt=(2,))), "train")
    with pytest.warns(UserWarning, match="img2.png"):
        batches = list(eval_loader(ds, batch_size=3))
    assert [b["skipped"] for b in batches] == [1, 0]
    assert sum(len(b["caption"]) for b in batches) == 5


def test_corrupt_image_strict_names_file(tmp_path):
    ds = build_dataset(folder_cfg(make_folder(tmp_path, corrupt=(2,)), strict=True), "train")
    with pytest.raises(DataError, match="img2.png"):
        ds[(2, 0)]


def test_missing_caption_column_lists_columns(tmp_path):
    root = make_folder(tmp_path, captions_key="description")
    with pytest.raises(DataError) as e:
        build_dataset(folder_cfg(root), "train", require_captions=True)
    assert "description" in str(e.value) and "label" in str(e.value)
    with pytest.raises(DataError, match="'caption' not found"):
        build_dataset(folder_cfg(root, caption_column="caption"), "train")
    ds = build_dataset(folder_cfg(root, caption_column="description"), "train")
    assert ds[(0, 0)]["caption"] == "caption 0"


def test_missing_split_says_where_to_put_files(tmp_path):
    with pytest.raises(DataError, match="validation"):
        build_dataset(folder_cfg(make_folder(tmp_path)), "validation")


def test_hub_style_dataset_with_column_mapping(tmp_path):
    """A dataset repository (parquet shards), loaded by path exactly as a hub id would be."""
    import datasets

    rng = np.random.default_rng(1)
    imgs = [Image.fromarray(rng.integers(0, 255, (36, 36, 3), dtype=np.uint8)) for _ in range(5)]
    ds = datasets.Dataset.from_dict({"picture": imgs, "sentence": [f"s{i}" for i in range(5)],
                                     "cls": list(range(5))}, features=datasets.Features(
        {"picture": datasets.Image(), "sentence": datasets.Value("string"), "cls": datasets.Value("int64")}))
    (tmp_path / "repo" / "data").mkdir(parents=True)
    ds.to_parquet(str(tmp_path / "repo" / "data" / "train-00000-of-00001.parquet"))
    cfg = DataConfig(source="hub", path=str(tmp_path / "repo"), image_size=32, image_column="picture",
                     caption_column="sentence", label_column="cls")
    loaded = build_dataset(cfg, "train", require_captions=True)
    item = loaded[(3, 0)]
    assert item["caption"] == "s3" and item["label"] == 3 and item["image"].shape == (3, 32, 32)
    # streaming reads the same rows without materialising the dataset
    cfg.streaming = True
    batch = next(train_stream(None, cfg, batch_size=2, seed=0))
    assert batch["image"].shape == (2, 3, 32, 32) and set(batch["caption"]) <= {f"s{i}" for i in range(5)}


def test_train_stream_is_deterministic_and_resumable():
    cfg = DataConfig(num_train=20, image_size=32)
    ds = build_dataset(cfg, "train")
    full = [b["index"].tolist() for _, b in zip(range(7), train_stream(ds, cfg, batch_size=4, seed=5))]
    resumed = [b["index"].tolist() for _, b in zip(range(4), train_stream(ds, cfg, batch_size=4, seed=5,
                                                                          start_batch=3))]
    assert resumed == full[3:]
    assert sorted(sum(full[:5], [])) == list(range(20))  # one epoch visits every item once
    ranks = [next(train_stream(ds, cfg, 4, 5, rank=r, world_size=2))["index"].tolist() for r in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1])


def test_collate_all_unreadable():
    batch = collate([None, None])
    assert batch["skipped"] == 2 and batch["image"].numel() == 0
