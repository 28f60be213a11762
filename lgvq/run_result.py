"""A finished pipeline run in one small file, OUT/result.json: its headline numbers and what is
needed to tell runs apart (preset, tokenizer, training seed, a hash of the resolved configs, the
commit, the CPU). Studies keep these files and compare runs without their folders.

    result = pipeline_result(PipelineDir(Path("runs/pipeline")), report)   # report: lgvq.report's dict
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import yaml

from lgvq.cpu import cpu_description
from lgvq.records import (AlignmentEvaluation, CaptioningEvaluation, PriorEvaluation, TokenizerEvaluation,
                          VQAEvaluation)
from lgvq.runs import PipelineDir

RESULT_VERSION = 1
STAGE_RUNS = ("tokenizer", "prior", "captioner", "vqa")


def config_hash(pipeline: PipelineDir, description: dict | None) -> str:
    """sha256 (16 hex digits) of every stage's resolved config (RUN/config.yaml, with the output
    folders and the store path left out, since a run may live anywhere; the training seed stays
    in) and the evaluation settings: two runs with equal hashes ran the same settings."""
    digest = hashlib.sha256()
    for name in STAGE_RUNS:
        path = getattr(pipeline, name).config
        if path.is_file():
            config = yaml.safe_load(path.read_text()) or {}
            for section in config.values():
                if isinstance(section, dict):
                    section.pop("output_dir", None)
            config.pop("store", None)
            digest.update(f"{name}:{yaml.safe_dump(config, sort_keys=True)}".encode())
    evaluation = {k: (description or {}).get(k) for k in ("dataset", "num_prompts", "sample_seeds")}
    digest.update(repr(sorted(evaluation.items())).encode())
    return digest.hexdigest()[:16]


def plan_hash(listing: str, out: str) -> str:
    """sha256 (16 hex digits) of what a pipeline run is set to do, known before it runs: its
    stages' commands (`scripts/run_pipeline.sh --dry-run`, the output folder written as OUT, so
    the hash does not depend on where the run lives) and the contents of the config files they
    name. Code changes do not enter it: a study skips a run already done with the same settings."""
    text = listing.replace(out.rstrip("/"), "OUT")
    digest = hashlib.sha256(text.encode())
    for config in sorted(set(re.findall(r"--config (\S+)", text))):
        path = Path(config)
        digest.update(f"{config}:".encode() + (path.read_bytes() if path.is_file() else b"missing"))
    return digest.hexdigest()[:16]


def source_commit() -> dict:
    """The git commit of the lgvq checkout in use and whether it had uncommitted changes (None
    outside a git checkout, e.g. an installed wheel)."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10,
                                check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def training_seed(pipeline: PipelineDir) -> int | None:
    path = pipeline.tokenizer.config
    if not path.is_file():
        return None
    return ((yaml.safe_load(path.read_text()) or {}).get("train") or {}).get("seed")


def headline_metrics(report: dict) -> dict:
    """The report's headline numbers, flat and named as docs/results.md names them."""
    t = TokenizerEvaluation.from_json(report.get("tokenizer") or {})
    p = PriorEvaluation.from_json(report.get("prior") or {})
    a = AlignmentEvaluation.from_json(report.get("alignment") or {})
    c = CaptioningEvaluation.from_json(report.get("captioning") or {})
    q = VQAEvaluation.from_json(report.get("vqa") or {})
    reranked = PriorEvaluation.from_json(report.get("prior_reranked") or {})
    return {
        "psnr": t.psnr, "ssim": t.ssim, "codebook_usage": t.codebook_usage,
        "perplexity": t.perplexity, "tokens_per_image": t.tokens_per_image,
        "codebook_size": t.codebook_size, "black_patch_entropy": t.black_patch_entropy,
        "reconstruction_faithful_one": t.faithful("one_object"),
        "reconstruction_faithful_two": t.faithful("two_objects"),
        "retrieval_r@1": a.retrieval_r1, "relation_mse": a.relation_mse,
        "masked_word_own": a.masked_word("own"), "masked_word_swapped": a.masked_word("swapped"),
        "prior_nll": p.nll,
        "faithful_one": p.faithful("one_object"), "faithful_two": p.faithful("two_objects"),
        "faithful_per_seed": {seed: {"one": r.get("one_object"), "two": r.get("two_objects")}
                              for seed, r in (p.faithfulness_per_seed or {}).items()},
        # each image the best of several samples by the captioner (the quick preset's second evaluation)
        "faithful_one_reranked": reranked.faithful("one_object"),
        "faithful_two_reranked": reranked.faithful("two_objects"),
        "cider_d": c.cider_d, "bleu_4": c.bleu_4,
        "vqa": q.accuracy, "vqa_per_type": q.per_type,
    }


def pipeline_result(pipeline: PipelineDir, report: dict) -> dict:
    description = report.get("run") or {}
    timings, memory = report.get("timings_s") or {}, report.get("peak_memory_mb") or {}
    return {
        "version": RESULT_VERSION,
        "preset": description.get("preset", "full"), "dataset": description.get("dataset"),
        "tokenizer": description.get("tokenizer"), "training_seed": training_seed(pipeline),
        "config_hash": config_hash(pipeline, description), "plan_hash": description.get("plan_hash"),
        **source_commit(),
        "cpu": description.get("cpu") or cpu_description(),
        "metrics": headline_metrics(report),
        "minutes": {stage: seconds / 60 for stage, seconds in timings.items()},
        "wall_minutes": sum(report.get("wall_s") or []) / 60 or None,
        "peak_memory_mb": memory,
    }


if __name__ == "__main__":  # python -m lgvq.run_result plan-hash OUT < listing (for the shell scripts)
    if sys.argv[1:2] != ["plan-hash"] or len(sys.argv) != 3:
        sys.exit("usage: python -m lgvq.run_result plan-hash OUT < dry-run listing")
    print(plan_hash(sys.stdin.read(), sys.argv[2]))
