"""Downstream verbs of the `lgvq` command: train-captioner, caption, train-vqa, answer, evaluate-head.

    lgvq train-captioner --config configs/heads/shapes_captioner.yaml [--data STORE] [--resume latest]
    lgvq caption --model RUN image.png ... [--beams 3]
    lgvq train-vqa --config configs/heads/shapes_vqa.yaml [--data STORE] [--init-from RUN]
    lgvq answer --model RUN --image image.png --question "what colour is the circle?"
    lgvq evaluate-head --model RUN [--store STORE]
    lgvq retrieve --model TOKENIZER --images a.png b.png --texts "a red circle" "a blue square" [--direction t2i]
    lgvq fill-mask --model TOKENIZER --image a.png --caption "a small [MASK] circle"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lgvq.cli import UsageError


def _train(args: argparse.Namespace, task_class) -> int:
    from lgvq.cli import run_training, store_overrides
    from lgvq.downstream.training import HeadRunConfig

    return run_training(HeadRunConfig, args, task_class, "head", store_overrides(args))


def cmd_train_captioner(args: argparse.Namespace) -> int:
    from lgvq.downstream.training import CaptionTask

    return _train(args, CaptionTask)


def cmd_train_vqa(args: argparse.Namespace) -> int:
    from lgvq.downstream.training import VQATask

    return _train(args, VQATask)


def _load_head(run: Path, kind):
    from lgvq.downstream.training import head_model_dir
    from lgvq.tokenizers.model import VQTokenizer

    head = kind.from_pretrained(head_model_dir(run)).eval()
    tok_dir = run / "tokenizer"
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"no tokenizer beside the head in {run} (expected {tok_dir})")
    return head, VQTokenizer.from_pretrained(tok_dir).eval()


def _image_codes(tokenizer, paths: list[str]):
    """Read images (any size; resized to the tokenizer's resolution) -> code ids (B, N)."""
    import torch

    with torch.no_grad():
        return tokenizer.encode(_image_pixels(tokenizer, paths)).reshape(len(paths), -1)


def _image_pixels(tokenizer, paths: list[str]):
    """Read images, resized to the tokenizer's resolution -> (B, 3, H, W) in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image, UnidentifiedImageError

    from lgvq.data.datasets import DataError

    size = tokenizer.config.resolution
    pixels = []
    for p in paths:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB").resize((size, size), Image.BICUBIC))
        except FileNotFoundError as e:
            raise FileNotFoundError(f"image {p} not found") from e
        except (OSError, UnidentifiedImageError) as e:
            raise DataError(f"cannot read image {p}: {e}") from e
        pixels.append(torch.from_numpy(arr.copy()).permute(2, 0, 1).float() / 127.5 - 1)
    return torch.stack(pixels)


def cmd_caption(args: argparse.Namespace) -> int:
    from lgvq.downstream.captioning import CaptionHead

    head, tokenizer = _load_head(Path(args.model), CaptionHead)
    codes = _image_codes(tokenizer, args.images)
    for path, text in zip(args.images, head.generate(codes, beams=args.beams)):
        print(f"{path}\t{text}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    from lgvq.downstream.vqa import VQAHead

    if not args.question.strip():
        raise UsageError("empty question: ask something about the image, e.g. --question 'what colour is the circle?'")
    head, tokenizer = _load_head(Path(args.model), VQAHead)
    print(head.answer(_image_codes(tokenizer, [args.image]), [args.question])[0])
    return 0


def cmd_evaluate_head(args: argparse.Namespace) -> int:
    from lgvq.cli import _report
    from lgvq.config import load_config
    from lgvq.data.code_store import CodeStore
    from lgvq.downstream.captioning import CaptionHead
    from lgvq.downstream.training import HeadRunConfig, head_model_dir
    from lgvq.downstream.vqa import VQAHead
    from lgvq.evaluation.head_eval import (
        caption_metrics,
        generate_captions,
        vqa_accuracy,
    )
    from lgvq.hub import saved_class_name

    run = Path(args.model)
    model_dir = head_model_dir(run)
    cfg = load_config(HeadRunConfig, run / "config.yaml") if (run / "config.yaml").is_file() else None
    store = CodeStore(Path(args.store or (cfg.store if cfg else "")) / "validation")
    device = args.device or "cpu"
    kind = saved_class_name(model_dir)
    if kind == "VQAHead":
        results = vqa_accuracy(VQAHead.from_pretrained(model_dir), store, limit=args.limit, device=device)
        table = _vqa_table
    elif kind == "CaptionHead":
        hyps, refs = generate_captions(CaptionHead.from_pretrained(model_dir), store, beams=args.beams,
                                       limit=args.limit, device=device)
        results = caption_metrics(hyps, refs) | {"beams": args.beams, "images": len(hyps),
                                                 "examples": [{"caption": h, "references": r}
                                                              for h, r in zip(hyps[:10], refs[:10])]}
        table = _caption_table
    else:
        raise UsageError(f"{model_dir} holds a {kind or 'folder of unknown kind'}, not a captioning or VQA head")
    results["store"] = str(store.path)
    return _report(results, model_dir, args.out, "head.json", table)


def cmd_retrieve(args: argparse.Namespace) -> int:
    from lgvq.downstream.retrieval import AlignedTokenizer

    aligned = AlignedTokenizer.from_pretrained(args.model)
    texts = list(args.texts or [])
    if args.texts_file:
        texts += [ln.strip() for ln in Path(args.texts_file).read_text().splitlines() if ln.strip()]
    if not texts or not args.images:
        raise UsageError("give images (--images) and texts (--texts and/or --texts-file)")
    images = _image_pixels(aligned.tokenizer, args.images)
    sim = aligned.similarity(images, texts)  # (I, T)
    queries, keys, sim = ((args.images, texts, sim) if args.direction == "i2t" else (texts, args.images, sim.t()))
    k = min(args.top_k, len(keys))
    for query, row in zip(queries, sim):
        top = row.topk(k)
        ranked = "; ".join(f"{keys[int(i)]} ({float(v):.3f})" for v, i in zip(top.values, top.indices))
        print(f"{query}\t{ranked}")
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    from lgvq.downstream.retrieval import AlignedTokenizer

    aligned = AlignedTokenizer.from_pretrained(args.model)
    image = _image_pixels(aligned.tokenizer, [args.image])[0]
    for i, options in enumerate(aligned.fill_mask(image, args.caption, args.top_k)):
        print(f"mask {i + 1}: " + ", ".join(f"{w} ({p:.2f})" for w, p in options))
    return 0


def _vqa_table(r: dict) -> str:
    lines = ["| question type | accuracy |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1%} |" for k, v in r["per_type"].items()]
    return "\n".join([*lines, f"| all ({r['questions']}) | {r['accuracy']:.1%} |"])


def _caption_table(r: dict) -> str:
    keys = ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"]
    return "\n".join(["| " + " | ".join(keys) + " |", "|" + " --- |" * len(keys),
                      "| " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |"])


def add_parsers(sub) -> None:
    for verb, func, what in (("train-captioner", cmd_train_captioner, "a captioning head"),
                             ("train-vqa", cmd_train_vqa, "a VQA head")):
        t = sub.add_parser(verb, help=f"train {what} on a code store")
        t.add_argument("--config", required=True, action="append", help="YAML file (configs/heads/...)")
        t.add_argument("--data", help="code store to train on (overrides `store`)")
        t.add_argument("--init-from", help="a trained head of the same kind to continue from")
        t.add_argument("--resume", help="'latest' or a checkpoint folder")
        t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")
        t.set_defaults(func=func)

    c = sub.add_parser("caption", help="caption images with a trained captioning head")
    c.add_argument("--model", required=True, help="a captioning head run folder")
    c.add_argument("images", nargs="+")
    c.add_argument("--beams", type=int, default=3)
    c.set_defaults(func=cmd_caption)

    a = sub.add_parser("answer", help="answer a question about an image with a trained VQA head")
    a.add_argument("--model", required=True, help="a VQA head run folder")
    a.add_argument("--image", required=True)
    a.add_argument("--question", required=True)
    a.set_defaults(func=cmd_answer)

    e = sub.add_parser("evaluate-head", help="VQA accuracy per question type, or captioning BLEU/METEOR/ROUGE-L/CIDEr-D")
    e.add_argument("--model", required=True, help="a head run folder")
    e.add_argument("--store", help="code store with a validation/ split (default: the run's)")
    e.add_argument("--beams", type=int, default=3)
    e.add_argument("--limit", type=int)
    e.add_argument("--device")
    e.add_argument("--out", help="JSON file (default RUN/eval/head.json)")
    e.set_defaults(func=cmd_evaluate_head)

    r = sub.add_parser("retrieve", help="rank texts for images (or images for texts) with an LG-VQ tokenizer")
    r.add_argument("--model", required=True, help="an LG-VQ tokenizer saved with its alignment modules (RUN/model)")
    r.add_argument("--images", nargs="+", required=True)
    r.add_argument("--texts", nargs="*")
    r.add_argument("--texts-file", help="one text per line")
    r.add_argument("--direction", choices=["i2t", "t2i"], default="i2t")
    r.add_argument("--top-k", type=int, default=3)
    r.set_defaults(func=cmd_retrieve)

    f = sub.add_parser("fill-mask", help="predict the masked words of a caption from an image (LG-VQ tokenizer)")
    f.add_argument("--model", required=True, help="an LG-VQ tokenizer saved with its alignment modules")
    f.add_argument("--image", required=True)
    f.add_argument("--caption", required=True, help="with [MASK] (or _) for each word to predict")
    f.add_argument("--top-k", type=int, default=3)
    f.set_defaults(func=cmd_fill_mask)
