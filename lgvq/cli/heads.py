"""Downstream verbs: train-captioner, train-vqa, caption, answer, evaluate-head, retrieve, fill-mask."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgvq.cli.common import HelpFormatter, add_train_args, api, number, print_results, print_trained
from lgvq.evaluation.tables import caption_table, vqa_table


def cmd_train_captioner(args: argparse.Namespace) -> int:
    model = api().train("captioner", args.config, args.overrides, resume=args.resume,
                        store=args.data, init_from=args.init_from)
    return print_trained("captioner", model)


def cmd_train_vqa(args: argparse.Namespace) -> int:
    model = api().train("vqa", args.config, args.overrides, resume=args.resume,
                        store=args.data, init_from=args.init_from)
    return print_trained("vqa", model)


def cmd_caption(args: argparse.Namespace) -> int:
    for path, text in zip(args.images, api().caption_images(args.model, args.images, beams=args.beams)):
        print(f"{path}\t{text}")
    return 0


def cmd_answer(args: argparse.Namespace) -> int:
    print(api().answer_question(args.model, args.image, args.question))
    return 0


def cmd_evaluate_head(args: argparse.Namespace) -> int:
    results = api().evaluate_head_run(args.model, store=args.store, beams=args.beams, limit=args.limit,
                                      device=args.device, out=args.out)
    return print_results(results, vqa_table if results.kind == "vqa" else caption_table)


def cmd_retrieve(args: argparse.Namespace) -> int:
    texts = list(args.texts or [])
    if args.texts_file:
        texts += [ln.strip() for ln in Path(args.texts_file).read_text().splitlines() if ln.strip()]
    for query, ranked in api().rank(args.model, args.images, texts, direction=args.direction,
                                         top_k=args.top_k):
        print(f"{query}\t" + "; ".join(f"{key} ({score:.3f})" for key, score in ranked))
    return 0


def cmd_fill_mask(args: argparse.Namespace) -> int:
    for i, options in enumerate(api().fill_mask(args.model, args.image, args.caption, top_k=args.top_k)):
        print(f"mask {i + 1}: " + ", ".join(f"{w} ({p:.2f})" for w, p in options))
    return 0


def add_parsers(sub) -> None:
    for verb, func, what, example in (
            ("train-captioner", cmd_train_captioner, "a captioning head", "configs/heads/shapes_captioner.yaml"),
            ("train-vqa", cmd_train_vqa, "a VQA head", "configs/heads/shapes_vqa.yaml")):
        t = sub.add_parser(verb, help=f"train {what} on a code store", formatter_class=HelpFormatter)
        add_train_args(t, example, stage_two=True)
        t.set_defaults(func=func)

    c = sub.add_parser("caption", help="caption images with a trained captioning head", formatter_class=HelpFormatter,
                       description="Prints one line per image: its path, a tab, the caption.")
    c.add_argument("--model", required=True, help="a captioning head run folder")
    c.add_argument("images", nargs="+")
    c.add_argument("--beams", type=number(int, ">= 1"), default=3, help="beam search width (1 = greedy)")
    c.set_defaults(func=cmd_caption)

    a = sub.add_parser("answer", help="answer a question about an image with a trained VQA head",
                       formatter_class=HelpFormatter)
    a.add_argument("--model", required=True, help="a VQA head run folder")
    a.add_argument("--image", required=True)
    a.add_argument("--question", required=True)
    a.set_defaults(func=cmd_answer)

    e = sub.add_parser("evaluate-head", help="VQA accuracy per question type, or captioning BLEU/METEOR/ROUGE-L/CIDEr-D",
                       formatter_class=HelpFormatter)
    e.add_argument("--model", required=True, help="a head run folder")
    e.add_argument("--store", help="code store with a validation/ split (default: the run's)")
    e.add_argument("--beams", type=number(int, ">= 1"), default=3, help="captioning heads: beam search width")
    e.add_argument("--limit", type=number(int, ">= 1"), help="the first N validation images (default: all)")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--out", help="JSON file (default: RUN/eval/head.json)")
    e.set_defaults(func=cmd_evaluate_head)

    r = sub.add_parser("retrieve", help="rank texts for images (or images for texts) with an LG-VQ tokenizer",
                       formatter_class=HelpFormatter)
    r.add_argument("--model", required=True, help="an LG-VQ tokenizer saved with its alignment modules (RUN/model)")
    r.add_argument("--images", nargs="+", required=True)
    r.add_argument("--texts", nargs="*")
    r.add_argument("--texts-file", help="one text per line")
    r.add_argument("--direction", choices=["i2t", "t2i"], default="i2t",
                   help="i2t: texts for each image; t2i: images for each text")
    r.add_argument("--top-k", type=number(int, ">= 1"), default=3, help="matches shown per query")
    r.set_defaults(func=cmd_retrieve)

    f = sub.add_parser("fill-mask", help="predict the masked words of a caption from an image (LG-VQ tokenizer)",
                       formatter_class=HelpFormatter)
    f.add_argument("--model", required=True, help="an LG-VQ tokenizer saved with its alignment modules")
    f.add_argument("--image", required=True)
    f.add_argument("--caption", required=True, help="with [MASK] (or _) for each word to predict")
    f.add_argument("--top-k", type=number(int, ">= 1"), default=3, help="words shown per mask")
    f.set_defaults(func=cmd_fill_mask)
