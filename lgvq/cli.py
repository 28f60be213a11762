"""The `lgvq` command: one verb per job.

    lgvq train-tokenizer --config configs/tokenizer/vqgan_shapes.yaml [--resume latest] [key=value ...]
    lgvq evaluate-tokenizer --model RUN/model [--data shapes|FOLDER|HUB_ID] [data.key=value ...]
    lgvq evaluate-alignment --model RUN/model [--data ...]
    lgvq encode --tokenizer RUN/model --out STORE           (stage two: lgvq/cli_priors.py)
    lgvq train-prior --config configs/prior/shapes_t2i.yaml
    lgvq sample --prior RUN --prompt "a red circle" --num-images 4 --out DIR
    lgvq complete --prior RUN --image in.png --keep-top 0.5 --out DIR
    lgvq evaluate-prior --prior RUN
    lgvq train-captioner / train-vqa / caption / answer / evaluate-head    (heads: lgvq/cli_heads.py)
    lgvq data export-shapes --out DIR --num N [--num-val M]

Several processes: `accelerate launch --num_processes 2 -m lgvq train-tokenizer ...`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

log = logging.getLogger("lgvq")


class UsageError(ValueError):
    """A command line that cannot be run as given."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from lgvq.config import ConfigError
    from lgvq.data.code_store import StoreError
    from lgvq.data.datasets import DataError
    from lgvq.downstream.retrieval import NotAlignedError
    from lgvq.evaluation.shapes_score import CaptionGrammarError
    from lgvq.hub import WrongModelKindError
    from lgvq.pipelines import PromptError
    from lgvq.tokenizers.lpips import MissingWeightsError
    from lgvq.training.trainer import TrainingDiverged

    return (ConfigError, DataError, MissingWeightsError, WrongModelKindError, TrainingDiverged, UsageError,
            FileNotFoundError, StoreError, PromptError, CaptionGrammarError, NotAlignedError)


# -- train-tokenizer --------------------------------------------------------------------------
def run_training(schema, args: argparse.Namespace, make_task, what: str, overrides: list[str] | None = None) -> int:
    """The shared body of the train-* verbs: resolve the config, refuse to overwrite a run unless
    resuming, write RUN/config.yaml, train, export."""
    from lgvq.config import load_config, save_config
    from lgvq.training import checkpoint as ckpt
    from lgvq.training.trainer import Trainer

    cfg = load_config(schema, args.config, list(args.overrides) + list(overrides or []))
    run_dir = Path(cfg.train.output_dir)
    if not args.resume and ckpt.checkpoint_dirs(run_dir / "checkpoints"):
        raise UsageError(f"{run_dir} already holds checkpoints of a run; continue it with --resume latest, "
                         f"or choose another folder with train.output_dir=DIR")
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / "config.yaml")
    trainer = Trainer(make_task(cfg, run_dir), cfg.train, run_dir, resume=args.resume,
                      tracker_config=_flat_config(cfg))
    out = trainer.fit()
    if trainer.accelerator.is_main_process:
        print(f"{what} saved to {out}")
    return 0


def store_overrides(args: argparse.Namespace) -> list[str]:
    """--data / --init-from of the stage-two train verbs as config overrides."""
    return ([f"store={args.data}"] if args.data else []) + ([f"init_from={args.init_from}"] if args.init_from else [])


def cmd_train_tokenizer(args: argparse.Namespace) -> int:
    from lgvq.tokenizers.config import TokenizerRunConfig
    from lgvq.tokenizers.training import TokenizerTask

    return run_training(TokenizerRunConfig, args, lambda cfg, _: TokenizerTask(cfg), "tokenizer")


def _flat_config(cfg) -> dict:
    """Scalars only, for TensorBoard's hparams."""
    from omegaconf import OmegaConf

    flat = {}

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return flat


# -- evaluate-tokenizer -----------------------------------------------------------------------
def data_config_for(data: str | None, model_dir: Path, overrides: list[str]):
    """The DataConfig to evaluate on: the run's own (RUN/config.yaml beside RUN/model) unless
    `--data` names another source, then `data.key=value` overrides."""
    from dataclasses import asdict

    from lgvq.config import DataConfig, load_config
    from lgvq.tokenizers.config import TokenizerRunConfig

    run_config = model_dir.parent / "config.yaml"
    base = load_config(TokenizerRunConfig, run_config).data if run_config.is_file() else DataConfig()
    if data is not None:
        base = DataConfig(image_size=base.image_size)
        if data != "shapes":
            base.source, base.path = ("folder" if Path(data).is_dir() else "hub"), data
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise UsageError(f"only data.* overrides apply here, not {bad}")
    return load_config(DataConfig, None, [o[len("data."):] for o in overrides], base=asdict(base))


def cmd_evaluate_tokenizer(args: argparse.Namespace) -> int:
    import torch

    from lgvq.data.datasets import build_dataset
    from lgvq.evaluation.tokenizer_eval import evaluate_tokenizer, format_table
    from lgvq.tokenizers.model import VQTokenizer

    model_dir = Path(args.model)
    model = VQTokenizer.from_pretrained(model_dir)
    data_cfg = data_config_for(args.data, model_dir, args.overrides)
    data_cfg.image_size = model.config.resolution
    dataset = build_dataset(data_cfg, "validation")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_tokenizer(model, dataset, batch_size=args.batch_size, limit=args.limit, device=device,
                                 inception_path=args.inception_path, lpips_vgg_path=args.lpips_vgg_path,
                                 compute_fid=not args.no_fid)
    results["data"] = {"source": data_cfg.source, "path": data_cfg.path, "split": "validation"}
    return _report(results, model_dir, args.out, "tokenizer.json", format_table)


def _report(results: dict, model_dir: Path, out: str | None, default_name: str, table) -> int:
    """Print the table and write the JSON (default RUN/eval/NAME beside RUN/model)."""
    from lgvq.evaluation.tokenizer_eval import write_results

    results["model"] = str(model_dir)
    path = Path(out) if out else model_dir.parent / "eval" / default_name
    write_results(results, path)
    print(table(results))
    print(f"results written to {path}")
    return 0


# -- evaluate-alignment -------------------------------------------------------------------------
def cmd_evaluate_alignment(args: argparse.Namespace) -> int:
    import torch

    from lgvq.data.datasets import build_dataset
    from lgvq.evaluation.alignment_eval import (
        evaluate_alignment,
        format_alignment_table,
    )
    from lgvq.text.encoder import FrozenTextEncoder
    from lgvq.tokenizers.model import VQTokenizer

    model_dir = Path(args.model)
    model = VQTokenizer.from_pretrained(model_dir)
    spec = model.config.alignment
    if not spec:
        raise UsageError(f"{model_dir} holds a tokenizer without alignment modules; evaluate-alignment needs "
                         f"one trained with alignment: lgvq (and lgvq.keep_in_export=true)")
    data_cfg = data_config_for(args.data, model_dir, args.overrides)
    data_cfg.image_size = model.config.resolution
    dataset = build_dataset(data_cfg, "validation", require_captions=True)
    lg = spec["config"]
    encoder = FrozenTextEncoder(lg["text_encoder"], lg["max_length"], lg["pooling"])
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    results = evaluate_alignment(model, dataset, encoder, batch_size=args.batch_size, limit=args.limit,
                                 device=device)
    return _report(results, model_dir, args.out, "alignment.json", format_alignment_table)


# -- build-vocab ----------------------------------------------------------------------------------
def cmd_build_vocab(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from lgvq.config import DataConfig, load_config
    from lgvq.data.datasets import build_dataset
    from lgvq.text.vocab import build_vocab

    base = DataConfig()
    if args.data != "shapes":
        base.source, base.path = ("folder" if Path(args.data).is_dir() else "hub"), args.data
    bad = [o for o in args.overrides if not o.startswith("data.")]
    if bad:
        raise UsageError(f"only data.* overrides apply here, not {bad}")
    data_cfg = load_config(DataConfig, None, [o[len("data."):] for o in args.overrides], base=asdict(base))
    captions = build_dataset(data_cfg, "train", require_captions=args.source == "captions").all_captions()
    vocab = build_vocab(captions, args.out, args.source, args.text_encoder, args.min_count, args.max_words,
                        args.tagger)
    print(f"{len(vocab.adjectives)} adjectives, {len(vocab.nouns)} nouns, {len(vocab.edges)} adjective-noun edges "
          f"written to {args.out}")
    return 0


# -- data ---------------------------------------------------------------------------------------
def cmd_export_shapes(args: argparse.Namespace) -> int:
    from lgvq.data.export import export_shapes

    counts = export_shapes(args.out, args.num, args.num_val, args.image_size, args.seed)
    print(f"wrote {counts} to {args.out}")
    return 0


def _evaluation_args(parser: argparse.ArgumentParser, model_help: str, out_default: str, batch_size: int) -> None:
    parser.add_argument("--model", required=True, help=model_help)
    parser.add_argument("--data", help="shapes, an imagefolder path, or a hub id (default: the run's own data)")
    parser.add_argument("--limit", type=int, help="evaluate the first N validation images")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--out", help=f"JSON file (default {out_default})")
    parser.add_argument("overrides", nargs="*", help="data.key=value overrides")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lgvq", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="verb", required=True)

    t = sub.add_parser("train-tokenizer", help="train a stage-one VQ tokenizer")
    t.add_argument("--config", required=True, action="append",
                   help="YAML file, e.g. configs/tokenizer/vqgan_shapes.yaml; repeat to overlay files "
                        "(e.g. --config configs/lgvq/cub.yaml after the base config)")
    t.add_argument("--resume", help="'latest' or a checkpoint folder")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")
    t.set_defaults(func=cmd_train_tokenizer)

    e = sub.add_parser("evaluate-tokenizer", help="PSNR, SSIM, LPIPS, rFID and codebook usage of a tokenizer")
    _evaluation_args(e, "a saved tokenizer folder (RUN/model)", "RUN/eval/tokenizer.json", batch_size=64)
    e.add_argument("--inception-path", help="folder or file of clean-fid's inception-2015-12-05.pt")
    e.add_argument("--lpips-vgg-path", help="torchvision's vgg16-397923af.pth")
    e.add_argument("--no-fid", action="store_true", help="skip rFID")
    e.set_defaults(func=cmd_evaluate_tokenizer)

    a = sub.add_parser("evaluate-alignment", help="LG-VQ diagnostics: retrieval, masked-word recall, relation MSE")
    _evaluation_args(a, "a tokenizer trained with alignment: lgvq (RUN/model)", "RUN/eval/alignment.json",
                     batch_size=100)
    a.set_defaults(func=cmd_evaluate_alignment)

    v = sub.add_parser("build-vocab", help="VQCT's adjective / noun vocabulary, edges and word vectors")
    v.add_argument("--data", default="shapes", help="shapes, an imagefolder path, or a hub id (captions to mine)")
    v.add_argument("--out", required=True)
    v.add_argument("--source", choices=["captions", "encoder_vocab"], default="captions",
                   help="captions: the paper's mining; encoder_vocab: the text encoder's whole words")
    v.add_argument("--min-count", type=int, default=11, help="captions: keep words seen this often (official: > 10)")
    v.add_argument("--max-words", type=int, default=4096, help="encoder_vocab: vocabulary size")
    v.add_argument("--text-encoder", default="minilm")
    v.add_argument("--tagger", choices=["lexicon", "nltk"], default="lexicon")
    v.add_argument("overrides", nargs="*", help="data.key=value overrides")
    v.set_defaults(func=cmd_build_vocab)

    from lgvq import cli_heads, cli_priors

    cli_priors.add_parsers(sub)
    cli_heads.add_parsers(sub)

    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_verb", required=True)
    x = dsub.add_parser("export-shapes", help="write the built-in shapes data as an imagefolder")
    x.add_argument("--out", required=True)
    x.add_argument("--num", type=int, required=True, help="training images")
    x.add_argument("--num-val", type=int, default=0, help="validation images")
    x.add_argument("--image-size", type=int, default=64)
    x.add_argument("--seed", type=int, default=0)
    x.set_defaults(func=cmd_export_shapes)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for noisy in ("accelerate", "diffusers", "transformers", "datasets", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except _user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
