"""The `data` verbs: dataset utilities."""

from __future__ import annotations

import argparse

from lgvq.cli.common import HelpFormatter, number
from lgvq.data.export import export_shapes


def cmd_export_shapes(args: argparse.Namespace) -> int:
    counts = export_shapes(args.out, args.num, args.num_val, args.image_size, args.seed)
    print(f"wrote {counts} to {args.out}")
    return 0


def add_parsers(sub) -> None:
    d = sub.add_parser("data", help="dataset utilities", formatter_class=HelpFormatter)
    dsub = d.add_subparsers(dest="data_verb", required=True)
    x = dsub.add_parser("export-shapes", help="write the built-in shapes data as an imagefolder",
                        formatter_class=HelpFormatter)
    x.add_argument("--out", required=True)
    x.add_argument("--num", type=number(int, ">= 1"), required=True, help="training images")
    x.add_argument("--num-val", type=number(int, ">= 0"), default=0, help="validation images")
    x.add_argument("--image-size", type=number(int, ">= 32"), default=64, help="canvas side in pixels")
    x.add_argument("--seed", type=int, default=0, help="data seed (sample i depends on seed, split, i)")
    x.set_defaults(func=cmd_export_shapes)
