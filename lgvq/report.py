"""The pipeline report: collect a pipeline folder's evaluation JSONs, draw the plots, and write
`report.md` (numbers first) and `report.json`.

    python -m lgvq report --run runs/pipeline          # what scripts/run_pipeline.sh calls last

Expected layout (missing parts are reported as missing, not invented):

    RUN/tokenizer/  (model, logs, samples, eval/tokenizer.json, eval/alignment.json)
    RUN/codes/      (train/, validation/)
    RUN/prior/      (model, tokenizer, logs, eval/prior.json, eval/samples/)
    RUN/captioner/, RUN/vqa/   (heads, eval/head.json)
    RUN/timings.json, RUN/peak_memory.json  seconds and peak MiB per stage, written by the script
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lgvq.cpu import cpu_class
from lgvq.evaluation.results import write_results
from lgvq.records import (AlignmentEvaluation, CaptioningEvaluation, PriorEvaluation, TokenizerEvaluation,
                          VQAEvaluation)
from lgvq.run_result import pipeline_result
from lgvq.runs import PipelineDir, StoreDir


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _scalars(log_dir: Path, tags: list[str]) -> dict[str, tuple[list[int], list[float]]]:
    """TensorBoard scalars of a run (steps, values) for the tags that exist."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, tuple[list[int], list[float]]] = {}
    for events in sorted(log_dir.glob("**/events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in tags:
            if tag in acc.Tags()["scalars"]:
                steps, values = out.get(tag, ([], []))
                for e in acc.Scalars(tag):
                    steps.append(e.step)
                    values.append(e.value)
                out[tag] = (steps, values)
    return out


def plot_losses(run: Path, out: Path) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = PipelineDir(run)
    panels = [("tokenizer", p.tokenizer.logs, ["rec", "vq", "gsa", "mtp", "ras", "d_loss"]),
              ("prior", p.prior.logs, ["loss"]),
              ("captioning head", p.captioner.logs, ["loss"]), ("VQA head", p.vqa.logs, ["loss"])]
    panels = [(name, d, tags, _scalars(d, tags)) for name, d, tags in panels if d.is_dir()]
    panels = [p for p in panels if p[3]]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 4), squeeze=False)
    for ax, (name, _, tags, series) in zip(axes[0], panels):
        for tag in tags:
            if tag in series:
                steps, values = series[tag]
                ax.plot(steps, values, label=tag)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (log scale)")
        ax.set_title(f"{name} training losses")
        if len(series) > 1:  # beside the axes, where it hides no curve
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_code_usage(store: Path, vocab_size: int, out: Path) -> Path | None:
    """Histogram of how often each code occurs in the encoded training images."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tokens_file = StoreDir(store).split("train") / "tokens.npy"
    if not tokens_file.is_file():
        return None
    tokens = np.load(tokens_file, mmap_mode="r")
    counts = np.bincount(np.asarray(tokens).ravel(), minlength=vocab_size)
    order = np.sort(counts)[::-1]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(np.arange(len(order)), order, width=1.0)
    ax.set_yscale("log")
    ax.set_xlabel("code (sorted by frequency)")
    ax.set_ylabel("occurrences")
    used = int((counts > 0).sum())
    ax.set_title(f"code usage over the training set: {used}/{vocab_size} codes used")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def plot_samples(samples_dir: Path, out: Path, limit: int = 24) -> Path | None:
    """Generated images beside their prompts (and whether the scorer accepted them)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    prompts_file = samples_dir / "prompts.txt"
    if not prompts_file.is_file():
        return None
    prompts = prompts_file.read_text().splitlines()[:limit]
    scores = samples_dir / "scores.jsonl"
    matches = [json.loads(ln)["match"] for ln in scores.read_text().splitlines()] if scores.is_file() else None
    cols = 4
    rows = (len(prompts) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 3, rows * 3.3), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if i >= len(prompts):
            continue
        ax.imshow(Image.open(samples_dir / f"{i:04d}.png"), interpolation="nearest")
        mark = "" if matches is None else (" ✓" if matches[i] else " ✗")
        ax.set_title("\n".join(_wrap(prompts[i] + mark, 28)), fontsize=8)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + [line]


def _latest(folder: Path, pattern: str) -> Path | None:
    found = sorted(folder.glob(pattern)) if folder.is_dir() else []
    return found[-1] if found else None


def _fmt(value, spec: str = ".3f") -> str:
    return "n/a" if value is None else format(value, spec)


def build_report(run: str | Path) -> Path:
    run = Path(run)
    p = PipelineDir(run)
    plots = p.plots
    plots.mkdir(parents=True, exist_ok=True)
    tok_eval = _read(p.tokenizer.eval_file("tokenizer"))
    align_eval = _read(p.tokenizer.eval_file("alignment"))
    prior_eval = _read(p.prior.eval_file("prior"))
    reranked_eval = _read(p.prior.eval_file("reranked"))
    timings = _read(p.timings) or {}
    peak_memory = _read(p.peak_memory) or {}
    report = {"run": _read(p.description), "commands": _read(p.commands) or {}, "tokenizer": tok_eval, "alignment": align_eval, "prior": prior_eval,
              "prior_reranked": reranked_eval, "captioning": _read(p.captioner.eval_file("head")),
              "vqa": _read(p.vqa.eval_file("head")), "timings_s": timings, "wall_s": _read(p.wall_time) or [],
              "peak_memory_mb": peak_memory}
    figures = {
        "losses": plot_losses(run, plots / "losses.png"),
        "code_usage": plot_code_usage(p.codes.root, TokenizerEvaluation.from_json(tok_eval or {}).codebook_size or 1,
                                      plots / "code_usage.png"),
        "samples": plot_samples(p.prior.eval_samples(), plots / "samples.png"),
    }
    recon = _latest(p.tokenizer.samples, "step-*.png")
    if recon is not None:
        figures["reconstructions"] = recon
    report["figures"] = {k: str(v.relative_to(run)) if v else None for k, v in figures.items()}
    p.report_json.write_text(json.dumps(report, indent=2))
    write_results(pipeline_result(p, report), p.result_json)
    p.report_md.write_text(_markdown(report, timings, peak_memory))
    return p.report_md


def _gib(mib: float | None) -> str:
    return _fmt(None if mib is None else mib / 1024, ".2f")


# what a quick report says of the full preset (measured in docs/results.md#the-main-job)
FULL_PRESET_LINE = (
    "The full preset (`scripts/run_pipeline.sh --preset full`: 64 px, the shapes configs as they are) reaches "
    "PSNR 33.0 dB, faithfulness 97.2 % / 57.6 % (one / two objects, three seeds), CIDEr-D 4.80 and VQA 75.6 %, "
    "in 1 h 45 min on 2 AVX512-BF16 cores and about 4.5 h on 2 AVX2-only cores (docs/results.md).")

FIGURE_CAPTIONS = {
    "losses": "Training losses of each stage (log scale).",
    "code_usage": "How often each code occurs in the training code store.",
    "samples": "Prior samples beside their prompts; a tick where the scorer finds the prompt's objects.",
    "reconstructions": "The tokenizer's last preview: in each pair of rows, originals above their reconstructions.",
}


def _what_was_run(report: dict) -> list[str]:
    """The run's settings and every stage's command, so the report stands on its own."""
    run, commands = report.get("run"), report.get("commands") or {}
    if not run and not commands:
        return []
    lines = ["## What was run", ""]
    if run:
        preset = run.get("preset", "full")  # runs written before presets were full runs
        lines.append(f"Preset `{preset}`, dataset `{run['dataset']}`, tokenizer `{run['tokenizer']}`, "
                     f"{run['num_prompts']} validation prompts per sampling seed, sampling seeds {run['sample_seeds']}.")
        if run.get("cpu"):
            lines.append(f"CPU: {cpu_class(run['cpu'])}.")
        if preset == "quick" and run.get("dataset") == "shapes":
            lines.append(FULL_PRESET_LINE)
        given = {stage: text for stage, text in (run.get("overrides") or {}).items() if text.strip()}
        lines.append("Overrides: " + ("; ".join(f"{stage}: `{text}`" for stage, text in given.items())
                                      if given else "none (the defaults)") + ".")
        lines.append("")
    if commands:
        lines += ["| stage | command |", "| --- | --- |"]
        lines += [f"| {name} | `{command}` |" for name, command in commands.items()]
        lines.append("")
    return lines


def _markdown(report: dict, timings: dict, peak_memory: dict) -> str:
    lines = ["# lgvq pipeline report", "", *_what_was_run(report)]
    t = TokenizerEvaluation.from_json(report["tokenizer"]) if report["tokenizer"] else None
    a = AlignmentEvaluation.from_json(report["alignment"]) if report["alignment"] else None
    p = PriorEvaluation.from_json(report["prior"]) if report["prior"] else None
    c = CaptioningEvaluation.from_json(report["captioning"]) if report["captioning"] else None
    q = VQAEvaluation.from_json(report["vqa"]) if report["vqa"] else None
    lines += ["## Numbers", "", "| stage | metric | value |", "| --- | --- | --- |"]
    if t:
        lines += [f"| tokenizer | PSNR (dB) | {_fmt(t.psnr, '.2f')} |",
                  f"| tokenizer | SSIM | {_fmt(t.ssim)} |",
                  f"| tokenizer | codebook usage | {_fmt(t.codebook_usage, '.1%')} |",
                  f"| tokenizer | perplexity | {_fmt(t.perplexity, '.1f')} |",
                  f"| tokenizer | tokens / image | {t.tokens_per_image} |"]
        if t.black_patch_codes is not None:
            lines.append(f"| tokenizer | codes of all-black patches (entropy, nats) | {t.black_patch_codes} "
                         f"({_fmt(t.black_patch_entropy, '.2f')}) |")
        if t.reconstruction_faithfulness:
            lines.append(f"| tokenizer | reconstructions faithful, one / two objects (the prior's ceiling) | "
                         f"{_fmt(t.faithful('one_object'), '.1%')} / {_fmt(t.faithful('two_objects'), '.1%')} |")
    if a:
        own, swapped = (_fmt(a.masked_word(codes)) for codes in ("own", "swapped"))
        lines += [f"| alignment | image-to-text R@1 (chance {_fmt(a.retrieval_chance_r1, '.4f')}) | "
                  f"{_fmt(a.retrieval_r1)} |",
                  f"| alignment | masked colour/shape word R@1, own / swapped codes | {own} / {swapped} |",
                  f"| alignment | relation MSE | {_fmt(a.relation_mse, '.4f')} |"]
    if p:
        f = p.faithfulness or {}
        lines.append(f"| prior | validation NLL (nats/token) | {_fmt(p.nll)} |")
        seeds = p.sampling_seeds
        counts = f"{f.get('count_one_object', '?')} / {f.get('count_two_objects', '?')} prompts"
        for seed, g in (p.faithfulness_per_seed or {}).items():
            lines.append(f"| prior | faithfulness, one / two objects, sampling seed {seed} ({counts}) | "
                         f"{_fmt(g.get('one_object'), '.1%')} / {_fmt(g.get('two_objects'), '.1%')} |")
        which = f"mean of seeds {', '.join(map(str, seeds))}" if len(seeds) > 1 else f"sampling seed {seeds[0]}"
        lines += [f"| prior | faithfulness, one object ({which}; {counts}) | {_fmt(p.faithful('one_object'), '.1%')} |",
                  f"| prior | faithfulness, two objects ({which}) | {_fmt(p.faithful('two_objects'), '.1%')} |",
                  f"| prior | FID | {_fmt(p.fid_value, '.2f')} |"]
    if report.get("prior_reranked"):
        r = PriorEvaluation.from_json(report["prior_reranked"])
        sampling = r.sampling or {}
        n, judge, hard = sampling.get("best_of", "?"), sampling.get("rerank_with"), sampling.get("best_of_hard")
        by = "the captioner's likelihood of the prompt" if judge else "the prior's own score"
        share = sampling.get("hard_share", 0.5)
        more = f" ({hard} for the {share:.0%} whose best of {n} scores lowest)" if hard else ""
        lines.append(f"| prior | faithfulness, one / two objects, each image the best of {n} samples{more} by {by} "
                     f"(mean of seeds {', '.join(map(str, r.sampling_seeds))}) | "
                     f"{_fmt(r.faithful('one_object'), '.1%')} / {_fmt(r.faithful('two_objects'), '.1%')} |")
    if c:
        scores = " / ".join(_fmt(s) for s in (c.bleu_4, c.cider_d, c.meteor, c.rouge_l))
        lines.append(f"| captioning | BLEU-4 / CIDEr-D / METEOR / ROUGE-L | {scores} |")
    if q:
        lines.append(f"| VQA | accuracy, all | {_fmt(q.accuracy, '.1%')} |")
        lines += [f"| VQA | accuracy, {k} | {_fmt(v, '.1%')} |" for k, v in q.per_type.items()]
    if not (t or a or p):
        lines.append("| – | no evaluation results found | – |")
    if timings:
        lines += ["", "## Wall time and memory", ""]
        wall = report.get("wall_s") or []
        if wall:
            lines += [f"Wall time of the pipeline: {sum(wall) / 60:.1f} minutes"
                      + (f" over {len(wall)} invocations." if len(wall) > 1 else ".")
                      + " Stages side by side overlap, so the stages' minutes add up to more.", ""]
        lines += ["| stage | minutes | peak memory (GiB, largest process) |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v / 60:.1f} | {_gib(peak_memory.get(k))} |" for k, v in timings.items()]
        lines.append(f"| total | {sum(timings.values()) / 60:.1f} | "
                     f"{_gib(max(peak_memory.values(), default=None))} (max) |")
    lines += ["", "## Figures", ""]
    for name, path in report["figures"].items():
        caption = FIGURE_CAPTIONS.get(name, "")
        lines.append(f"### {name.replace('_', ' ')}\n\n{caption}\n\n![{name}]({path})\n" if path
                     else f"- {name}: not available")
    return "\n".join(lines) + "\n"
