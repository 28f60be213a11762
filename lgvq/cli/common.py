"""Argument groups several verbs share, and how results are printed."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import ModuleType

from lgvq.config import within


def api() -> ModuleType:
    """The application layer (lgvq.api), imported when a verb runs rather than when the command
    starts: torch, diffusers and transformers take ~10 s to import, which `--help` need not wait for."""
    import lgvq.api

    return lgvq.api


def number(kind: type, rule: str):
    """An argparse type: an int or float within `rule` (">= 1", "(0, 1]", ...); a value outside
    stops with the option's name and the range, before anything runs."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number ({kind.__name__})") from None
        if not within(value, rule):
            raise argparse.ArgumentTypeError(f"must be {rule} (got {text})")
        return value

    parse.__name__ = kind.__name__
    return parse


class HelpFormatter(argparse.HelpFormatter):
    """--help shows each option's default (unless its help already says it, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return f"{text} (default: {action.default})".strip()


def add_train_args(p: argparse.ArgumentParser, example: str, stage_two: bool = False) -> None:
    p.add_argument("--config", required=True, action="append",
                   help=f"YAML file, e.g. {example}; repeat to overlay files (later ones win)")
    if stage_two:
        p.add_argument("--data", help="code store to train on (overrides the config's `store`)")
        p.add_argument("--init-from", help="a trained run of the same kind to continue from (fine-tuning)")
    p.add_argument("--resume", help="'latest' or a checkpoint folder")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_steps=200")


def add_eval_data_args(p: argparse.ArgumentParser, model_help: str, out_default: str, batch_size: int) -> None:
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--data", help="shapes, an imagefolder path, or a hub id (default: the run's own data)")
    p.add_argument("--limit", type=number(int, ">= 1"), help="evaluate the first N validation images (default: all)")
    p.add_argument("--batch-size", type=number(int, ">= 1"), default=batch_size)
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    p.add_argument("--out", help=f"JSON file (default: {out_default})")
    p.add_argument("overrides", nargs="*", help="data.key=value overrides")


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prior", required=True, help="a prior run folder (RUN with RUN/model and RUN/tokenizer)")
    p.add_argument("--cfg", type=number(float, ">= 0"), help="classifier-free guidance scale, 1 = none (default: the run's)")
    p.add_argument("--temperature", type=number(float, ">= 0"), help="0 = greedy (default: the run's)")
    p.add_argument("--top-k", type=number(int, ">= 0"), help="0 = no top-k filter (default: the run's)")
    p.add_argument("--top-p", type=number(float, "(0, 1]"), help="1 = no nucleus filter (default: the run's)")
    p.add_argument("--batch-size", type=number(int, ">= 1"), help="images sampled at once (default: the run's)")
    p.add_argument("--best-of", type=number(int, ">= 1"),
                   help="samples drawn per image, keeping the one the prior rates most conditional "
                        "(re-ranking; 1 = none; default: the run's)")
    p.add_argument("--rerank-with", metavar="CAPTIONER",
                   help="a captioner run trained on the prior's code store: keep the sample whose codes make the "
                        "prompt most likely under it instead (with --best-of; text priors)")
    p.add_argument("--best-of-hard", type=number(int, ">= 0"),
                   help="samples drawn in all for the images whose best of --best-of scores lowest (0 = none; "
                        "default: the run's)")
    p.add_argument("--hard-share", type=number(float, "[0, 1]"),
                   help="the share of each batch's images that --best-of-hard draws for (default: the run's)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed")
    p.add_argument("--device", help="cpu or cuda (default: cuda when available)")


def sampling_options(args: argparse.Namespace) -> dict:
    return {"cfg_scale": args.cfg, "temperature": args.temperature, "top_k": args.top_k, "top_p": args.top_p,
            "batch_size": args.batch_size, "best_of": args.best_of, "rerank_with": args.rerank_with,
            "best_of_hard": args.best_of_hard, "hard_share": args.hard_share}


def print_trained(stage: str, model: Path | None) -> int:
    """Say where a training verb exported its model (only the process that exported it)."""
    if model is not None:
        print(f"{stage} saved to {model}")
    return 0


def print_results(results, table) -> int:
    """An evaluation's record (lgvq.records) as its table, and where its JSON is."""
    print(table(results))
    print(f"results written to {results.written_to}")
    return 0
