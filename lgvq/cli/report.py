"""The `report` verb: a pipeline folder's report, or the comparison table of several."""

from __future__ import annotations

import argparse
from pathlib import Path

from lgvq.cli.common import HelpFormatter
from lgvq.compare import write_comparison
from lgvq.errors import UsageError
from lgvq.report import build_report


def cmd_report(args: argparse.Namespace) -> int:
    if args.compare:
        print(write_comparison(args.compare))
        root = Path(args.compare)
        print(f"written: {root / 'table.md'}, {root / 'compare.json'}, {root / 'compare.png'}")
        return 0
    if not args.run:
        raise UsageError("give --run DIR (one pipeline folder) or --compare ROOT (ROOT/TOKENIZER/seedN folders)")
    print(f"report written to {build_report(args.run)}")
    return 0


def add_parsers(sub) -> None:
    r = sub.add_parser("report", help="report.md, report.json and plots of a pipeline folder",
                       formatter_class=HelpFormatter)
    r.add_argument("--run", help="the folder scripts/run_pipeline.sh writes (--out)")
    r.add_argument("--compare", help="ROOT of scripts/compare_tokenizers.sh: one mean ± std row per tokenizer, the "
                                     "paired differences with and without LG-VQ, compare.json and compare.png")
    r.set_defaults(func=cmd_report)
