"""Using trained heads and LG-VQ tokenizers on image files: what `lgvq caption`, `answer`,
`retrieve` and `fill-mask` run.

    captions = caption_images("runs/captioner", ["a.png", "b.png"], beams=3)
    answer = answer_question("runs/vqa", "a.png", "what colour is the circle?")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from lgvq.downstream.captioning import CaptionHead
from lgvq.downstream.retrieval import AlignedTokenizer
from lgvq.downstream.vqa import VQAHead
from lgvq.errors import InputFileError, UsageError
from lgvq.images import load_image, load_images
from lgvq.runs import RunDir, model_dir
from lgvq.tokenizers.model import VQTokenizer


def load_head(run: str | Path, kind: type):
    """A head run's model and the tokenizer beside it (RUN/tokenizer)."""
    run = RunDir.of(run)
    head = kind.from_pretrained(model_dir(run.root)).eval()
    if not run.tokenizer.is_dir():
        raise InputFileError(f"no tokenizer beside the head in {run.root} (expected {run.tokenizer})")
    return head, VQTokenizer.from_pretrained(run.tokenizer).eval()


@torch.no_grad()
def image_codes(tokenizer: VQTokenizer, images: Sequence[str | Path]) -> torch.Tensor:
    """Image files (any size) -> code ids (B, N)."""
    return tokenizer.encode(load_images(images, tokenizer.config.resolution)).reshape(len(images), -1)


def caption_images(model: str | Path, images: Sequence[str | Path], *, beams: int = 3) -> list[str]:
    head, tokenizer = load_head(model, CaptionHead)
    return head.generate(image_codes(tokenizer, images), beams=beams)


def answer_question(model: str | Path, image: str | Path, question: str) -> str:
    if not question.strip():
        raise UsageError("empty question: ask something about the image, e.g. --question 'what colour is the circle?'")
    head, tokenizer = load_head(model, VQAHead)
    head.check_questions([question])
    return head.answer(image_codes(tokenizer, [image]), [question])[0]


def rank(model: str | Path, images: Sequence[str | Path], texts: Sequence[str], *, direction: str = "i2t",
         top_k: int = 3) -> list[tuple[str, list[tuple[str, float]]]]:
    """For each image (i2t) or text (t2i), the best-matching texts (images) and their similarity."""
    if not texts or not images:
        raise UsageError("give images (--images) and texts (--texts and/or --texts-file)")
    aligned = AlignedTokenizer.from_pretrained(model)
    sim = aligned.similarity(load_images(images, aligned.tokenizer.config.resolution), list(texts))  # (I, T)
    image_names = list(map(str, images))
    queries, keys = (image_names, list(texts)) if direction == "i2t" else (list(texts), image_names)
    if direction != "i2t":
        sim = sim.t()
    k = min(top_k, len(keys))
    out = []
    for query, row in zip(queries, sim):
        top = row.topk(k)
        out.append((query, [(keys[int(i)], float(v)) for v, i in zip(top.values, top.indices)]))
    return out


def fill_mask(model: str | Path, image: str | Path, caption: str, *, top_k: int = 3) -> list[list[tuple[str, float]]]:
    """For each [MASK] of the caption, the top-k words the masked-text predictor reads from the image."""
    aligned = AlignedTokenizer.from_pretrained(model)
    return aligned.fill_mask(load_image(image, aligned.tokenizer.config.resolution), caption, top_k)
