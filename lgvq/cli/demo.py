"""The `demo` verb: a local Gradio page over trained runs (needs the `demo` extra)."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

from lgvq.cli.common import HelpFormatter, number
from lgvq.demo_caps import MAX_IMAGES, MAX_PIXELS, MAX_QUEUE, MAX_UPLOAD
from lgvq.errors import UsageError


def cmd_demo(args: argparse.Namespace) -> int:
    if importlib.util.find_spec("gradio") is None:
        raise UsageError('lgvq demo needs Gradio: pip install -e ".[demo]"')
    from lgvq.demo import DemoRuns, build_demo, launch_demo, runs_of

    runs = runs_of(args.run) if args.run else DemoRuns()
    for name in ("prior", "captioner", "vqa", "tokenizer"):
        if getattr(args, name):
            setattr(runs, name, Path(getattr(args, name)))
    if not any(vars(runs).values()):
        raise UsageError("give --run PIPELINE_DIR, or at least one of --prior, --captioner, --vqa, --tokenizer")
    from lgvq.devices import resolve_device

    demo = build_demo(runs, device=resolve_device(args.device), concurrency=args.concurrency)
    print(f"lgvq demo on http://{args.host}:{args.port} (Ctrl-C stops it)")
    launch_demo(demo, args.host, args.port, args.share)
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("demo", help="a local web page to try trained runs (text to image, caption, ask, complete, "
                                    "tokens)", formatter_class=HelpFormatter,
                       description="Starts a Gradio page on this machine. Needs the demo extra: "
                                   'pip install -e ".[demo]". Caps that keep a shared machine serving: '
                                   f"at most {MAX_IMAGES} images (completions) a request, uploads up to "
                                   f"{MAX_UPLOAD} and {MAX_PIXELS:,} pixels, {MAX_QUEUE} requests waiting "
                                   f"(more are turned away); --concurrency requests run the models at once.")
    d.add_argument("--run", help="a scripts/run_pipeline.sh output folder (its prior, heads and tokenizer)")
    d.add_argument("--prior", help="a prior run (overrides the pipeline's)")
    d.add_argument("--captioner", help="a captioning head run")
    d.add_argument("--vqa", help="a VQA head run")
    d.add_argument("--tokenizer", help="a tokenizer model folder (RUN/model) for the tokens tab")
    d.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 opens it to the network)")
    d.add_argument("--port", type=number(int, ">= 1"), default=7860)
    d.add_argument("--share", action="store_true", help="ask Gradio for a public sharing link")
    d.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    d.add_argument("--concurrency", type=number(int, ">= 1"),
                   help="requests that run the models at once, all tabs together (default: one per 8 cores, "
                        "at most 4)")
    d.set_defaults(func=cmd_demo)
