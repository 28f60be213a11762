"""Stage-two verbs: encode, train-prior, sample, complete, evaluate-prior."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgvq.cli.common import (
    HelpFormatter,
    add_sampling_args,
    add_train_args,
    api,
    number,
    print_results,
    print_trained,
    sampling_options,
)
from lgvq.errors import UsageError
from lgvq.evaluation.tables import prior_table
from lgvq.runs import check_evaluation_name


def cmd_encode(args: argparse.Namespace) -> int:
    api().encode_store(args.tokenizer, args.out, data=args.data, overrides=args.overrides,
                       splits=args.splits.split(","), copies=args.copies, text_encoder=args.text_encoder,
                       text_max_length=args.text_max_length, text_cache_dir=args.text_cache_dir,
                       batch_size=args.batch_size, device=args.device, overwrite=args.overwrite)
    return 0


def cmd_train_prior(args: argparse.Namespace) -> int:
    model = api().train("prior", args.config, args.overrides, resume=args.resume,
                        store=args.data, init_from=args.init_from)
    return print_trained("prior", model)


def _prompts(args: argparse.Namespace) -> list[str] | None:
    if args.prompts_file:
        prompts = [ln.strip() for ln in Path(args.prompts_file).read_text().splitlines() if ln.strip()]
        if not prompts:
            raise UsageError(f"{args.prompts_file} holds no prompts (one per line)")
        return prompts
    return [args.prompt] if args.prompt is not None else None


def cmd_sample(args: argparse.Namespace) -> int:
    classes = [c.strip() for c in args.class_.split(",")] if args.class_ is not None else None
    images, captions = api().sample_images(args.prior, prompts=_prompts(args), classes=classes,
                                           unconditional=args.unconditional, num_images=args.num_images,
                                           seed=args.seed, device=args.device, out=args.out,
                                           overwrite=args.overwrite, **sampling_options(args))
    api().save_samples(images, args.out, captions, overwrite=args.overwrite)
    print(f"{len(images)} images and grid.png written to {args.out}")
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    images = api().complete_image(args.prior, args.image, keep_top=args.keep_top, prompt=args.prompt,
                                  class_=args.class_, num_images=args.num_images, seed=args.seed,
                                  device=args.device, out=args.out, overwrite=args.overwrite,
                                  **sampling_options(args))
    api().save_samples(images, args.out, overwrite=args.overwrite)
    print(f"{len(images)} images and grid.png written to {args.out}")
    return 0


def _seeds(args: argparse.Namespace) -> list[int]:
    """--seeds "0,1,2" (several sampling seeds, each over all prompts), else --seed."""
    if not args.seeds:
        return [args.seed]
    try:
        seeds = [int(s) for s in args.seeds.replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--seeds takes whole numbers separated by commas, e.g. 0,1,2 (got {args.seeds!r})") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds needs distinct seeds, e.g. 0,1,2 (got {args.seeds!r})")
    return seeds


def evaluation_name(text: str) -> str:
    """--name, refused by argparse with lgvq.runs' reason."""
    try:
        return check_evaluation_name(text)
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_evaluate_prior(args: argparse.Namespace) -> int:
    results = api().evaluate_prior_run(args.prior, store=args.store, seeds=_seeds(args),
                                       num_prompts=args.num_prompts, limit=args.limit, fid=not args.no_fid,
                                       inception_path=args.inception_path, device=args.device, out=args.out,
                                       name=args.name, **sampling_options(args))
    return print_results(results, prior_table)


def add_parsers(sub) -> None:
    e = sub.add_parser("encode", help="write a code store: token ids, labels, captions and text features",
                       formatter_class=HelpFormatter)
    e.add_argument("--tokenizer", required=True, help="a saved tokenizer (RUN/model)")
    e.add_argument("--out", required=True, help="store folder (gets train/ and validation/)")
    e.add_argument("--data", help="shapes, an imagefolder path, or a hub id (default: the tokenizer run's data)")
    e.add_argument("--splits", default="train,validation", help="comma-separated")
    e.add_argument("--copies", type=number(int, ">= 1"), default=1, help="augmented views per training image")
    e.add_argument("--text-encoder", default="auto",
                   help="auto (the tokenizer's alignment encoder, else minilm), none, minilm, or a path/hub id")
    e.add_argument("--text-max-length", type=number(int, ">= 2"), default=32, help="caption truncation (tokens)")
    e.add_argument("--text-cache-dir", help="reuse / extend a caption-feature cache folder (same encoder and length)")
    e.add_argument("--batch-size", type=number(int, ">= 1"), default=64, help="images encoded at once")
    e.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    e.add_argument("--overwrite", action="store_true",
                   help="rebuild a store made from other inputs (another tokenizer, data or changed files)")
    e.add_argument("overrides", nargs="*", help="data.key=value overrides")
    e.set_defaults(func=cmd_encode)

    t = sub.add_parser("train-prior", help="train (or fine-tune) a GPT prior on a code store",
                       formatter_class=HelpFormatter)
    add_train_args(t, "configs/prior/shapes_t2i.yaml", stage_two=True)
    t.set_defaults(func=cmd_train_prior)

    s = sub.add_parser("sample", help="sample images from a prior", formatter_class=HelpFormatter,
                       description="Writes OUT/NNNN.png (image i), OUT/prompts.txt (line i: the prompt or class "
                                   "of image i) and OUT/grid.png (8 images a row). Images come per prompt, "
                                   "--num-images each, in the prompts' order.")
    add_sampling_args(s)
    s.add_argument("--prompt", help="text prompt (text-to-image priors)")
    s.add_argument("--prompts-file", help="one prompt per line")
    s.add_argument("--class", dest="class_", help="class id(s) or name(s), comma-separated")
    s.add_argument("--unconditional", action="store_true")
    s.add_argument("--num-images", type=number(int, ">= 1"), default=4, help="images per prompt / class")
    s.add_argument("--out", required=True, help="output folder")
    s.add_argument("--overwrite", action="store_true", help="replace the samples already in --out")
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("complete", help="keep the top of an image and sample the rest", formatter_class=HelpFormatter,
                       description="Writes OUT/NNNN.png (one per completion) and OUT/grid.png. A text prior "
                                   "needs --prompt, a class-conditional one --class.")
    add_sampling_args(c)
    c.add_argument("--image", required=True, help="the image to complete (any size)")
    c.add_argument("--keep-top", type=number(float, "[0, 1)"), default=0.5, help="fraction of token rows kept")
    c.add_argument("--prompt", help="text priors: what the completed image shows")
    c.add_argument("--class", dest="class_", help="class-conditional priors: the class id or name")
    c.add_argument("--num-images", type=number(int, ">= 1"), default=4, help="completions")
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--overwrite", action="store_true", help="replace the completions already in --out")
    c.set_defaults(func=cmd_complete)

    v = sub.add_parser("evaluate-prior", help="validation NLL, prompt faithfulness (shapes), FID",
                       formatter_class=HelpFormatter)
    add_sampling_args(v)
    v.add_argument("--store", help="code store with a validation/ split (default: the run's)")
    v.add_argument("--num-prompts", type=number(int, ">= 1"), default=200, help="validation prompts per sampling seed")
    v.add_argument("--seeds", help="several sampling seeds, e.g. 0,1,2: faithfulness per seed and their mean "
                                   "(default: --seed alone)")
    v.add_argument("--limit", type=number(int, ">= 1"), help="validation items for the NLL (default: all)")
    v.add_argument("--inception-path", help="folder or file of clean-fid's inception-2015-12-05.pt")
    v.add_argument("--no-fid", action="store_true", help="skip FID")
    v.add_argument("--name", default="prior", type=evaluation_name,
                   help="the evaluation's name: RUN/eval/NAME.json, and its images in RUN/eval/NAME/ unless prior "
                        "(e.g. reranked, for other sampling settings beside the run's own)")
    v.add_argument("--out", help="JSON file (default: RUN/eval/NAME.json)")
    v.set_defaults(func=cmd_evaluate_prior)
