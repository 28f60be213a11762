"""Does a generated image show what its shapes caption says? (docs/shapes.md, "Scoring")

Each pixel is mapped to the nearest palette colour; pixels nearer to black, or far from every
palette colour, are background. Connected regions of one colour are the objects (specks smaller
than a fraction of a small object are ignored as decoding noise). A region's shape is told by how
much of its bounding box it fills (square ~1.0, circle ~0.79, triangle ~0.5), its size by the
side of its bounding box, and the relation by the centres of the two regions. The image matches
when its objects are exactly the caption's: same count, colours and shapes, the sizes where the
caption names them, and the relation.

Captions are read in the canonical grammar, sizes optional:
`a [size] colour shape [RELATION a [size] colour shape]`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lgvq.data.shapes import COLOURS, PALETTE, RELATIONS, SHAPES, SIZES
from lgvq.errors import CaptionGrammarError

# A pixel farther than this (RGB Euclidean) from every palette colour is background. The closest
# palette pair (red, orange) is 102 apart, so a pixel within 60 of one colour is never ambiguous.
MAX_COLOUR_DISTANCE = 60.0
# Regions smaller than this fraction of a small object's bounding box are noise, not objects.
MIN_REGION_FRACTION = 0.2
# Fill ratio boundaries between triangle (0.5), circle (0.79) and square (1.0).
TRIANGLE_CIRCLE_FILL = 0.65
CIRCLE_SQUARE_FILL = 0.9

_WORD = {"colour": "|".join(COLOURS), "shape": "|".join(SHAPES), "size": "|".join(SIZES),
         "relation": "|".join(re.escape(r) for r in RELATIONS)}
_OBJECT = r"an? (?:({size}) )?({colour}) ({shape})".format(**_WORD)
_CAPTION = re.compile(r"^{obj}(?: ({relation}) {obj})?$".format(obj=_OBJECT, relation=_WORD["relation"]))


@dataclass(frozen=True)
class WantedObject:
    colour: str
    shape: str
    size: str | None  # None when the caption does not name it


@dataclass(frozen=True)
class FoundObject:
    colour: str
    shape: str
    size: str
    centre: tuple[float, float]  # (x, y) pixels, y grows downward
    fill: float


def parse_caption(caption: str) -> tuple[list[WantedObject], str | None]:
    """'a small red circle above a blue square' -> ([small red circle, blue square], 'above')."""
    m = _CAPTION.match(" ".join(caption.lower().strip().rstrip(".").split()))
    if m is None:
        raise CaptionGrammarError(
            f"cannot score {caption!r}: shapes scoring reads 'a [small|large] COLOUR SHAPE' optionally followed "
            f"by 'RELATION a [small|large] COLOUR SHAPE' (relations: {', '.join(RELATIONS)})")
    size1, colour1, shape1, relation, size2, colour2, shape2 = m.groups()
    objects = [WantedObject(colour1, shape1, size1)]
    if relation is not None:
        objects.append(WantedObject(colour2, shape2, size2))
    return objects, relation


def palette_labels(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (H, W) int: palette index, or -1 for background."""
    pixels = image.reshape(-1, 3).astype(np.float32)
    colours = np.array([PALETTE[c] for c in COLOURS] + [(0, 0, 0)], dtype=np.float32)
    dist = np.linalg.norm(pixels[:, None, :] - colours[None], axis=-1)  # (HW, 9)
    nearest = dist.argmin(1)
    labels = np.where((nearest == len(COLOURS)) | (dist.min(1) > MAX_COLOUR_DISTANCE), -1, nearest)
    return labels.reshape(image.shape[:2])


def find_objects(image: np.ndarray) -> list[FoundObject]:
    """The objects in an image: one per connected single-colour region that is not a speck."""
    size = image.shape[0]
    small_side = round(SIZES["small"] * size)
    min_area = MIN_REGION_FRACTION * small_side ** 2
    size_boundary = (SIZES["small"] + SIZES["large"]) / 2 * size
    labels = palette_labels(image)
    found = []
    for index, colour in enumerate(COLOURS):
        regions, count = ndimage.label(labels == index)  # 4-connected
        for region, box in zip(range(1, count + 1), ndimage.find_objects(regions)):
            area = int((regions[box] == region).sum())
            if area < min_area:
                continue
            ys, xs = box
            h, w = ys.stop - ys.start, xs.stop - xs.start
            fill = area / (h * w)
            shape = ("triangle" if fill < TRIANGLE_CIRCLE_FILL else
                     "circle" if fill < CIRCLE_SQUARE_FILL else "square")
            found.append(FoundObject(colour, shape, "small" if max(h, w) < size_boundary else "large",
                                     ((xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2), fill))
    return found


def relation_between(first: FoundObject, second: FoundObject) -> str:
    """The relation word of 'first RELATION second' along the axis where the centres differ most."""
    dx = second.centre[0] - first.centre[0]
    dy = second.centre[1] - first.centre[1]
    if abs(dx) >= abs(dy):
        return "to the left of" if dx > 0 else "to the right of"
    return "above" if dy > 0 else "below"


def score_image(image: np.ndarray, caption: str) -> tuple[bool, str]:
    """(matches, reason): the reason names the first mismatch, or 'ok'."""
    wanted, relation = parse_caption(caption)
    found = find_objects(image)
    if len(found) != len(wanted):
        return False, f"{len(found)} objects found, caption has {len(wanted)}"
    matched = []
    for want in wanted:
        same_colour = [f for f in found if f.colour == want.colour]
        if len(same_colour) != 1:
            return False, f"no single {want.colour} object"
        obj = same_colour[0]
        if obj.shape != want.shape:
            return False, f"{want.colour} object is a {obj.shape}, caption says {want.shape}"
        if want.size is not None and obj.size != want.size:
            return False, f"{want.colour} {want.shape} is {obj.size}, caption says {want.size}"
        matched.append(obj)
    if relation is not None and relation_between(*matched) != relation:
        return False, f"relation is {relation_between(*matched)!r}, caption says {relation!r}"
    return True, "ok"


def faithfulness(images: list[np.ndarray], captions: list[str]) -> dict[str, float]:
    """Fraction of images matching their captions, overall and split by object count."""
    hits: dict[str, list[bool]] = {"one_object": [], "two_objects": []}
    for image, caption in zip(images, captions):
        wanted, _ = parse_caption(caption)
        hits["one_object" if len(wanted) == 1 else "two_objects"].append(score_image(image, caption)[0])
    result = {k: float(np.mean(v)) if v else float("nan") for k, v in hits.items()}
    every = hits["one_object"] + hits["two_objects"]
    result["overall"] = float(np.mean(every)) if every else float("nan")
    result["count_one_object"], result["count_two_objects"] = len(hits["one_object"]), len(hits["two_objects"])
    return result


class ShapesScorer:
    """The shapes data's check of generated images, as datasets offer it (`dataset.scorer()`):
    the prompts to generate from, and whether an image matches its caption."""

    def __init__(self, dataset):
        self.dataset = dataset

    def prompts(self, num: int) -> list[str]:
        """The canonical captions of the dataset's first `num` images."""
        return [self.dataset.sample(i).captions[0] for i in range(min(num, len(self.dataset)))]

    def applies_to(self, caption: str) -> bool:
        """Whether the caption is in the grammar the scorer reads."""
        try:
            parse_caption(caption)
        except CaptionGrammarError:
            return False
        return True

    def group(self, caption: str) -> str:
        """one_object | two_objects: the group a caption's rate is reported in."""
        return "one_object" if len(parse_caption(caption)[0]) == 1 else "two_objects"

    def score(self, image: np.ndarray, caption: str) -> tuple[bool, str]:
        return score_image(image, caption)

    def rates(self, images: list[np.ndarray], captions: list[str]) -> dict[str, float]:
        return faithfulness(images, captions)
