"""Evaluation of a trained prior: validation token NLL / perplexity from the code store, prompt
faithfulness of generated images where the dataset has a scorer (shapes does), and FID through
clean-fid against the dataset's validation images.

Faithfulness protocol: the scorer's prompts (on shapes the canonical captions of the first N
validation images), one image per prompt, sampled with the run's defaults and a seed; each image
is scored by the dataset's scorer, and the rates of several seeds are averaged.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from lgvq.data.code_store import CodeStore
from lgvq.data.datasets import ImageTextDataset
from lgvq.data.transforms import to_uint8
from lgvq.errors import MissingWeightsError
from lgvq.evaluation.fid import fid_between_folders, load_inception
from lgvq.priors.model import PriorTransformer, next_token_loss
from lgvq.priors.training import condition_from_batch


@torch.no_grad()
def validation_nll(prior: PriorTransformer, store: CodeStore, batch_size: int = 64, limit: int | None = None,
                   device: str | torch.device = "cpu") -> dict[str, float]:
    """Mean next-token NLL (nats and bits per token) and perplexity of the store's items, each
    conditioned on its first caption / its label (no condition dropout)."""
    prior = prior.to(device).eval()
    n = len(store) if limit is None else min(limit, len(store))
    total, count = 0.0, 0
    for start in tqdm(range(0, n, batch_size), desc="validation NLL", leave=False):
        batch = store.batch(list(range(start, min(n, start + batch_size))),
                            text_length=prior.config.text_length or None)
        tokens = batch["tokens"].to(device)
        cond = condition_from_batch(batch, prior.config.conditioning).to(device)
        loss = next_token_loss(prior(tokens, cond), tokens)
        total += float(loss) * tokens.numel()
        count += tokens.numel()
    nll = total / max(count, 1)
    return {"nll": nll, "bits_per_token": nll / math.log(2), "perplexity": math.exp(nll), "items": n}


def evaluate_faithfulness(pipeline, scorer, prompts: list[str], seed: int = 0, out_dir: str | Path | None = None,
                          **sampling) -> dict:
    """Generate one image per prompt and score each with the dataset's `scorer`; optionally save
    them (NNNN.png + prompts.txt)."""
    images = []
    step = int(sampling.pop("batch_size", 0) or pipeline.defaults["batch_size"])
    best_of = int(sampling.get("best_of") or pipeline.defaults.get("best_of", 1))  # samples drawn per prompt
    # one bar over all prompts, in tokens, so it moves smoothly (a chunk of prompts takes seconds)
    with tqdm(total=len(prompts) * best_of * pipeline.prior.config.seq_len, desc=f"sampling prompts (seed {seed})",
              unit="tok", unit_scale=True, leave=False) as bar:
        for start in range(0, len(prompts), step):
            chunk = prompts[start:start + step]
            images += pipeline(chunk, num_images=1, seed=seed + start, batch_size=step, progress=bar, **sampling)
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    records = []
    for i, (prompt, array) in enumerate(zip(prompts, arrays)):
        ok, reason = scorer.score(array, prompt)
        records.append({"prompt": prompt, "match": ok, "reason": reason})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            im.save(out / f"{i:04d}.png")
        (out / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return {"faithfulness": scorer.rates(arrays, prompts), "records": records, "images": images}


def mean_faithfulness(per_seed: list[dict]) -> dict:
    """The mean of several seeds' rates (same prompts each time; `count_*` entries are kept)."""
    return {k: per_seed[0][k] if k.startswith("count_") else float(np.mean([r[k] for r in per_seed]))
            for k in per_seed[0]}


def prior_fid(images: list, reference: ImageTextDataset, out_dir: Path, inception_path: str | None,
              device) -> dict:
    """FID of generated images (PIL) against as many of the dataset's images (clean-fid, local
    Inception weights); skipped with the reason when the weights are absent."""
    try:
        model = load_inception(inception_path, device)
    except MissingWeightsError as e:
        return {"value": None, "skipped": str(e)}
    real, fake = out_dir / "real", out_dir / "generated"
    for folder in (real, fake):
        folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        image.save(fake / f"{i:04d}.png")
        Image.fromarray(to_uint8(reference[(i, 0)]["image"][None])[0]).save(real / f"{i:04d}.png")
    return {"value": fid_between_folders(fake, real, model, device), "images": len(images), "mode": "clean"}
