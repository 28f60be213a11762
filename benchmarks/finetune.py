"""Fine-tuning benchmark on shapes: does a fine-tuned prior learn classes it never saw (a colour
and a colour-shape pair), and what does it forget? Writes OUT/finetune.json and prints a table.

    python benchmarks/finetune.py --out runs/finetune_bench [--tokenizer RUN/model] \
        [--held-out "purple,orange triangle"] [--pretrain-steps 1000] [--finetune-steps 300] \
        [--conditioning class,text] [--variants plain,focus25,focus75] [--train-seeds 0,1,2]

The tokenizer: without --tokenizer, the benchmark trains its own into OUT/tokenizer (once; kept
across runs), the shapes VQ-GAN at 32 px:
    lgvq train-tokenizer --config configs/tokenizer/vqgan_shapes.yaml data.image_size=32 \
        train.output_dir=OUT/tokenizer
For each conditioning (class labels, text prompts):
  pretrain   a prior on the data without any image whose captions mention a held-out word or
             class name (data.exclude_words: purple is 3 of the 24 classes, orange triangle a
             fourth; captions never say purple, and never pair orange with triangle), one per
             training seed
  finetune   that prior on the full data, --finetune-steps more (--variants chooses):
               plain    no fine-tuning option (new class rows keep their random init)
               mean     new class rows drawn around the trained ones
               names    a new class row starts at the mean of the trained rows whose names share
                        a word with it ("purple circle": the average circle)
               replay   20 % of each batch from the old data
               warm     the first 10 % of the steps train only the condition
               recipe   mean + replay + warm
               focus    half of each batch from the images new to the prior (a class it never
                        trained on, a caption with a word it never read)
               focus12, focus25, focus75  an eighth / a quarter / three quarters of each batch from
                        the new images
               focus25-lr3e-4  focus25 at lr 3e-4 instead of 1e-3
               focus25+replay  a quarter new, a fifth replayed from the old data
               recipe+focus  the recipe, and a quarter of each batch from the new images
             (the defaults: focus25 for class priors, focus75 for text priors)
  scratch    a prior on the full data for pretrain + finetune steps (the same total compute)
Faithfulness by the shapes scorer, on prompts that name the held-out word (new) and on the others
(old): text priors on the validation captions, class priors on "a {class name}", --images-per-class
samples each; each mean of --seeds sampling seeds. Runs already trained and evaluated with the same
settings are kept. `--smoke` runs toy sizes in about a minute.
"""

from __future__ import annotations

import argparse
import fcntl
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
from lgvq.evaluation.results import write_results
from lgvq.pipelines import load_pipeline
from lgvq.runs import RunDir

PRIOR = ["model.dim=128", "model.depth=4", "model.heads=4", "model.text_layers=2", "train.batch_size=32",
         "train.lr=1e-3", "train.warmup_steps=100", "train.checkpoint_every=100000", "train.num_threads=1"]
SMOKE_PRIOR = ["model.dim=32", "model.depth=1", "model.heads=2", "model.text_layers=0", "train.batch_size=8",
               "train.warmup_steps=1", "train.checkpoint_every=100000", "train.num_threads=1", "sample.batch_size=8"]
# Each variant pins every fine-tuning option, so that its rows keep their meaning when the defaults
# change. "{old_store}" and "{freeze}" are filled in per run.
NOTHING = ["finetune.new_class_init=random", "finetune.new_data_fraction=0"]
WARM = ["finetune.freeze_backbone_steps={freeze}"]
REPLAY = ["finetune.replay_fraction=0.2", "finetune.replay_store={old_store}"]
VARIANTS = {
    "plain": NOTHING,  # the README's recipe before these options
    "mean": [*NOTHING, "finetune.new_class_init=mean"],
    "names": [*NOTHING, "finetune.new_class_init=names"],
    "replay": [*NOTHING, *REPLAY],
    "warm": [*NOTHING, *WARM],
    "recipe": [*NOTHING, "finetune.new_class_init=mean", *REPLAY, *WARM],
    "focus": [*NOTHING, "finetune.new_data_fraction=0.5"],
    "focus25": [*NOTHING, "finetune.new_data_fraction=0.25"],
    "focus75": [*NOTHING, "finetune.new_data_fraction=0.75"],
    "focus25+replay": [*NOTHING, "finetune.new_data_fraction=0.25", *REPLAY],
    "focus12": [*NOTHING, "finetune.new_data_fraction=0.125"],
    "focus25-lr3e-4": [*NOTHING, "finetune.new_data_fraction=0.25", "train.lr=3e-4"],
    "recipe+focus": [*NOTHING, "finetune.new_class_init=mean", *REPLAY, *WARM, "finetune.new_data_fraction=0.25"],
}


TRAINING_SETTINGS = ("held_out", "pretrain_steps", "finetune_steps", "num_train")
# the tokenizer the benchmark trains when none is given (the docstring's command)
TOKENIZER_CONFIG = ["configs/tokenizer/vqgan_shapes.yaml"]
TOKENIZER_OVERRIDES = ["data.image_size=32", "train.num_threads=1"]


def mentions(held_out: list[str], text: str) -> bool:
    """Whether `text` names any held-out word or class name (whole words, any case)."""
    return any(re.search(rf"\b{re.escape(name)}\b", text, re.IGNORECASE) for name in held_out)


def benchmark_tokenizer(out: Path) -> Path:
    """OUT/tokenizer/model, trained with TOKENIZER_CONFIG the first time."""
    run = RunDir(out / "tokenizer")
    if not run.model.is_dir():
        train("tokenizer", TOKENIZER_CONFIG, [*TOKENIZER_OVERRIDES, f"train.output_dir={run.root}"], resume="latest")
    return run.model


def faithfulness(run: Path, conditioning: str, held_out: list[str], data: DataConfig, seeds: list[int],
                 num_prompts: int, per_class: int) -> dict:
    """Faithful rates on prompts that name a held-out word or class (new) and on the others (old),
    mean over seeds."""
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
            chosen = [h for h, p in zip(hits, prompts) if mentions(held_out, p) == keep]
            rates[part].append(float(np.mean(chosen)) if chosen else float("nan"))
    counts = {part: sum(mentions(held_out, p) == (part == "new") for p in prompts) for part in ("new", "old")}
    return {part: float(np.mean(v)) for part, v in rates.items()} | {f"count_{k}": v for k, v in counts.items()}


def read_results(report: Path, settings: dict) -> dict:
    """OUT/finetune.json as far as it was measured with these settings: runs trained with other
    settings are dropped; runs only evaluated with others keep their steps and minutes."""
    earlier = json.loads(report.read_text()) if report.is_file() else {}
    same = {k: earlier.get(k) == v for k, v in settings.items()}
    runs = earlier.get("runs", {}) if all(same[k] for k in TRAINING_SETTINGS) else {}
    if not all(same.values()):
        runs = {k: {"steps": r["steps"], "train_minutes": r.get("train_minutes")} for k, r in runs.items()}
    return settings | {"runs": runs}


def record_run(report: Path, settings: dict, key: str, entry: dict) -> None:
    """Add one run to OUT/finetune.json under a lock (the other conditioning may run beside this one)."""
    with open(report.with_name(".finetune.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_results(report, settings)
        results["runs"][key] = entry
        write_results(results, report)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer", help="a trained tokenizer (RUN/model) of shapes images (default: train the "
                                       "benchmark's own into OUT/tokenizer)")
    p.add_argument("--out", default="runs/finetune_bench")
    p.add_argument("--held-out", default="purple,orange triangle",
                   help="words or class names kept out of pretraining, comma-separated (default: 4 of 24 classes)")
    p.add_argument("--conditioning", default="class,text")
    p.add_argument("--variants", default="plain,focus25,focus75",
                   help=f"fine-tuning variants, of {', '.join(VARIANTS)}")
    p.add_argument("--pretrain-steps", type=int, default=1000)
    p.add_argument("--finetune-steps", type=int, default=300)
    p.add_argument("--num-train", type=int, default=8000, help="shapes training images (both stores)")
    p.add_argument("--num-prompts", type=int, default=500, help="validation prompts (text priors)")
    p.add_argument("--images-per-class", type=int, default=20, help="samples per class (class priors)")
    p.add_argument("--seeds", default="0,1,2", help="sampling seeds")
    p.add_argument("--train-seeds", default="0", help="training seeds of every prior (each row: their mean; "
                   "seed s fine-tunes the prior pretrained with seed s)")
    p.add_argument("--smoke", action="store_true", help="toy sizes, to check the script itself")
    args = p.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    prior = SMOKE_PRIOR if args.smoke else PRIOR
    num_train, num_val = (48, 12) if args.smoke else (args.num_train, 500)
    data = [f"data.num_train={num_train}", f"data.num_val={num_val}"]
    held_out = [name.strip() for name in args.held_out.split(",") if name.strip()]
    tokenizer = args.tokenizer or benchmark_tokenizer(out)
    stores = {"old": out / "codes_old", "new": out / "codes_new"}
    without = f"data.exclude_words=[{', '.join(held_out)}]"
    encode_store(tokenizer, stores["old"], data="shapes", overrides=[*data, without], text_max_length=24, batch_size=64)
    encode_store(tokenizer, stores["new"], data="shapes", overrides=data, text_max_length=24, batch_size=64)
    data_cfg = CodeStore(stores["new"] / "validation").data_config()
    freeze = max(1, args.finetune_steps // 10)
    settings = {"held_out": args.held_out, "pretrain_steps": args.pretrain_steps,
                "finetune_steps": args.finetune_steps, "num_train": num_train, "seeds": seeds,
                "num_prompts": args.num_prompts, "images_per_class": args.images_per_class}
    report = out / "finetune.json"
    config = ["configs/prior/shapes_t2i.yaml"]
    for conditioning in args.conditioning.split(","):
        common = [*prior, f"model.conditioning={conditioning}"]
        plan = {}
        for train_seed in (int(s) for s in args.train_seeds.split(",")):
            suffix, seed = (f" seed{train_seed}", [f"train.seed={train_seed}"]) if train_seed else ("", [])
            # each training seed fine-tunes its own pretrained prior: forgetting is paired
            plan[f"pretrain{suffix}"] = (stores["old"], None, args.pretrain_steps, seed)
            for variant in args.variants.split(","):
                extra = [o.format(old_store=stores["old"], freeze=freeze) for o in VARIANTS[variant]]
                plan[f"finetune {variant}{suffix}"] = (stores["new"], f"pretrain{suffix}", args.finetune_steps,
                                                       [*extra, *seed])
            plan[f"scratch{suffix}"] = (stores["new"], None, args.pretrain_steps + args.finetune_steps, seed)
        for name, (store, init, steps, extra) in plan.items():
            run, key = out / conditioning / name.replace(" ", "_"), f"{conditioning} / {name}"
            init = init.replace(" ", "_") if init else None
            entry = read_results(report, settings)["runs"].get(key, {})
            if (run / "model").is_dir() and "new" in entry:
                continue  # trained and evaluated with these settings
            start = time.monotonic()
            if not (run / "model").is_dir():
                train("prior", config, [*common, *extra, f"train.max_steps={steps}", f"train.output_dir={run}"],
                      store=str(store), init_from=str(out / conditioning / init) if init else None)
            minutes = (time.monotonic() - start) / 60
            rates = faithfulness(run, conditioning, held_out, data_cfg, seeds, args.num_prompts,
                                 args.images_per_class)
            trained_now = minutes > 0.05  # a run found already trained keeps the minutes it took
            entry = rates | {"steps": steps,
                             "train_minutes": round(minutes, 1) if trained_now else entry.get("train_minutes")}
            record_run(report, settings, key, entry)
    print_table(read_results(report, settings)["runs"], args)


def print_table(runs: dict, args) -> None:
    """One row per prior and variant: the mean over its training seeds (each seed's in brackets), and
    for the old classes the worst seed beside the mean."""
    groups: dict[str, list[dict]] = {}
    for name, r in runs.items():
        if "new" not in r:
            continue  # trained, not evaluated with these settings
        groups.setdefault(re.sub(r" seed\d+$", "", name), []).append(r)
    print(f"held out: {args.held_out}; faithful on prompts naming them (new) and on the others (old), mean of "
          f"sampling seeds {args.seeds}; a row with several training seeds gives their mean and (each seed's); "
          f"old change: a fine-tuned prior's old rate minus that of the prior it started from (same seed)")
    print("| prior | steps | training seeds | new | old | old, worst seed | old change | old change, worst seed "
          "| train minutes |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    order = ["pretrain", *(f"finetune {v}" for v in VARIANTS), "scratch"]  # rows within a conditioning
    for name in sorted(groups, key=lambda n: (n.split(" / ")[0], order.index(n.split(" / ")[1]))):
        rs = groups[name]

        def rate(part: str) -> str:
            each = [r[part] for r in rs]
            return f"{np.mean(each):.1%}" + (f" ({', '.join(f'{v:.1%}' for v in each)})" if len(each) > 1 else "")

        changes = old_changes(runs, name)
        change = (f"{np.mean(changes) * 100:+.1f}" + (f" ({', '.join(f'{c * 100:+.1f}' for c in changes)})"
                                                     if len(changes) > 1 else "")) if changes else ""
        worst_change = f"{min(changes) * 100:+.1f}" if changes else ""
        minutes = [r["train_minutes"] for r in rs if r.get("train_minutes") is not None]
        print(f"| {name} | {rs[0]['steps']} | {len(rs)} | {rate('new')} | {rate('old')} | "
              f"{min(r['old'] for r in rs):.1%} | {change} | {worst_change} | "
              f"{f'{np.mean(minutes):.1f}' if minutes else 'n/a'} |")


def old_changes(runs: dict, name: str) -> list[float]:
    """Each training seed's old-rate change of a fine-tuned row against its own pretrained prior."""
    conditioning, prior = name.split(" / ")
    if not prior.startswith("finetune "):
        return []
    changes = []
    for key, r in runs.items():
        if re.sub(r" seed\d+$", "", key) == name and "old" in r:
            seed = key[len(name):]  # "" or " seedN"
            pretrain = runs.get(f"{conditioning} / pretrain{seed}", {})
            if "old" in pretrain:
                changes.append(r["old"] - pretrain["old"])
    return changes


if __name__ == "__main__":
    main()
