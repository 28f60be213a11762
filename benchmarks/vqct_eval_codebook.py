"""VQCT's codebook outside training, over training seeds: a fixed dropout draw (the default,
`model.quantizer.vqct.eval_codebook: draw`) against the official dropout-free codebook (`mean`).

Trains VQCT and VQCT + LG-VQ tokenizers on shapes at the main job's tokenizer settings for each
seed, then reconstructs the same validation images with each trained model twice: with its saved
draw, and with the draw switched off (what `mean` decodes with; the weights are the same, because the
two options only differ outside training). Prints PSNR, the share of codes in use and the spread
over seeds:

    python benchmarks/vqct_eval_codebook.py --preset quick --seeds 0 1 2 --out runs/vqct_eval_codebook

Runs are kept in OUT and reused when their model is already there. One thread each.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lgvq import api
from lgvq.api.data import data_config_for
from lgvq.data.datasets import build_dataset
from lgvq.evaluation.tokenizer_eval import evaluate_tokenizer
from lgvq.tokenizers.model import VQTokenizer

PRESETS = {  # the main job's tokenizer configs (scripts/run_pipeline.sh)
    "quick": ["configs/tokenizer/vqgan_shapes.yaml", "configs/presets/quick/tokenizer.yaml"],
    "full": ["configs/tokenizer/vqgan_shapes.yaml"],
}
VQCT = "configs/tokenizer/vqct_shapes.yaml"
LGVQ = "configs/lgvq/shapes.yaml"


def train(out: Path, preset: str, vocab: Path, lg: bool, seed: int) -> Path:
    run = out / f"{'vqct_lg' if lg else 'vqct'}_seed{seed}"
    if (run / "model" / "config.json").is_file():
        return run / "model"
    configs = PRESETS[preset] + [VQCT] + ([LGVQ] if lg else [])
    return api.train("tokenizer", configs, [f"train.output_dir={run}", f"train.seed={seed}",
                                            f"model.quantizer.vqct.vocab={vocab}", "train.num_threads=1"])


def psnr_both_ways(model: Path, limit: int) -> dict:
    tok = VQTokenizer.from_pretrained(model)
    data = data_config_for(None, model)
    data.image_size = tok.config.resolution
    dataset = build_dataset(data, "validation")
    row = {}
    for mode in ("draw", "mean"):
        if mode == "mean":
            tok.quantizer.transfer.eval_mask = None  # the dropout-free codebook of the same weights
            tok.quantizer.transfer.train(False)  # drops the cached codebook
        r = evaluate_tokenizer(tok, dataset, limit=limit, compute_fid=False, progress=False)
        row[mode] = {"psnr": r["psnr"], "usage": r["codebook_usage"]}
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--tokenizers", nargs="+", choices=["vqct", "vqct_lg"], default=["vqct", "vqct_lg"])
    p.add_argument("--limit", type=int, default=500, help="validation images per evaluation")
    p.add_argument("--out", type=Path, default=Path("runs/vqct_eval_codebook"))
    args = p.parse_args()
    torch.set_num_threads(1)
    vocab = args.out / "vocab"
    if not (vocab / "vocab.json").is_file():
        api.build_vocabulary(vocab, source="encoder_vocab", max_words=128)
    table = {}
    for lg in [name == "vqct_lg" for name in args.tokenizers]:
        for seed in args.seeds:
            name = f"{'vqct_lg' if lg else 'vqct'} seed {seed}"
            table[name] = psnr_both_ways(train(args.out, args.preset, vocab, lg, seed), args.limit)
            print(name, json.dumps(table[name]), flush=True)
    print("\n| run | PSNR, fixed draw | PSNR, mean codebook | codes in use (draw / mean) |\n| --- | --- | --- | --- |")
    for name, row in table.items():
        print(f"| {name} | {row['draw']['psnr']:.2f} | {row['mean']['psnr']:.2f} | "
              f"{row['draw']['usage']:.1%} / {row['mean']['usage']:.1%} |")
    for kind in args.tokenizers:
        for mode in ("draw", "mean"):
            values = [row[mode]["psnr"] for name, row in table.items() if name.split()[0] == kind]
            spread = max(values) - min(values)
            print(f"{kind}, {mode}: mean {statistics.mean(values):.2f} dB, max - min over seeds {spread:.2f} dB")
    (args.out / "summary.json").write_text(json.dumps(table, indent=1))


if __name__ == "__main__":
    main()
