"""The built-in `shapes` data against its contract (docs/shapes.md)."""

import json
import re

import numpy as np
import pytest
from PIL import Image

from lgvq.config import DataConfig
from lgvq.data import shapes
from lgvq.data.datasets import build_dataset
from lgvq.data.export import export_shapes

N = 300
SAMPLES = [shapes.make_sample(i, "train", seed=3) for i in range(N)]
PALETTE = {tuple(v) for v in shapes.PALETTE.values()}
CANONICAL_ONE = re.compile(r"^a (small|large) (\w+) (circle|square|triangle)$")
CANONICAL_TWO = re.compile(r"^a (small|large) (\w+) (circle|square|triangle) "
                           r"(to the left of|to the right of|above|below) a (small|large) (\w+) (circle|square|triangle)$")


def test_pixels_are_black_or_exact_palette_colours():
    for s in SAMPLES[:100]:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        colours = {tuple(p) for p in s.image.reshape(-1, 3)}
        assert colours <= PALETTE | {(0, 0, 0)}
        assert len(colours - {(0, 0, 0)}) == len(s.objects)


def test_object_counts_sizes_and_fill_ratios():
    counts = [len(s.objects) for s in SAMPLES]
    assert set(counts) == {1, 2} and 0.4 < counts.count(2) / N < 0.6
    fill = {"square": 1.0, "circle": 0.785, "triangle": 0.5}
    for s in SAMPLES:
        for o in s.objects:
            x0, y0, x1, y1 = o.bbox
            assert x1 - x0 == y1 - y0 == round(shapes.SIZES[o.size] * 64)
            region = np.all(s.image[y0:y1, x0:x1] == shapes.PALETTE[o.colour], axis=-1)
            assert region.mean() == pytest.approx(fill[o.shape], abs=0.08)
            assert region.sum() == np.all(s.image == shapes.PALETTE[o.colour], axis=-1).sum()  # all inside bbox


def test_two_objects_disjoint_distinct_colours_and_relation_geometry():
    for s in SAMPLES:
        if len(s.objects) != 2:
            continue
        a, b = s.objects
        assert a.colour != b.colour
        ax0, ay0, ax1, ay1 = a.bbox
        bx0, by0, bx1, by1 = b.bbox
        assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0
        (acx, acy), (bcx, bcy) = a.centre, b.centre
        along, across = {"to the left of": (bcx - acx, acy - bcy), "to the right of": (acx - bcx, acy - bcy),
                         "above": (bcy - acy, acx - bcx), "below": (acy - bcy, acx - bcx)}[s.relation]
        assert along >= 0.3 * 64 and abs(across) <= 0.15 * 64


def test_captions_canonical_first_and_consistent():
    for s in SAMPLES:
        assert len(s.captions) >= 3 and len(set(s.captions)) == len(s.captions)
        a = s.objects[0]
        if len(s.objects) == 1:
            m = CANONICAL_ONE.match(s.text)
            assert m and m.groups() == (a.size, a.colour, a.shape)
        else:
            b = s.objects[1]
            m = CANONICAL_TWO.match(s.text)
            assert m and m.groups() == (a.size, a.colour, a.shape, s.relation, b.size, b.colour, b.shape)
        for c in s.captions:  # every caption names only colours and shapes that are in the image
            named = {w for w in c.split() if w in shapes.COLOURS}
            assert named <= {o.colour for o in s.objects}


def test_labels_and_class_names():
    for s in SAMPLES:
        a = s.objects[0]
        assert s.label == shapes.SHAPES.index(a.shape) * 8 + shapes.COLOURS.index(a.colour)
    assert shapes.class_name(0) == "red circle" and shapes.class_name(23) == "white triangle"
    assert shapes.NUM_CLASSES == 24


def test_questions_closed_answers_and_correct():
    seen_types = set()
    for s in SAMPLES:
        types = [q["type"] for q in s.qa]
        assert len(types) == len(set(types))
        for q in s.qa:
            seen_types.add(q["type"])
            assert q["answer"] in shapes.ANSWERS
            if q["type"] == "count":
                assert q["answer"] == ("one" if len(s.objects) == 1 else "two")
            if q["type"] == "shape":  # "what shape is the {colour} object?" - colours are unique
                colour = q["question"].split()[4]
                assert q["answer"] == next(o.shape for o in s.objects if o.colour == colour)
            if q["type"] == "yes/no":
                colour, shape = q["question"].rstrip("?").split()[-2:]
                present = any(o.colour == colour and o.shape == shape for o in s.objects)
                assert q["answer"] == ("yes" if present else "no")
    assert seen_types == set(shapes.QUESTION_TYPES)


def test_determinism_per_sample():
    again = shapes.make_sample(17, "train", seed=3)
    assert again.image.tobytes() == SAMPLES[17].image.tobytes()
    assert again.captions == SAMPLES[17].captions and again.qa == SAMPLES[17].qa
    other_split = shapes.make_sample(17, "validation", seed=3)
    other_seed = shapes.make_sample(17, "train", seed=4)
    assert other_split.image.tobytes() != again.image.tobytes() or other_split.captions != again.captions
    assert other_seed.image.tobytes() != again.image.tobytes() or other_seed.captions != again.captions


def test_dataset_items_in_range_and_caption_draws_vary():
    ds = build_dataset(DataConfig(num_train=8, num_val=4), "train")
    item = ds[(0, 0)]
    assert item["image"].shape == (3, 64, 64)
    assert item["image"].min() >= -1 and item["image"].max() <= 1
    drawn = {ds[(1, epoch)]["caption"] for epoch in range(20)}
    assert len(drawn) > 1 and drawn <= set(ds.sample(1).captions)
    val = build_dataset(DataConfig(num_train=8, num_val=4), "validation")
    assert val[(0, 5)]["caption"] == val.sample(0).text  # evaluation always sees the canonical caption


def test_export_imagefolder_round_trip(tmp_path):
    export_shapes(tmp_path, num=6, num_val=3, progress=False)
    lines = [json.loads(x) for x in (tmp_path / "train" / "metadata.jsonl").read_text().splitlines()]
    assert len(lines) == 6 and lines[0]["file_name"] == "000000.png"
    first = shapes.make_sample(0, "train")
    assert lines[0]["text"] == first.text and lines[0]["qa"] == first.qa and lines[0]["label"] == first.label
    assert np.array_equal(np.asarray(Image.open(tmp_path / "train" / "000000.png")), first.image)
    ds = build_dataset(DataConfig(source="folder", path=str(tmp_path)), "validation", require_captions=True)
    assert len(ds) == 3
    item = ds[(2, 0)]
    s = shapes.make_sample(2, "validation")
    assert item["caption"] == s.text and item["label"] == s.label
    assert item["image"].shape == (3, 64, 64)
