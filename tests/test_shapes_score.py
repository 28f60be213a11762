"""The shapes scorer (spec: "Scoring generated images") accepts the data's own images and rejects
each kind of mismatch."""

import numpy as np
import pytest

from lgvq.data.shapes import INVERSE_RELATION, PALETTE, make_sample
from lgvq.data.shapes_score import (
    CaptionGrammarError,
    faithfulness,
    parse_caption,
    score_image,
)


@pytest.mark.parametrize("size", [32, 64])
def test_every_true_caption_matches_its_image(size):
    samples = [make_sample(i, "validation", 0, size) for i in range(150)]
    for s in samples:
        for caption in (s.captions[0], s.text):
            assert score_image(s.image, caption) == (True, "ok"), caption
    result = faithfulness([s.image for s in samples], [s.captions[0] for s in samples])
    assert result["one_object"] == result["two_objects"] == 1.0


def test_captions_of_other_images_rarely_match():
    hits = [score_image(make_sample(i, "validation").image, make_sample(i + 1, "validation").captions[0])[0]
            for i in range(200)]
    assert sum(hits) <= 4  # only when two images happen to agree in every scored attribute


def two_object_sample():
    return next(s for s in (make_sample(i, "validation") for i in range(100)) if len(s.objects) == 2)


def test_inverse_relation_fails_and_unsized_caption_passes():
    s = two_object_sample()
    a, b = s.objects
    assert score_image(s.image, f"{a.phrase()} {s.relation} {b.phrase()}")[0]
    wrong = f"{a.phrase()} {INVERSE_RELATION[s.relation]} {b.phrase()}"
    ok, reason = score_image(s.image, wrong)
    assert not ok and "relation" in reason
    assert score_image(s.image, f"{a.phrase(False)} {s.relation} {b.phrase(False)}")[0]


def test_wrong_colour_shape_size_or_count_fails():
    s = next(s for s in (make_sample(i, "validation") for i in range(100)) if len(s.objects) == 1)
    obj = s.objects[0]
    other_colour = next(c for c in PALETTE if c != obj.colour)
    other_shape = next(t for t in ("circle", "square", "triangle") if t != obj.shape)
    other_size = "large" if obj.size == "small" else "small"
    for caption in (f"a {obj.size} {other_colour} {obj.shape}", f"a {obj.size} {obj.colour} {other_shape}",
                    f"a {other_size} {obj.colour} {obj.shape}"):
        assert not score_image(s.image, caption)[0], caption
    blank = np.zeros_like(s.image)
    assert score_image(blank, s.captions[0]) == (False, "0 objects found, caption has 1")


def test_small_specks_and_slight_colour_noise_are_tolerated():
    s = two_object_sample()
    noisy = s.image.astype(np.int16) + np.random.default_rng(0).integers(-15, 16, s.image.shape)
    noisy = np.clip(noisy, 0, 255).astype(np.uint8)
    noisy[0:2, 0:2] = PALETTE["white"] if s.objects[0].colour != "white" else PALETTE["red"]  # a 4-pixel speck
    assert score_image(noisy, s.captions[0])[0]


def test_caption_outside_the_grammar_is_a_clear_error():
    with pytest.raises(CaptionGrammarError, match="cannot score"):
        parse_caption("a dog on a sofa")
    objects, relation = parse_caption("An orange triangle above a small white circle.")
    assert relation == "above" and objects[0].size is None and objects[1].size == "small"
