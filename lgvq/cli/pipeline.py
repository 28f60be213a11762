"""The `pipeline` verb: the main job (what scripts/run_pipeline.sh runs). It calls lgvq.mainjob
directly rather than through lgvq.api (the same functions), so this process never imports torch:
each stage runs in its own process."""

from __future__ import annotations

import argparse
import os
import shlex
import sys

from lgvq.cli.common import HelpFormatter, number


def _print(line: str) -> None:
    print(line, flush=True)


def _print_error(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def options_from(args: argparse.Namespace):
    from lgvq.mainjob import PipelineOptions

    return PipelineOptions(
        out=args.out, dataset=args.dataset, preset=args.preset, tokenizer=args.tokenizer,
        num_processes=args.num_processes, num_prompts=args.num_prompts, sample_seeds=args.sample_seeds,
        stop_after=args.stop_after, tokenizer_overrides=tuple(shlex.split(args.tokenizer_overrides)),
        prior_overrides=tuple(shlex.split(args.prior_overrides)),
        head_overrides=tuple(shlex.split(args.head_overrides)),
        data_dir=args.data_dir, sequential=args.sequential)


def cmd_pipeline(args: argparse.Namespace) -> int:
    from lgvq.mainjob import plan_pipeline
    from lgvq.mainjob.runner import execute

    plan = plan_pipeline(options_from(args))
    if args.dry_run:
        print(plan.listing(), end="")
        return 0
    print(f"report written to {execute(plan, _print, _print_error)}")
    return 0


DESCRIPTION = """\
The main job: both stages on one dataset, then evaluation and a report.

Stages: tokenizer -> [encode the code store | evaluate the tokenizer (+ alignment)] -> [text-to-image
prior, its evaluation | captioning head, VQA head, each evaluated] -> report.md / report.json /
result.json / plots. Stages in [ | ] run side by side, each on half the CPU cores (--sequential: one
after another); every stage's output is in OUT/logs/NAME.log. Running it again skips finished
stages (OUT/.stages/NAME.done) and resumes an interrupted training stage from its last checkpoint.
Each stage's wall time and peak memory go to OUT/timings.json and OUT/peak_memory.json, and into
the report.

Presets (shapes): quick, the default, runs every stage sized to about 15 minutes on 2 CPU cores
(48 px, short training: configs/presets/quick/ overlays the shapes configs); full runs the shapes
configs as they are (64 px, the quality of docs/results.md: hours on 2 CPU cores); gpu runs the
full preset's models with larger batches and fewer steps, sized for minutes on one GPU
(configs/presets/gpu/ overlays the tokenizer and prior configs; it refuses to start without a
CUDA GPU). The paper
datasets (cub, celebahq, coco, textcaps: configs/replicate/, 256 px, a GPU job) are full runs only,
read from data/NAME or --data-dir after scripts/convert_dataset.py."""


class DescriptionAsWritten(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """The description keeps its paragraphs; the options show their defaults."""


def add_parsers(sub) -> None:
    env = os.environ.get
    p = sub.add_parser("pipeline", help="the main job: train and evaluate both stages and the heads, then report",
                       description=DESCRIPTION, formatter_class=DescriptionAsWritten)
    p.add_argument("--preset", help="quick, full or gpu (default: quick on shapes, full on the paper datasets)")
    p.add_argument("--dataset", default="shapes", help="shapes (built in), cub, celebahq, coco or textcaps")
    p.add_argument("--tokenizer", default="vqgan_lg", help="vqgan, vqgan_lg, vqct, vqct_lg, cvq or cvq_lg")
    p.add_argument("--out", default="runs/pipeline", help="the run's folder")
    p.add_argument("--num-processes", type=number(int, ">= 1"), default=1,
                   help="training processes per training stage (more than 1: accelerate launch --multi_gpu)")
    p.add_argument("--num-prompts", type=number(int, ">= 1"), default=200,
                   help="validation captions the prior's faithfulness and the captioner are scored on")
    p.add_argument("--sample-seeds", default="0,1,2", help="the prior's faithfulness is the mean over these seeds")
    p.add_argument("--stop-after", default="all", help="tokenizer, prior or all: end (with the report) once "
                                                       "the tokenizer, or the prior, is trained and evaluated")
    p.add_argument("--dry-run", action="store_true", help="print each stage's command and run none")
    for stage, variable in (("tokenizer", "TOKENIZER_OVERRIDES"), ("prior", "PRIOR_OVERRIDES"),
                            ("head", "HEAD_OVERRIDES")):
        p.add_argument(f"--{stage}-overrides", default=env(variable, ""), metavar="'KEY=VALUE ...'",
                       help=f"config overrides for the {stage} stage{'s' if stage == 'head' else ''}, "
                            f"space-separated (default: ${variable})")
    p.add_argument("--data-dir", default=env("DATA_DIR"), help="a paper dataset's converted folder "
                                                             "(default: $DATA_DIR, else data/DATASET)")
    p.add_argument("--sequential", action="store_true", default=env("SEQUENTIAL") == "1",
                   help="run the stages one after another instead of two lanes side by side (or SEQUENTIAL=1)")
    p.set_defaults(func=cmd_pipeline)
