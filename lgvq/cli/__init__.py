"""The `lgvq` command: one verb per job. Each verb module parses its arguments, calls the
application layer (lgvq.api) and prints; nothing below imports this package.

    lgvq train-tokenizer --config configs/tokenizer/vqgan_shapes.yaml [--resume latest] [key=value ...]
    lgvq evaluate-tokenizer --model RUN/model        lgvq evaluate-alignment --model RUN/model
    lgvq encode --tokenizer RUN/model --out STORE    lgvq train-prior --config configs/prior/shapes_t2i.yaml
    lgvq sample --prior RUN --prompt "a red circle"  lgvq complete --prior RUN --image in.png --prompt ...
    lgvq evaluate-prior --prior RUN                  lgvq train-captioner / train-vqa / caption / answer
    lgvq evaluate-head --model RUN                   lgvq retrieve / fill-mask --model TOKENIZER ...
    lgvq pipeline [--preset quick|full|gpu]           the main job: every stage above, then the report
    lgvq report --run DIR                            lgvq data export-shapes --out DIR --num N
    lgvq demo --run PIPELINE_DIR                     (a local web page; the demo extra)

Several processes: `accelerate launch --num_processes 2 -m lgvq train-tokenizer ...`.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from lgvq.cli import data, demo, heads, pipeline, prior, report, tokenizer
from lgvq.cli.common import HelpFormatter
from lgvq.errors import DISK_FULL, LgvqError, describe_write_error

# errors of the user's request or files: one line, exit 2 (the OS errors name the path); any
# other exception is a bug and keeps its traceback
USER_ERRORS = (LgvqError, FileNotFoundError, FileExistsError, PermissionError, IsADirectoryError,
               NotADirectoryError)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lgvq", description=__doc__.split("\n\n")[0], formatter_class=HelpFormatter)
    p.add_argument("--verbose", action="store_true",
                   help="show the libraries' warnings and progress bars that lgvq silences (or LGVQ_VERBOSE=1)")
    sub = p.add_subparsers(dest="verb", required=True)
    for module in (pipeline, tokenizer, prior, heads, report, data, demo):
        module.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.verbose:
        os.environ["LGVQ_VERBOSE"] = "1"
    else:
        for noisy in ("accelerate", "diffusers", "transformers", "datasets", "PIL"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno not in DISK_FULL:
            raise
        print(f"error: {describe_write_error(e)} while writing {e.filename or 'the output'}; free space and run the "
              f"same command again (training and encoding continue where they stopped)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
