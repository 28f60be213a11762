"""The built-in procedural image-text dataset `shapes` (its contract: docs/shapes.md).

Sample `i` of a split is a pure function of `(seed, split, i)`: it is drawn from a numpy
generator seeded with exactly that triple, so any sample can be regenerated alone and two
runs give byte-identical images and texts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lgvq.errors import UsageError

PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 230),
    "yellow": (230, 210, 40),
    "purple": (150, 60, 200),
    "cyan": (40, 200, 210),
    "orange": (240, 140, 30),
    "white": (235, 235, 235),
}
COLOURS = list(PALETTE)
SHAPES = ["circle", "square", "triangle"]
SIZES = {"small": 0.22, "large": 0.38}
RELATIONS = ["to the left of", "to the right of", "above", "below"]
INVERSE_RELATION = {
    "to the left of": "to the right of",
    "to the right of": "to the left of",
    "above": "below",
    "below": "above",
}
# Single-word answer for "where is A relative to B?"
RELATION_ANSWER = {"to the left of": "left", "to the right of": "right", "above": "above", "below": "below"}
ANSWERS = COLOURS + SHAPES + ["small", "large", "one", "two", "left", "right", "above", "below", "yes", "no"]
QUESTION_TYPES = ["colour", "shape", "count", "size", "relation", "yes/no"]
NUM_CLASSES = len(SHAPES) * len(COLOURS)
SPLITS = {"train": 0, "validation": 1, "test": 2}


def article(words: str) -> str:
    return "an" if words[0] in "aeiou" else "a"


def class_name(label: int) -> str:
    """`label = shape_index * 8 + colour_index` -> e.g. 'red circle'."""
    return f"{COLOURS[label % len(COLOURS)]} {SHAPES[label // len(COLOURS)]}"


def object_side(size: str, image_size: int) -> int:
    return round(SIZES[size] * image_size)


@dataclass
class ShapeObject:
    shape: str
    colour: str
    size: str
    bbox: tuple[int, int, int, int]  # (x0, y0, x1, y1), x1/y1 exclusive, pixels

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bbox
        return ((x0 + x1) / 2, (y0 + y1) / 2)

    def phrase(self, with_size: bool = True) -> str:
        """'a small red circle'; without the size the article follows the colour ('an orange ...')."""
        words = " ".join(([self.size] if with_size else []) + [self.colour, self.shape])
        return f"{article(words)} {words}"


@dataclass
class ShapesSample:
    index: int
    split: str
    image: np.ndarray  # (H, W, 3) uint8
    objects: list[ShapeObject]
    relation: str | None  # "first RELATION second", None for one object
    captions: list[str]
    label: int
    qa: list[dict] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The canonical caption (always the first)."""
        return self.captions[0]

    def metadata(self) -> dict:
        """JSON-serialisable record for `metadata.jsonl` (without `file_name`)."""
        return {
            "text": self.text,
            "captions": self.captions,
            "label": self.label,
            "class_name": class_name(self.label),
            "qa": self.qa,
            "objects": [asdict(o) | {"bbox": list(o.bbox)} for o in self.objects],
            "relation": self.relation or "",  # "" for one object (a null column would not type)
            "split": self.split,
            "index": self.index,
        }


def draw_object(canvas: np.ndarray, obj: ShapeObject) -> None:
    """Fill `obj` into `canvas` (H, W, 3) with hard edges; a pixel belongs to the shape when
    its centre does."""
    x0, y0, x1, y1 = obj.bbox
    side = x1 - x0
    ys, xs = np.mgrid[y0:y1, x0:x1]
    px, py = xs + 0.5 - x0, ys + 0.5 - y0  # pixel centres relative to the box, in [0, side]
    if obj.shape == "square":
        inside = np.ones_like(px, dtype=bool)
    elif obj.shape == "circle":
        r = side / 2
        inside = (px - r) ** 2 + (py - r) ** 2 <= r**2
    elif obj.shape == "triangle":
        # apex at top centre, base spans the box width at the bottom
        inside = np.abs(px - side / 2) <= py / 2
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; expected one of {SHAPES}")
    canvas[y0:y1, x0:x1][inside] = PALETTE[obj.colour]


def _disjoint(a: tuple, b: tuple, gap: int = 1) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def _relation_holds(relation: str, first: ShapeObject, second: ShapeObject, image_size: int) -> bool:
    (ax, ay), (bx, by) = first.centre, second.centre
    far, near = 0.3 * image_size, 0.15 * image_size
    if relation in ("to the left of", "to the right of"):
        dx = bx - ax if relation == "to the left of" else ax - bx
        return dx >= far and abs(ay - by) <= near
    dy = by - ay if relation == "above" else ay - by  # y grows downward: above = smaller y
    return dy >= far and abs(ax - bx) <= near


def _place(rng: np.random.Generator, side: int, image_size: int) -> tuple[int, int, int, int]:
    x0 = int(rng.integers(0, image_size - side + 1))
    y0 = int(rng.integers(0, image_size - side + 1))
    return (x0, y0, x0 + side, y0 + side)


def _captions(objects: list[ShapeObject], relation: str | None) -> list[str]:
    a = objects[0]
    if relation is None:
        return [
            a.phrase(),
            a.phrase(with_size=False),
            f"there is {a.phrase()}",
            f"a {a.shape} that is {a.colour}",
        ]
    b = objects[1]
    inverse = INVERSE_RELATION[relation]
    return [
        f"{a.phrase()} {relation} {b.phrase()}",
        f"{a.phrase(with_size=False)} {relation} {b.phrase(with_size=False)}",
        f"{b.phrase()} {inverse} {a.phrase()}",
        f"there is {a.phrase(with_size=False)} {relation} {b.phrase(with_size=False)}",
    ]


def _questions(objects: list[ShapeObject], relation: str | None, rng: np.random.Generator) -> list[dict]:
    """One question per applicable type; each has exactly one right answer. Objects are named
    by colour where two are present (their colours always differ)."""
    count = "one" if len(objects) == 1 else "two"
    qa = [{"type": "count", "question": "how many objects are there?", "answer": count}]
    if relation is None:
        a = objects[0]
        qa += [
            {"type": "colour", "question": f"what colour is the {a.shape}?", "answer": a.colour},
            {"type": "shape", "question": f"what shape is the {a.colour} object?", "answer": a.shape},
            {"type": "size", "question": f"what size is the {a.colour} {a.shape}?", "answer": a.size},
        ]
    else:
        a, b = objects
        target, other = (a, b) if rng.random() < 0.5 else (b, a)
        rel = relation if target is a else INVERSE_RELATION[relation]
        qa += [
            {"type": "colour", "question": f"what colour is the {target.shape} {rel} the {other.colour} {other.shape}?",
             "answer": target.colour},
            {"type": "shape", "question": f"what shape is the {target.colour} object?", "answer": target.shape},
            {"type": "size", "question": f"what size is the {target.colour} {target.shape}?", "answer": target.size},
            {"type": "relation",
             "question": f"where is the {target.colour} {target.shape} relative to the {other.colour} {other.shape}?",
             "answer": RELATION_ANSWER[rel]},
        ]
    # yes/no: half the time about an object that is present, else about one that is absent
    present = {(o.colour, o.shape) for o in objects}
    if rng.random() < 0.5:
        o = objects[int(rng.integers(len(objects)))]
        colour, shape, answer = o.colour, o.shape, "yes"
    else:
        absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
        colour, shape = absent[int(rng.integers(len(absent)))]
        answer = "no"
    qa.append({"type": "yes/no", "question": f"is there {article(colour)} {colour} {shape}?", "answer": answer})
    return qa


def make_sample(index: int, split: str = "train", seed: int = 0, image_size: int = 64,
                two_object_fraction: float = 0.5) -> ShapesSample:
    """Generate sample `index` of `split`; a pure function of its arguments."""
    if split not in SPLITS:
        raise UsageError(f"unknown shapes split {split!r}; expected one of {list(SPLITS)}")
    rng = np.random.default_rng([seed, SPLITS[split], index])
    n_objects = 2 if rng.random() < two_object_fraction else 1
    colours = rng.choice(len(COLOURS), size=n_objects, replace=False)
    objects: list[ShapeObject] = []
    for c in colours:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        size = list(SIZES)[int(rng.integers(len(SIZES)))]
        objects.append(ShapeObject(shape, COLOURS[int(c)], size, (0, 0, 0, 0)))
    relation = None
    if n_objects == 1:
        side = object_side(objects[0].size, image_size)
        objects[0].bbox = _place(rng, side, image_size)
    else:
        relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
        sides = [object_side(o.size, image_size) for o in objects]
        for _ in range(10_000):  # rejection sampling; a valid layout exists for every size pair
            objects[0].bbox = _place(rng, sides[0], image_size)
            objects[1].bbox = _place(rng, sides[1], image_size)
            if _disjoint(objects[0].bbox, objects[1].bbox) and _relation_holds(
                    relation, objects[0], objects[1], image_size):
                break
        else:  # pragma: no cover - only for absurd image sizes
            raise RuntimeError(f"could not place two objects on a {image_size}px canvas")
    image = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    for obj in objects:
        draw_object(image, obj)
    label = SHAPES.index(objects[0].shape) * len(COLOURS) + COLOURS.index(objects[0].colour)
    return ShapesSample(index, split, image, objects, relation, _captions(objects, relation), label,
                        _questions(objects, relation, rng))
