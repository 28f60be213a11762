#!/usr/bin/env python
"""Convert a paper dataset's raw release to the imagefolder layout lgvq reads
(OUT/train, OUT/validation: images + metadata.jsonl). Then train with
`data.source=folder data.path=OUT`.

    python scripts/convert_dataset.py cub --cub CUB_200_2011 --captions cvpr2016_cub --out data/cub
    python scripts/convert_dataset.py celebahq --images CelebA-HQ-img --captions celeba-caption \
        [--test-list test/filenames.pickle] --out data/celebahq
    python scripts/convert_dataset.py coco --coco COCO_ROOT --out data/coco          (annotations/, train2014/, val2014/)
    python scripts/convert_dataset.py cocoqa --cocoqa cocoqa --coco COCO_ROOT --out data/cocoqa
    python scripts/convert_dataset.py textcaps --textcaps TEXTCAPS_ROOT --out data/textcaps
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lgvq.data import converters


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="dataset", required=True)
    c = sub.add_parser("cub", help="CUB-200-2011 with Reed et al. captions")
    c.add_argument("--cub", required=True, help="the unpacked CUB_200_2011 folder")
    c.add_argument("--captions", required=True, help="Reed et al.'s cvpr2016_cub folder (holds text_c10/)")
    h = sub.add_parser("celebahq", help="CelebA-HQ with MM-CelebA-HQ captions")
    h.add_argument("--images", required=True, help="CelebA-HQ images named 0.jpg ... 29999.jpg")
    h.add_argument("--captions", required=True, help="MM-CelebA-HQ's celeba-caption folder")
    h.add_argument("--test-list", help="TediGAN's test/filenames.pickle or a text file of test names")
    h.add_argument("--num-train", type=int, default=24000, help="without --test-list: the first N train")
    m = sub.add_parser("coco", help="MS-COCO captions")
    m.add_argument("--coco", required=True, help="COCO root with annotations/, train2014/, val2014/")
    m.add_argument("--year", default="2014")
    q = sub.add_parser("cocoqa", help="COCO-QA questions on COCO 2014 images")
    q.add_argument("--cocoqa", required=True, help="the unpacked COCO-QA release (train/, test/)")
    q.add_argument("--coco", required=True, help="COCO root with train2014/ and val2014/")
    t = sub.add_parser("textcaps", help="TextCaps 0.1 (TextVQA images)")
    t.add_argument("--textcaps", required=True, help="folder with TextCaps_0.1_{train,val}.json and train_images/")
    for s in (c, h, m, q, t):
        s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    out = Path(args.out)
    try:
        if args.dataset == "cub":
            counts = converters.convert_cub(Path(args.cub), Path(args.captions), out)
        elif args.dataset == "celebahq":
            test = Path(args.test_list) if args.test_list else None
            counts = converters.convert_celebahq(Path(args.images), Path(args.captions), out, test, args.num_train)
        elif args.dataset == "coco":
            counts = converters.convert_coco(Path(args.coco), out, args.year)
        elif args.dataset == "cocoqa":
            counts = converters.convert_cocoqa(Path(args.cocoqa), Path(args.coco), out)
        else:
            counts = converters.convert_textcaps(Path(args.textcaps), out)
    except converters.RawDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {counts} to {out}; train with data.source=folder data.path={out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
