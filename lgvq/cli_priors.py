"""Stage-two verbs of the `lgvq` command: encode, train-prior, sample, complete, evaluate-prior.

    lgvq encode --tokenizer RUN/model --out runs/codes [--data shapes|FOLDER|HUB_ID] [data.key=value ...]
    lgvq train-prior --config configs/prior/shapes_t2i.yaml [--data STORE] [--init-from RUN] [--resume latest]
    lgvq sample --prior RUN --prompt "a red circle" --num-images 4 --cfg 3 --seed 0 --out DIR
    lgvq complete --prior RUN --image in.png --keep-top 0.5 --out DIR
    lgvq evaluate-prior --prior RUN [--num-prompts 200]
    lgvq report --run runs/pipeline
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lgvq.cli import UsageError


def _device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


# -- encode -------------------------------------------------------------------------------------
def cmd_encode(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from lgvq.cli import data_config_for
    from lgvq.data.code_store import StoreRequest, encode_split, keep_tokenizer_copy
    from lgvq.data.datasets import build_dataset
    from lgvq.data.shapes import NUM_CLASSES, class_name
    from lgvq.tokenizers.model import VQTokenizer

    model_dir = Path(args.tokenizer)
    tokenizer = VQTokenizer.from_pretrained(model_dir)
    if tokenizer.aligner is not None:
        tokenizer = tokenizer.without_alignment()
    data_cfg = data_config_for(args.data, model_dir, args.overrides)
    data_cfg.image_size = tokenizer.config.resolution
    text_encoder = args.text_encoder
    if text_encoder == "auto":
        spec = tokenizer.config.alignment or {}
        text_encoder = spec.get("config", {}).get("text_encoder", "minilm")
    text_encoder = None if text_encoder == "none" else text_encoder
    shapes = data_cfg.source == "shapes"
    for split in args.splits.split(","):
        dataset = build_dataset(data_cfg, split)
        request = StoreRequest(str(model_dir.resolve()), dict(tokenizer.config), asdict(data_cfg), split,
                               args.copies if split == "train" else 1, text_encoder, args.text_max_length)
        out = encode_split(tokenizer, dataset, Path(args.out) / split, request, batch_size=args.batch_size,
                           device=_device(args.device), num_classes=NUM_CLASSES if shapes else None,
                           class_names=[class_name(i) for i in range(NUM_CLASSES)] if shapes else None,
                           text_cache_dir=args.text_cache_dir)
        print(f"{split}: {len(dataset)} images encoded to {out}")
    keep_tokenizer_copy(args.out, model_dir)  # after encoding: a store of another tokenizer was refused above
    return 0


# -- train-prior --------------------------------------------------------------------------------
def cmd_train_prior(args: argparse.Namespace) -> int:
    from lgvq.cli import run_training, store_overrides
    from lgvq.priors.config import PriorRunConfig
    from lgvq.priors.training import PriorTask

    return run_training(PriorRunConfig, args, PriorTask, "prior", store_overrides(args))


# -- sample / complete --------------------------------------------------------------------------
def _sampling_overrides(args: argparse.Namespace) -> dict:
    return {"cfg_scale": args.cfg, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
            "batch_size": args.batch_size}


def _save_images(images, out: Path, captions: list[str] | None = None) -> None:
    """NNNN.png per image, prompts.txt beside them, and grid.png (8 per row)."""
    import numpy as np
    import torch

    from lgvq.images import save_grid

    out.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        im.save(out / f"{i:04d}.png")
    if captions is not None:
        (out / "prompts.txt").write_text("\n".join(captions) + "\n")
    arrays = torch.stack([torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1) for im in images])
    per_row = min(len(images), 8)
    rows = [arrays[i:i + per_row].float() / 127.5 - 1 for i in range(0, len(images), per_row)]
    if len(rows) > 1 and rows[-1].shape[0] < per_row:  # pad the last row with black
        pad = -torch.ones(per_row - rows[-1].shape[0], *rows[-1].shape[1:])
        rows[-1] = torch.cat([rows[-1], pad])
    save_grid(rows, out / "grid.png", scale=2)
    print(f"{len(images)} images and grid.png written to {out}")


def _prompts(args: argparse.Namespace) -> list[str] | None:
    if args.prompts_file:
        lines = [ln.strip() for ln in Path(args.prompts_file).read_text().splitlines()]
        prompts = [ln for ln in lines if ln]
        if not prompts:
            raise UsageError(f"{args.prompts_file} holds no prompts (one per line)")
        return prompts
    if args.prompt is not None:
        return [args.prompt]
    return None


def cmd_sample(args: argparse.Namespace) -> int:
    from lgvq.pipelines import load_pipeline

    pipe = load_pipeline(args.prior, device=args.device)
    kind = pipe.prior.config.conditioning
    prompts = _prompts(args)
    chosen = [name for name, given in (("a prompt", prompts is not None), ("--class", args.class_ is not None),
                                       ("--unconditional", args.unconditional)) if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --prompt / --prompts-file, --class or --unconditional")
    expected = {"text": "a prompt", "class": "--class", "none": "--unconditional"}[kind]
    if chosen[0] != expected:
        raise UsageError(f"this prior is {'unconditional' if kind == 'none' else kind + '-conditional'}: "
                         f"sample it with {expected}")
    sampling = _sampling_overrides(args)
    if kind == "text":
        images = pipe(prompts, num_images=args.num_images, seed=args.seed, **sampling)
        captions = [p for p in prompts for _ in range(args.num_images)]
    elif kind == "class":
        classes = [c.strip() for c in args.class_.split(",")]
        images = pipe(classes, num_images=args.num_images, seed=args.seed, **sampling)
        captions = [str(c) for c in classes for _ in range(args.num_images)]
    else:
        images, captions = pipe(num_images=args.num_images, seed=args.seed, **sampling), None
    _save_images(images, Path(args.out), captions)
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from lgvq.pipelines import load_pipeline
    from lgvq.priors.model import Condition

    pipe = load_pipeline(args.prior, device=args.device)
    if not Path(args.image).is_file():
        raise FileNotFoundError(f"image {args.image} not found")
    cond = None
    kind = pipe.prior.config.conditioning
    if kind == "text":
        if not args.prompt:
            raise UsageError("this prior is text-conditional: give --prompt for the completion")
        one = pipe.text_condition([args.prompt])
        cond = Condition(text=one.text.expand(args.num_images, -1, -1),
                         text_mask=one.text_mask.expand(args.num_images, -1))
    elif kind == "class":
        if args.class_ is None:
            raise UsageError("this prior is class-conditional: give --class for the completion")
        import torch

        cond = Condition(labels=torch.tensor(pipe.class_ids(args.class_) * args.num_images))
    images = pipe.complete(args.image, keep_top=args.keep_top, num_images=args.num_images, seed=args.seed,
                           condition=cond, **_sampling_overrides(args))
    _save_images(images, Path(args.out))
    return 0


# -- evaluate-prior -------------------------------------------------------------------------------
def cmd_evaluate_prior(args: argparse.Namespace) -> int:
    from lgvq.cli import _report
    from lgvq.config import load_config
    from lgvq.data.code_store import CodeStore
    from lgvq.evaluation.prior_eval import (
        evaluate_faithfulness,
        mean_faithfulness,
        shapes_prompts,
        validation_nll,
    )
    from lgvq.pipelines import load_pipeline
    from lgvq.priors.config import PriorRunConfig

    run = Path(args.prior)
    pipe = load_pipeline(run, device=args.device)
    cfg = load_config(PriorRunConfig, run / "config.yaml") if (run / "config.yaml").is_file() else None
    store_root = Path(args.store or (cfg.store if cfg else ""))
    results: dict = {"prior": str(run), "seed": args.seed, "sampling": pipe.defaults | _given(args)}
    if (store_root / "validation" / "store.json").is_file():
        store = CodeStore(store_root / "validation")
        results["validation"] = validation_nll(pipe.prior, store, limit=args.limit, device=pipe.device)
        data = store.manifest["identity"]["data"]
    else:
        print(f"no validation split in {store_root}; skipping NLL")
        data = {}
    out_dir = run / "eval"
    if pipe.prior.config.conditioning == "text" and data.get("source") == "shapes":
        prompts = shapes_prompts(args.num_prompts, data["image_size"], data["seed"])
        seeds = _seeds(args)
        results["seed"], per_seed = seeds[0], {}
        for k, seed in enumerate(seeds):  # the first seed's images are kept in eval/samples
            samples = out_dir / ("samples" if k == 0 else f"samples_seed{seed}")
            scored = evaluate_faithfulness(pipe, prompts, seed=seed, out_dir=samples, **_sampling_overrides(args))
            (samples / "scores.jsonl").write_text("\n".join(json.dumps(r) for r in scored["records"]) + "\n")
            per_seed[str(seed)] = scored["faithfulness"]
            if k == 0 and not args.no_fid:
                results["fid"] = _prior_fid(scored["images"], data, out_dir, args.inception_path, pipe.device)
        results["faithfulness"] = mean_faithfulness(list(per_seed.values()))
        if len(seeds) > 1:
            results["seeds"], results["faithfulness_per_seed"] = seeds, per_seed
    return _report(results, run / "model", args.out, "prior.json", format_prior_table)


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


def _given(args: argparse.Namespace) -> dict:
    return {k: v for k, v in _sampling_overrides(args).items() if v is not None}


def _prior_fid(images, data: dict, out_dir: Path, inception_path: str | None, device) -> dict:
    """FID of the generated images against as many validation images (clean-fid, local weights)."""
    import numpy as np
    from PIL import Image

    from lgvq.data.shapes import make_sample
    from lgvq.evaluation.fid import fid_between_folders, load_inception
    from lgvq.tokenizers.lpips import MissingWeightsError

    try:
        model = load_inception(inception_path, device)
    except MissingWeightsError as e:
        print(f"FID skipped: {e}")
        return {"value": None, "skipped": str(e)}
    real = out_dir / "real"
    real.mkdir(parents=True, exist_ok=True)
    for i in range(len(images)):
        Image.fromarray(np.asarray(make_sample(i, "validation", data["seed"], data["image_size"]).image)).save(
            real / f"{i:04d}.png")
    value = fid_between_folders(out_dir / "samples", real, model, device)
    return {"value": value, "images": len(images), "mode": "clean"}


def format_prior_table(results: dict) -> str:
    lines = ["| metric | value |", "| --- | --- |"]
    if "validation" in results:
        v = results["validation"]
        lines += [f"| validation NLL (nats/token) | {v['nll']:.3f} |", f"| perplexity | {v['perplexity']:.1f} |"]
    if "faithfulness" in results:
        f = results["faithfulness"]
        for seed, g in (results.get("faithfulness_per_seed") or {}).items():
            lines.append(f"| faithfulness, seed {seed}, one / two objects | {g['one_object']:.1%} / "
                         f"{g['two_objects']:.1%} |")
        mean = f"mean of {len(results['seeds'])} seeds, " if results.get("seeds") else ""
        lines += [f"| faithfulness, {mean}one object ({f['count_one_object']} prompts) | {f['one_object']:.1%} |",
                  f"| faithfulness, {mean}two objects ({f['count_two_objects']} prompts) | {f['two_objects']:.1%} |",
                  f"| faithfulness, {mean}overall | {f['overall']:.1%} |"]
    fid = results.get("fid") or {}
    if fid.get("value") is not None:
        lines.append(f"| FID ({fid['images']} images) | {fid['value']:.2f} |")
    return "\n".join(lines)


# -- report ------------------------------------------------------------------------------------------
def cmd_report(args: argparse.Namespace) -> int:
    from lgvq.report import build_report, compare_table

    if args.compare:
        table = compare_table(args.compare)
        (Path(args.compare) / "table.md").write_text(table + "\n")
        print(table)
        print(f"table written to {Path(args.compare) / 'table.md'}")
        return 0
    if not args.run:
        raise UsageError("give --run DIR (one pipeline folder) or --compare ROOT (ROOT/TOKENIZER/seedN folders)")
    path = build_report(args.run)
    print(f"report written to {path}")
    return 0


# -- parser -----------------------------------------------------------------------------------------
def _sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", required=True, help="a prior run folder (RUN with RUN/model and RUN/tokenizer)")
    p.add_argument("--cfg", type=float, help="classifier-free guidance scale (default: the run's, 1 = none)")
    p.add_argument("--temperature", type=float, help="0 = greedy")
    p.add_argument("--top-k", type=int, help="0 = no top-k filter")
    p.add_argument("--top-p", type=float, help="1 = no nucleus filter")
    p.add_argument("--batch-size", type=int, help="images sampled at once")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def add_parsers(sub) -> None:
    e = sub.add_parser("encode", help="write a code store: token ids, labels, captions and text features")
    e.add_argument("--tokenizer", required=True, help="a saved tokenizer (RUN/model)")
    e.add_argument("--out", required=True, help="store folder (gets train/ and validation/)")
    e.add_argument("--data", help="shapes, an imagefolder path, or a hub id (default: the tokenizer run's data)")
    e.add_argument("--splits", default="train,validation")
    e.add_argument("--copies", type=int, default=1, help="augmented views per training image")
    e.add_argument("--text-encoder", default="auto",
                   help="auto (the tokenizer's alignment encoder, else minilm), none, minilm, or a path/hub id")
    e.add_argument("--text-max-length", type=int, default=32, help="caption truncation (tokens)")
    e.add_argument("--text-cache-dir", help="reuse / extend a caption-feature cache folder (same encoder and length)")
    e.add_argument("--batch-size", type=int, default=64)
    e.add_argument("--device")
    e.add_argument("overrides", nargs="*", help="data.key=value overrides")
    e.set_defaults(func=cmd_encode)

    t = sub.add_parser("train-prior", help="train a GPT prior on a code store")
    t.add_argument("--config", required=True, action="append", help="YAML file, e.g. configs/prior/shapes_t2i.yaml")
    t.add_argument("--data", help="code store to train on (overrides `store`)")
    t.add_argument("--init-from", help="a trained prior run to continue from (fine-tuning)")
    t.add_argument("--resume", help="'latest' or a checkpoint folder")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")
    t.set_defaults(func=cmd_train_prior)

    s = sub.add_parser("sample", help="sample images from a prior")
    _sampling_args(s)
    s.add_argument("--prompt", help="text prompt (text-to-image priors)")
    s.add_argument("--prompts-file", help="one prompt per line")
    s.add_argument("--class", dest="class_", help="class id(s) or name(s), comma-separated")
    s.add_argument("--unconditional", action="store_true")
    s.add_argument("--num-images", type=int, default=4, help="images per prompt / class")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_sample)

    c = sub.add_parser("complete", help="keep the top of an image and sample the rest")
    _sampling_args(c)
    c.add_argument("--image", required=True)
    c.add_argument("--keep-top", type=float, default=0.5, help="fraction of token rows kept")
    c.add_argument("--prompt")
    c.add_argument("--class", dest="class_")
    c.add_argument("--num-images", type=int, default=4)
    c.add_argument("--out", required=True)
    c.set_defaults(func=cmd_complete)

    v = sub.add_parser("evaluate-prior", help="validation NLL, shapes prompt faithfulness, FID")
    _sampling_args(v)
    v.add_argument("--store", help="code store with a validation/ split (default: the run's)")
    v.add_argument("--num-prompts", type=int, default=200)
    v.add_argument("--seeds", help="several sampling seeds, e.g. 0,1,2: faithfulness per seed and their mean "
                                   "(default: --seed alone)")
    v.add_argument("--limit", type=int, help="validation items for the NLL")
    v.add_argument("--inception-path", help="folder or file of clean-fid's inception-2015-12-05.pt")
    v.add_argument("--no-fid", action="store_true")
    v.add_argument("--out", help="JSON file (default RUN/eval/prior.json)")
    v.set_defaults(func=cmd_evaluate_prior)

    r = sub.add_parser("report", help="report.md, report.json and plots of a pipeline folder")
    r.add_argument("--run", help="the folder scripts/run_pipeline.sh writes (--out)")
    r.add_argument("--compare", help="ROOT of scripts/compare_tokenizers.sh: one mean ± std row per tokenizer")
    r.set_defaults(func=cmd_report)
