"""Evaluation of a trained prior: validation token NLL / perplexity from the code store, prompt
faithfulness of generated shapes images (shapes_score), and FID through clean-fid.

Faithfulness protocol (shapes): the canonical captions of the first N validation images are the
prompts, one image per prompt, sampled with the run's defaults and the given seed; each image is
scored by `shapes_score.score_image`. The settings are written beside the scores.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from lgvq.data.code_store import CodeStore
from lgvq.evaluation.shapes_score import faithfulness, score_image
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


def shapes_prompts(num: int, image_size: int = 64, seed: int = 0, split: str = "validation") -> list[str]:
    """The canonical captions of the first `num` shapes images of a split."""
    from lgvq.data.shapes import make_sample

    return [make_sample(i, split, seed, image_size).captions[0] for i in range(num)]


def evaluate_faithfulness(pipeline, prompts: list[str], seed: int = 0, out_dir: str | Path | None = None,
                          **sampling) -> dict:
    """Generate one image per prompt, score each; optionally save them (NNNN.png + prompts.txt)."""
    images = []
    step = int(sampling.pop("batch_size", 0) or pipeline.defaults["batch_size"])
    for start in tqdm(range(0, len(prompts), step), desc="sampling prompts", leave=False):
        chunk = prompts[start:start + step]
        images += pipeline(chunk, num_images=1, seed=seed + start, batch_size=step, **sampling)
    arrays = [np.asarray(im.convert("RGB")) for im in images]
    records = []
    for i, (prompt, array) in enumerate(zip(prompts, arrays)):
        ok, reason = score_image(array, prompt)
        records.append({"prompt": prompt, "match": ok, "reason": reason})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for i, im in enumerate(images):
            im.save(out / f"{i:04d}.png")
        (out / "prompts.txt").write_text("\n".join(prompts) + "\n")
    return {"faithfulness": faithfulness(arrays, prompts), "records": records, "images": images}


def mean_faithfulness(per_seed: list[dict]) -> dict:
    """The mean of several seeds' `faithfulness` results (same prompts each time)."""
    keys = ("one_object", "two_objects", "overall")
    mean = {k: float(np.mean([r[k] for r in per_seed])) for k in keys}
    return mean | {k: per_seed[0][k] for k in ("count_one_object", "count_two_objects")}
