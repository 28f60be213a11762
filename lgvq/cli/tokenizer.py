"""Stage-one verbs: train-tokenizer, evaluate-tokenizer, evaluate-alignment, build-vocab."""

from __future__ import annotations

import argparse

from lgvq.cli.common import (
    HelpFormatter,
    add_eval_data_args,
    add_train_args,
    api,
    number,
    print_results,
    print_trained,
)
from lgvq.evaluation.tables import alignment_table, tokenizer_table


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    model = api().train("tokenizer", args.config, args.overrides, resume=args.resume)
    return print_trained("tokenizer", model)


def cmd_evaluate_tokenizer(args: argparse.Namespace) -> int:
    results = api().evaluate_tokenizer_run(args.model, data=args.data, overrides=args.overrides, limit=args.limit,
                                           batch_size=args.batch_size, device=args.device,
                                           inception_path=args.inception_path, lpips_vgg_path=args.lpips_vgg_path,
                                           fid=not args.no_fid, out=args.out)
    return print_results(results, tokenizer_table)


def cmd_evaluate_alignment(args: argparse.Namespace) -> int:
    results = api().evaluate_alignment_run(args.model, data=args.data, overrides=args.overrides, limit=args.limit,
                                           batch_size=args.batch_size, device=args.device, out=args.out)
    return print_results(results, alignment_table)


def cmd_build_vocab(args: argparse.Namespace) -> int:
    vocab = api().build_vocabulary(args.out, data=args.data, overrides=args.overrides, source=args.source,
                                   text_encoder=args.text_encoder, min_count=args.min_count,
                                   max_words=args.max_words, tagger=args.tagger)
    print(f"{len(vocab.adjectives)} adjectives, {len(vocab.nouns)} nouns, {len(vocab.edges)} adjective-noun edges "
          f"written to {args.out}")
    return 0


def add_parsers(sub) -> None:
    t = sub.add_parser("train-tokenizer", help="train a stage-one VQ tokenizer", formatter_class=HelpFormatter)
    add_train_args(t, "configs/tokenizer/vqgan_shapes.yaml (then configs/lgvq/shapes.yaml for LG-VQ)")
    t.set_defaults(func=cmd_train_tokenizer)

    e = sub.add_parser("evaluate-tokenizer", help="PSNR, SSIM, LPIPS, rFID and codebook usage of a tokenizer",
                       formatter_class=HelpFormatter)
    add_eval_data_args(e, "a saved tokenizer folder (RUN/model)", "RUN/eval/tokenizer.json", batch_size=64)
    e.add_argument("--inception-path", help="folder or file of clean-fid's inception-2015-12-05.pt (for rFID)")
    e.add_argument("--lpips-vgg-path", help="torchvision's vgg16-397923af.pth (for LPIPS)")
    e.add_argument("--no-fid", action="store_true", help="skip rFID")
    e.set_defaults(func=cmd_evaluate_tokenizer)

    a = sub.add_parser("evaluate-alignment", help="LG-VQ diagnostics: retrieval, masked-word recall, relation MSE",
                       formatter_class=HelpFormatter)
    add_eval_data_args(a, "a tokenizer trained with alignment: lgvq (RUN/model)", "RUN/eval/alignment.json",
                       batch_size=100)
    a.set_defaults(func=cmd_evaluate_alignment)

    v = sub.add_parser("build-vocab", help="VQCT's adjective / noun vocabulary, edges and word vectors",
                       formatter_class=HelpFormatter)
    v.add_argument("--data", default="shapes", help="shapes, an imagefolder path, or a hub id (captions to mine)")
    v.add_argument("--out", required=True)
    v.add_argument("--source", choices=["captions", "encoder_vocab"], default="captions",
                   help="captions: the paper's mining; encoder_vocab: the text encoder's whole words")
    v.add_argument("--min-count", type=number(int, ">= 1"), default=11, help="captions: keep words seen this often (official: > 10)")
    v.add_argument("--max-words", type=number(int, ">= 2"), default=4096, help="encoder_vocab: vocabulary size")
    v.add_argument("--text-encoder", default="minilm", help="for the word vectors: minilm, or a path / hub id")
    v.add_argument("--tagger", choices=["lexicon", "nltk"], default="lexicon",
                   help="part-of-speech tagging: lemminflect's lexicon, or NLTK's tagger (needs its data)")
    v.add_argument("overrides", nargs="*", help="data.key=value overrides")
    v.set_defaults(func=cmd_build_vocab)
