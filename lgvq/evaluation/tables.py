"""The tables the evaluation verbs print, from their records (plain Python: the command imports
this without loading torch)."""

from __future__ import annotations

from lgvq.records import AlignmentEvaluation, CaptioningEvaluation, PriorEvaluation, TokenizerEvaluation, VQAEvaluation


def tokenizer_table(r: TokenizerEvaluation) -> str:
    """What `lgvq evaluate-tokenizer` prints."""
    rows = [("images", r.num_images), ("PSNR (dB)", r.psnr), ("SSIM", r.ssim), ("LPIPS", r.lpips), ("rFID", r.rfid),
            ("codebook usage (%)", _percent(r.codebook_usage)), ("perplexity", r.perplexity),
            ("codebook size", r.codebook_size), ("tokens / image", r.tokens_per_image)]
    if r.black_patch_codes is not None:
        rows += [("black-patch codes", r.black_patch_codes), ("black-patch code entropy (nats)", r.black_patch_entropy)]
    for group, rate in (r.reconstruction_faithfulness or {}).items():
        if not group.startswith("count_"):
            rows.append((f"reconstructions faithful, {group.replace('_', ' ')} (%)", _percent(rate)))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -----"]
    for name, value in rows:
        shown = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(f"{name:<{width}}  {shown}")
    for key, note in r.notes.items():
        lines.append(f"note ({key}): {note}")
    return "\n".join(lines)


def _percent(x: float | None) -> float | None:
    return None if x is None else 100 * x


def alignment_table(r: AlignmentEvaluation) -> str:
    """What `lgvq evaluate-alignment` prints: every number of its JSON, by its JSON name."""
    lines = [f"{'metric':<40}  value", f"{'-' * 40}  -----"]
    for key, value in r.to_json().items():
        shown = "n/a" if value is None else (f"{value:.4f}" if isinstance(value, float) else str(value))
        lines.append(f"{key:<40}  {shown}")
    return "\n".join(lines)


def prior_table(r: PriorEvaluation) -> str:
    """What `lgvq evaluate-prior` prints."""
    lines = ["| metric | value |", "| --- | --- |"]
    if r.validation is not None:
        lines += [f"| validation NLL (nats/token) | {r.nll:.3f} |",
                  f"| perplexity | {r.validation['perplexity']:.1f} |"]
    if r.faithfulness is not None:
        f = r.faithfulness
        groups = [k for k in f if not k.startswith("count_") and k != "overall"]
        for seed, g in (r.faithfulness_per_seed or {}).items():
            lines.append(f"| faithfulness, seed {seed}, {' / '.join(k.replace('_', ' ') for k in groups)} | "
                         + " / ".join(f"{g[k]:.1%}" for k in groups) + " |")
        mean = f"mean of {len(r.seeds)} seeds, " if r.seeds else ""
        lines += [f"| faithfulness, {mean}{k.replace('_', ' ')} ({f.get('count_' + k, '?')} prompts) | {f[k]:.1%} |"
                  for k in groups]
        lines.append(f"| faithfulness, {mean}overall | {f['overall']:.1%} |")
    if r.fid_value is not None:
        lines.append(f"| FID ({r.fid['images']} images) | {r.fid_value:.2f} |")
    return "\n".join(lines)


def vqa_table(r: VQAEvaluation) -> str:
    lines = ["| question type | accuracy |", "| --- | --- |"]
    lines += [f"| {k} | {v:.1%} |" for k, v in r.per_type.items()]
    return "\n".join([*lines, f"| all ({r.questions}) | {r.accuracy:.1%} |"])


def caption_table(r: CaptioningEvaluation) -> str:
    scores = r.scores()
    return "\n".join(["| " + " | ".join(scores) + " |", "|" + " --- |" * len(scores),
                      "| " + " | ".join(f"{v:.3f}" for v in scores.values()) + " |"])
