"""A prior lever judged at equal CPU time: faithfulness (one / two objects) against training
CPU-minutes, for a baseline and each lever, on the same code store.

    python benchmarks/time_to_quality.py --store STORE --out runs/ttq \
        --variant baseline= --variant qk="model.qk_norm=true train.lr=2e-3" \
        --variant rerank4="sample.best_of=4" [--minutes 2,4,8] [--seeds 0,1,2] [--num-prompts 200] \
        [--prior-config configs/prior/shapes_t2i.yaml --prior-config configs/presets/quick/prior.yaml] \
        [--threads 1] [--device cpu|cuda] [--time-only] [--timing-steps 8]

Each variant is a set of prior overrides over the prior configs. First each variant's seconds per
training step are measured on this machine's CPU with --threads threads (the trainer's own step:
the real model, batch, precision and optimizers over the store's batches, the variants' steps
alternating so noise hits them alike); then
for each budget in --minutes the variant trains for budget / (seconds per step) steps, its whole
learning-rate schedule fitted to them, and is evaluated over --seeds sampling seeds of
--num-prompts validation prompts. So a lever that makes steps cheaper gets more of them, and one
that costs time at sampling (sample.best_of) is charged for it in the evaluation minutes shown
beside. Training itself may run on --device cuda to get the curve sooner: the x axis stays the
measured CPU time. Writes OUT/time_to_quality.json (kept across runs: a variant and budget already
evaluated with the same overrides is skipped), OUT/time_to_quality.md and OUT/time_to_quality.png.
--time-only prints the seconds per step and each variant's speed against the first, and stops.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from lgvq.api.evaluation import evaluate_prior_run
from lgvq.api.training import stage_config, train
from lgvq.evaluation.results import write_results
from lgvq.priors.training import PriorTask
from lgvq.training.trainer import Trainer


def step_seconds(configs: list[str], variants: dict[str, list[str]], store: str, threads: int,
                 steps: int = 8) -> dict[str, float]:
    """Median CPU seconds of one training step of each variant as the trainer takes it (forward and
    backward under the run's precision, clipping, every optimizer: Muon's iterations included), the
    variants' steps taking turns."""
    torch.set_num_threads(threads)
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in variants.items():
            cfg = stage_config("prior", configs, overrides, store=store)
            trainer = Trainer(PriorTask(cfg, Path(tmp) / name), cfg.train, Path(tmp) / name)
            trainer.setup()
            runs[name] = (trainer, trainer.task.train_batches(0, 0, 1))
        times: dict[str, list[float]] = {name: [] for name in runs}
        for i in range(steps + 2):  # two warm-up rounds
            for name, (trainer, batches) in runs.items():
                start = time.perf_counter()
                trainer.train_step(batches)
                if i >= 2:
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def run_variant(configs: list[str], name: str, overrides: list[str], store: str, minutes: float, seconds: float,
                out: Path, seeds: list[int], num_prompts: int, device: str) -> dict:
    steps = max(1, round(minutes * 60 / seconds))
    run = out / f"{name}-{minutes:g}min"
    train_overrides = [o for o in overrides if not o.startswith("sample.")]
    sampling = {o.split("=", 1)[0][len("sample."):]: float(o.split("=", 1)[1]) for o in overrides
                if o.startswith("sample.")}
    start = time.perf_counter()
    train("prior", configs, [*train_overrides, f"train.max_steps={steps}", f"train.output_dir={run}",
                             "train.checkpoint_every=1000000"], store=store)
    trained = time.perf_counter() - start
    best_of = int(sampling.pop("best_of", 1))
    results = evaluate_prior_run(run, seeds=seeds, num_prompts=num_prompts, fid=False, device=device,
                                 best_of=best_of, **sampling)
    f = results.faithfulness
    return {"variant": name, "overrides": overrides, "cpu_minutes": minutes, "steps": steps,
            "cpu_seconds_per_step": seconds, "one_object": f["one_object"], "two_objects": f["two_objects"],
            "per_seed": results.faithfulness_per_seed, "train_seconds": trained,
            "evaluation_seconds": time.perf_counter() - start - trained, "device": device}


def table(rows: list[dict]) -> str:
    lines = ["| variant | CPU minutes | steps | s / step | one object | two objects | evaluation s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in sorted(rows, key=lambda r: (r["variant"], r["cpu_minutes"])):
        lines.append(f"| {r['variant']} | {r['cpu_minutes']:g} | {r['steps']} | {r['cpu_seconds_per_step']:.2f} | "
                     f"{r['one_object']:.1%} | {r['two_objects']:.1%} | {r['evaluation_seconds']:.0f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharex=True)
    for variant in sorted({r["variant"] for r in rows}):
        mine = sorted((r for r in rows if r["variant"] == variant), key=lambda r: r["cpu_minutes"])
        for ax, key in zip(axes, ("one_object", "two_objects")):
            ax.plot([r["cpu_minutes"] for r in mine], [100 * r[key] for r in mine], "o-", label=variant)
    for ax, title in zip(axes, ("one object", "two objects")):
        ax.set(title=f"faithful, {title} (%)", xlabel="training CPU-minutes")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def parse_variants(specs: list[str]) -> dict[str, list[str]]:
    variants = {}
    for spec in specs:
        name, sep, overrides = spec.partition("=")
        if not sep or not name:
            sys.exit(f"error: --variant takes NAME=\"key=value ...\" (got {spec!r})")
        variants[name] = overrides.split()
    return variants


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", required=True, help="a code store written by lgvq encode")
    p.add_argument("--out", required=True)
    p.add_argument("--prior-config", action="append", help="default: configs/prior/shapes_t2i.yaml")
    p.add_argument("--variant", action="append", required=True, help='NAME="key=value ..." (repeatable)')
    p.add_argument("--minutes", default="2,4,8", help="training budgets in CPU-minutes")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--num-prompts", type=int, default=200)
    p.add_argument("--threads", type=int, default=1, help="CPU threads the step time is measured with")
    p.add_argument("--device", default="cpu", help="where the priors train and sample (the time axis is CPU time)")
    p.add_argument("--time-only", action="store_true", help="measure the seconds per step, print them and stop")
    p.add_argument("--timing-steps", type=int, default=8, help="timed steps of each variant, taking turns")
    args = p.parse_args(argv)
    configs = args.prior_config or ["configs/prior/shapes_t2i.yaml"]
    if args.device == "cpu":  # accelerate would take a visible GPU for training otherwise
        os.environ["ACCELERATE_USE_CPU"] = "1"
    variants = parse_variants(args.variant)
    seconds = step_seconds(configs, variants, args.store, args.threads, args.timing_steps)
    print("CPU seconds per training step: " + ", ".join(f"{k} {v:.3f}" for k, v in seconds.items()), flush=True)
    if args.time_only:
        first = next(iter(seconds.values()))
        print("speed against the first: " + ", ".join(f"{k} {first / v:.2f}x" for k, v in seconds.items()))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = out / "time_to_quality.json"
    rows = json.loads(record.read_text())["runs"] if record.is_file() else []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        for name, overrides in variants.items():
            if any(r["variant"] == name and r["cpu_minutes"] == minutes and r["overrides"] == overrides for r in rows):
                continue
            rows = [r for r in rows if not (r["variant"] == name and r["cpu_minutes"] == minutes)]
            rows.append(run_variant(configs, name, overrides, args.store, minutes, seconds[name], out,
                                    [int(s) for s in args.seeds.split(",")], args.num_prompts, args.device))
            write_results({"store": args.store, "prior_configs": configs, "threads": args.threads, "runs": rows},
                          record)
    (out / "time_to_quality.md").write_text(table(rows) + "\n")
    plot(rows, out / "time_to_quality.png")
    print(table(rows))


if __name__ == "__main__":
    main()
