"""The tokenizer comparison (`scripts/compare_tokenizers.sh`, `lgvq report --compare ROOT`).

    ROOT/TOKENIZER/seedN/report.json     one pipeline run folder per tokenizer and seed, or
    ROOT/TOKENIZER/seedN.json            its OUT/result.json alone (`--results DIR`: a study kept
                                         in the repository, without run folders)

writes ROOT/table.md (mean ± std per tokenizer over its seeds, then for each backbone the paired
difference with and without LG-VQ: per seed, and its mean ± std), ROOT/compare.json (every
per-seed value and every difference) and ROOT/compare.png (bars with error bars).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lgvq.data.shapes import QUESTION_TYPES
from lgvq.errors import InputFileError


@dataclass(frozen=True)
class Metric:
    name: str  # the column
    path: tuple[str, ...]  # where it is in report.json
    fmt: str
    result: tuple[str, ...]  # where it is in result.json (lgvq.run_result), in the column's unit
    scale: float = 1.0  # report value x scale = the column's unit
    paired: bool = True  # False for what the config fixes (codebook size): no with-minus-without row


def _minutes(stage: str) -> Metric:
    return Metric(f"{stage} min", ("timings_s", stage), "{:.1f}", ("minutes", stage), 1 / 60)


def _m(name: str, path: tuple[str, ...], fmt: str, result_key: str, **kw) -> Metric:
    return Metric(name, path, fmt, ("metrics", *result_key.split("/")), **kw)


# the table's column groups, each printed as its own table (one row per tokenizer)
METRIC_GROUPS: dict[str, list[Metric]] = {
    "Reconstruction and codebook": [
        _m("PSNR", ("tokenizer", "psnr"), "{:.2f}", "psnr"),
        _m("SSIM", ("tokenizer", "ssim"), "{:.3f}", "ssim"),
        _m("codes used %", ("tokenizer", "codebook_usage"), "{:.1%}", "codebook_usage"),
        _m("perplexity", ("tokenizer", "perplexity"), "{:.0f}", "perplexity"),
        _m("codebook size", ("tokenizer", "codebook_size"), "{:.0f}", "codebook_size", paired=False),
        _m("tokens / image", ("tokenizer", "tokens_per_image"), "{:.0f}", "tokens_per_image", paired=False),
        _m("black-patch code entropy", ("tokenizer", "black_patch_entropy"), "{:.2f}", "black_patch_entropy"),
        _m("recon faithful 2 obj", ("tokenizer", "reconstruction_faithfulness", "two_objects"), "{:.1%}",
           "reconstruction_faithful_two"),
    ],
    "Alignment": [
        _m("retrieval R@1", ("alignment", "retrieval_r@1"), "{:.3f}", "retrieval_r@1"),
        _m("masked word R@1 own", ("alignment", "mask_recall@1/mask1/own/content"), "{:.3f}", "masked_word_own"),
        _m("masked word R@1 swapped", ("alignment", "mask_recall@1/mask1/swapped/content"), "{:.3f}",
           "masked_word_swapped"),
    ],
    "Text-to-image and captioning": [
        _m("faithful 1 obj", ("prior", "faithfulness", "one_object"), "{:.1%}", "faithful_one"),
        _m("faithful 2 obj", ("prior", "faithfulness", "two_objects"), "{:.1%}", "faithful_two"),
        _m("BLEU-4", ("captioning", "BLEU-4"), "{:.3f}", "bleu_4"),
        _m("CIDEr-D", ("captioning", "CIDEr-D"), "{:.3f}", "cider_d"),
    ],
    "VQA": [_m("VQA all", ("vqa", "accuracy"), "{:.1%}", "vqa")]
    + [_m(f"VQA {kind}", ("vqa", "per_type", kind), "{:.1%}", f"vqa_per_type/{kind}") for kind in QUESTION_TYPES],
    "Training minutes per stage": [_minutes(stage) for stage in ("tokenizer", "prior", "captioner", "vqa")],
}
COMPARE_METRICS = [metric for group in METRIC_GROUPS.values() for metric in group]
# the metrics drawn in compare.png, those that some run has
PLOTTED = ["PSNR", "codes used %", "recon faithful 2 obj", "faithful 1 obj", "faithful 2 obj", "CIDEr-D", "VQA all"]
BACKBONES = ("vqgan", "cvq", "vqct")  # each compared with its `_lg` variant
ORDER = [name for b in BACKBONES for name in (b, f"{b}_lg")]  # rows and bars; other names after, by name


def _dig(report: dict, path: tuple[str, ...]):
    for key in path:
        if not isinstance(report, dict) or report.get(key) is None:
            return None
        report = report[key]
    return report


def run_values(path: Path) -> dict[str, float]:
    """metric -> value of one run, from its report.json or its result.json (metrics it lacks are
    left out)."""
    data = json.loads(path.read_text())
    if path.name == "report.json":
        return {m.name: float(v) * m.scale for m in COMPARE_METRICS if (v := _dig(data, m.path)) is not None}
    return {m.name: float(v) for m in COMPARE_METRICS if (v := _dig(data, m.result)) is not None}


def collect(root: str | Path) -> dict[str, dict[str, dict[str, float]]]:
    """tokenizer -> seed name -> metric -> value, from ROOT/TOKENIZER/seedN/report.json (run
    folders) and ROOT/TOKENIZER/seedN.json (result files; a run folder wins for the same seed)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"{root} is not a folder of ROOT/TOKENIZER/seedN runs or result files")
    found: dict = {}
    for tok_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = {f.stem: f for f in sorted(tok_dir.glob("seed*.json"))}
        files |= {f.parent.name: f for f in sorted(tok_dir.glob("seed*/report.json"))}
        for seed in sorted(files):
            found.setdefault(tok_dir.name, {})[seed] = run_values(files[seed])
    if not found:
        raise InputFileError(f"no ROOT/TOKENIZER/seed*/report.json or ROOT/TOKENIZER/seed*.json under {root}")
    known = {name: i for i, name in enumerate(ORDER)}
    return {name: found[name] for name in sorted(found, key=lambda n: (known.get(n, len(ORDER)), n))}


def _mean_std(values: list[float], fmt: str, signed: bool = False) -> str:
    if not values:
        return "–"
    text = (lambda v: ("+" if signed and v >= 0 else "") + fmt.format(v))
    if len(values) == 1:
        return text(values[0])
    return f"{text(float(np.mean(values)))} ± {fmt.format(float(np.std(values, ddof=1)))}"


def compare_table(runs: dict, metrics: list[Metric]) -> str:
    """One row per tokenizer: mean ± std over its seeds; '–' where it has no such metric."""
    head = "| tokenizer | seeds | " + " | ".join(m.name for m in metrics) + " |"
    rows = [head, "|" + " --- |" * (len(metrics) + 2)]
    for tokenizer, seeds in runs.items():
        cells = [_mean_std([v[m.name] for v in seeds.values() if m.name in v], m.fmt) for m in metrics]
        rows.append(f"| {tokenizer} | {len(seeds)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def paired_differences(runs: dict) -> dict[str, dict[str, dict]]:
    """backbone -> metric -> {"per_seed": {seed: LG-VQ minus plain}, "mean", "std"}, over the seeds
    both runs have (the same seed means the same data order and initialisation)."""
    out: dict = {}
    for backbone in BACKBONES:
        plain, aligned = runs.get(backbone), runs.get(f"{backbone}_lg")
        if not plain or not aligned:
            continue
        for name in (m.name for m in COMPARE_METRICS if m.paired):
            per_seed = {seed: aligned[seed][name] - plain[seed][name] for seed in sorted(plain.keys() & aligned.keys())
                        if name in plain[seed] and name in aligned[seed]}
            if per_seed:
                values = list(per_seed.values())
                out.setdefault(backbone, {})[name] = {
                    "per_seed": per_seed, "mean": float(np.mean(values)),
                    "std": float(np.std(values, ddof=1)) if len(values) > 1 else None}
    return out


def paired_table(paired: dict) -> str:
    """Markdown: one row per metric, one column per backbone: mean ± std (per-seed values)."""
    if not paired:
        return "No backbone has runs both with and without LG-VQ."
    backbones = list(paired)
    rows = ["| metric | " + " | ".join(f"{b}_lg − {b}" for b in backbones) + " |",
            "|" + " --- |" * (len(backbones) + 1)]
    for metric in COMPARE_METRICS:
        name, fmt, cells = metric.name, metric.fmt, []
        for b in backbones:
            d = paired[b].get(name)
            if d is None:
                cells.append("–")
                continue
            per_seed = ", ".join(("+" if v >= 0 else "") + fmt.format(v) for v in d["per_seed"].values())
            cells.append(f"{_mean_std(list(d['per_seed'].values()), fmt, signed=True)} ({per_seed})")
        if any(c != "–" for c in cells):
            rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plotted_metrics(runs: dict) -> list[str]:
    """The panels of compare.png: the headline metrics that at least one run has (PSNR if none)."""
    return [m for m in PLOTTED if any(m in values for seeds in runs.values() for values in seeds.values())] \
        or PLOTTED[:1]


def plot_comparison(runs: dict, out: Path) -> Path:
    """Bars (mean over seeds) with error bars (std) per tokenizer, one panel per headline metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    metrics = plotted_metrics(runs)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [[v[metric] for v in runs[t].values() if metric in v] for t in names]
        means = [np.mean(v) if v else np.nan for v in values]
        errors = [np.std(v, ddof=1) if len(v) > 1 else 0.0 for v in values]
        ax.bar(range(len(names)), means, yerr=errors, capsize=3,
               color=["tab:orange" if n.endswith("_lg") else "tab:blue" for n in names])
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
        ax.set_title(metric, fontsize=9)
    fig.suptitle("mean ± std over seeds (orange: with LG-VQ)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
    return out


def write_comparison(root: str | Path) -> str:
    """ROOT/table.md, ROOT/compare.json and ROOT/compare.png; returns the markdown."""
    root = Path(root)
    runs = collect(root)
    paired = paired_differences(runs)
    lines = ["## Tokenizers, mean ± std over seeds", ""]
    for title, metrics in METRIC_GROUPS.items():
        lines += [f"### {title}", "", compare_table(runs, metrics), ""]
    lines += ["## With minus without LG-VQ, paired by seed: mean ± std (each seed)", "",
              paired_table(paired), "", "![comparison](compare.png)"]
    text = "\n".join(lines)
    (root / "table.md").write_text(text + "\n")
    (root / "compare.json").write_text(json.dumps({"per_seed": runs, "paired": paired}, indent=2))
    plot_comparison(runs, root / "compare.png")
    return text
