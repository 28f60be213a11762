"""Fine-tuning benchmark on shapes: does a fine-tuned prior learn a colour it never saw, and what
does it forget? Writes OUT/finetune.json and prints a table.

    python benchmarks/finetune.py --tokenizer RUN/model --out runs/finetune_bench \
        [--held-out purple] [--pretrain-steps 1000] [--finetune-steps 300] [--conditioning class,text]

For each conditioning (class labels, text prompts):
  pretrain   a prior on the data without any image whose captions mention the held-out word
             (data.exclude_words: for purple, 4 of the 24 classes; captions never say purple)
  finetune   that prior on the full data, --finetune-steps more:
               plain    the README's recipe as it was (new class rows keep their random init)
               recipe   new class rows drawn around the trained ones, 20 % of each batch replayed
                        from the old data, the first 10 % of the steps train only the condition
  scratch    a prior on the full data for pretrain + finetune steps (the same total compute)
Faithfulness by the shapes scorer, on prompts that name the held-out word (new) and on the others
(old): text priors on the validation captions, class priors on "a {class name}", --images-per-class
samples each; each mean of --seeds sampling seeds. `--smoke` runs toy sizes in about a minute.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
import torch

from lgvq.api import encode_store, train
from lgvq.config import DataConfig
from lgvq.data.code_store import CodeStore
from lgvq.data.datasets import build_dataset
from lgvq.pipelines import load_pipeline

PRIOR = ["model.dim=128", "model.depth=4", "model.heads=4", "model.text_layers=2", "train.batch_size=32",
         "train.lr=1e-3", "train.warmup_steps=100", "train.checkpoint_every=100000", "train.num_threads=1"]
SMOKE_PRIOR = ["model.dim=32", "model.depth=1", "model.heads=2", "model.text_layers=0", "train.batch_size=8",
               "train.warmup_steps=1", "train.checkpoint_every=100000", "train.num_threads=1", "sample.batch_size=8"]
VARIANTS = {
    "plain": ["finetune.new_class_init=random"],
    "recipe": ["finetune.new_class_init=mean", "finetune.replay_fraction=0.2"],  # + store and freeze steps below
}


def mentions(word: str, text: str) -> bool:
    return re.search(rf"\b{re.escape(word)}\b", text, re.IGNORECASE) is not None


def faithfulness(run: Path, conditioning: str, word: str, data: DataConfig, seeds: list[int], num_prompts: int,
                 per_class: int) -> dict:
    """Faithful rates on prompts that name `word` (new) and on the others (old), mean over seeds."""
    pipe = load_pipeline(run, device="cpu")
    validation = build_dataset(data, "validation")
    scorer = validation.scorer()
    if conditioning == "text":
        prompts = scorer.prompts(num_prompts)
    else:
        prompts = [f"a {name}" for name in validation.class_names() for _ in range(per_class)]
    rates = {"new": [], "old": []}
    for seed in seeds:
        if conditioning == "text":
            images = pipe(prompts, num_images=1, seed=seed, progress=False)
        else:
            names = validation.class_names()
            images = pipe(names, num_images=per_class, seed=seed, progress=False)
        hits = [scorer.score(np.asarray(im.convert("RGB")), p)[0] for im, p in zip(images, prompts)]
        for part, keep in (("new", True), ("old", False)):
            chosen = [h for h, p in zip(hits, prompts) if mentions(word, p) == keep]
            rates[part].append(float(np.mean(chosen)) if chosen else float("nan"))
    counts = {part: sum(mentions(word, p) == (part == "new") for p in prompts) for part in ("new", "old")}
    return {part: float(np.mean(v)) for part, v in rates.items()} | {f"count_{k}": v for k, v in counts.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", required=True, help="a trained tokenizer (RUN/model) of shapes images")
    p.add_argument("--out", default="runs/finetune_bench")
    p.add_argument("--held-out", default="purple", help="the word (colour) kept out of pretraining")
    p.add_argument("--conditioning", default="class,text")
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--num-train", type=int, default=8000, help="shapes training images (both stores)")
    p.add_argument("--num-prompts", type=int, default=200, help="validation prompts (text priors)")
    p.add_argument("--images-per-class", type=int, default=10, help="samples per class (class priors)")
    p.add_argument("--seeds", default="0,1,2", help="sampling seeds")
    p.add_argument("--smoke", action="store_true", help="toy sizes, to check the script itself")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    prior = SMOKE_PRIOR if args.smoke else PRIOR
    num_train, num_val = (48, 12) if args.smoke else (args.num_train, 500)
    data = [f"data.num_train={num_train}", f"data.num_val={num_val}"]
    stores = {"old": out / "codes_old", "new": out / "codes_new"}
    encode_store(args.tokenizer, stores["old"], data="shapes", overrides=[*data, f"data.exclude_words=[{args.held_out}]"],
                 text_max_length=24, batch_size=64)
    encode_store(args.tokenizer, stores["new"], data="shapes", overrides=data, text_max_length=24, batch_size=64)
    data_cfg = CodeStore(stores["new"] / "validation").data_config()
    freeze = max(1, args.finetune_steps // 10)
    settings = {"held_out": args.held_out, "pretrain_steps": args.pretrain_steps,
                "finetune_steps": args.finetune_steps, "num_train": num_train, "seeds": seeds}
    report = out / "finetune.json"
    earlier = json.loads(report.read_text()) if report.is_file() else {}
    # runs of other conditionings from an earlier call with the same settings are kept
    same = all(earlier.get(k) == v for k, v in settings.items())
    results = settings | {"runs": earlier.get("runs", {}) if same else {}}
    config = ["configs/prior/shapes_t2i.yaml"]
    for conditioning in args.conditioning.split(","):
        common = [*prior, f"model.conditioning={conditioning}"]
        plan = {
            "pretrain": (stores["old"], None, args.pretrain_steps, []),
            "finetune plain": (stores["new"], "pretrain", args.finetune_steps, VARIANTS["plain"]),
            "finetune recipe": (stores["new"], "pretrain", args.finetune_steps,
                                [*VARIANTS["recipe"], f"finetune.replay_store={stores['old']}",
                                 f"finetune.freeze_backbone_steps={freeze}"]),
            "scratch": (stores["new"], None, args.pretrain_steps + args.finetune_steps, []),
        }
        for name, (store, init, steps, extra) in plan.items():
            run = out / conditioning / name.replace(" ", "_")
            start = time.monotonic()
            if not (run / "model").is_dir():
                train("prior", config, [*common, *extra, f"train.max_steps={steps}", f"train.output_dir={run}"],
                      store=str(store), init_from=str(out / conditioning / init) if init else None)
            minutes = (time.monotonic() - start) / 60
            rates = faithfulness(run, conditioning, args.held_out, data_cfg, seeds, args.num_prompts,
                                 args.images_per_class)
            entry = results["runs"].get(f"{conditioning} / {name}", {})
            trained_now = minutes > 0.05  # a run found already trained keeps the minutes it took
            results["runs"][f"{conditioning} / {name}"] = rates | {
                "steps": steps, "train_minutes": round(minutes, 1) if trained_now else entry.get("train_minutes")}
            report.write_text(json.dumps(results, indent=2))
    print(f"held out: {args.held_out}; faithful on prompts naming it (new) and on the others (old), "
          f"mean of sampling seeds {args.seeds}")
    print("| prior | steps | new | old | train minutes |\n| --- | --- | --- | --- | --- |")
    for name, r in results["runs"].items():
        print(f"| {name} | {r['steps']} | {r['new']:.1%} ({r['count_new']}) | {r['old']:.1%} ({r['count_old']}) | "
              f"{r['train_minutes'] if r['train_minutes'] is not None else 'n/a'} |")


if __name__ == "__main__":
    main()
