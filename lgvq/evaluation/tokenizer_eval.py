"""Evaluate a trained tokenizer on a validation set.

PSNR and SSIM (8-bit, RGB), codebook usage and perplexity over the whole set, LPIPS where the VGG16
weights are present, and rFID through clean-fid where the Inception weights are present. A metric
whose weights are missing is reported as null with the reason; the others are still computed.

Where images have pure-black regions (shapes' background), how many different codes the
tokenizer gives patches that are entirely black, and their entropy (VQCT: the tuple of a
position's tokens counts as one code): a tokenizer can keep every code "in use" by splitting one
flat background into hundreds of codes, which a prior must then learn to predict (docs/results.md,
"Text-to-image prior on shapes").

Where the dataset has a scorer of images against captions (shapes does), it is run on the
reconstructions against each image's first caption (`reconstruction_faithfulness`, per group, e.g.
one- and two-object images apart): no prior over these codes can be more faithful than the
tokenizer's own decodings of real images.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

from lgvq.data.datasets import ImageTextDataset
from lgvq.data.loader import eval_loader
from lgvq.data.transforms import to_uint8
from lgvq.errors import DataError
from lgvq.evaluation.fid import fid_between_folders, load_inception
from lgvq.evaluation.metrics import psnr, ssim
from lgvq.tokenizers.lpips import LPIPS, MissingWeightsError, find_vgg16_weights
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.quantizers.base import usage_stats


@torch.no_grad()
def evaluate_tokenizer(model: VQTokenizer, dataset: ImageTextDataset, batch_size: int = 64,
                       limit: int | None = None, device: str | torch.device = "cpu",
                       inception_path: str | None = None, lpips_vgg_path: str | None = None,
                       compute_fid: bool = True, progress: bool = True) -> dict:
    device = torch.device(device)
    model = model.to(device).eval()
    results: dict = {"num_images": 0, "tokens_per_image": model.token_shape[0] * model.token_shape[1] * model.tokens_per_position,
                     "codebook_size": model.vocab_size, "notes": {}}
    lpips_net = None
    try:
        find_vgg16_weights(lpips_vgg_path, fix="pass --lpips-vgg-path FILE")
        lpips_net = LPIPS(lpips_vgg_path).to(device)
    except MissingWeightsError as e:
        results["notes"]["lpips"] = f"not computed: {e}"
    feature_model = None
    if compute_fid:
        try:
            feature_model = load_inception(inception_path, device)
        except MissingWeightsError as e:
            results["notes"]["rfid"] = str(e)
    counts = torch.zeros(model.vocab_size, dtype=torch.float64)
    black_counts: Counter = Counter()
    scorer = dataset.scorer()
    scored: dict[str, list[bool]] = {}
    psnrs, ssims, lpipss = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        real_dir, rec_dir = Path(tmp) / "real", Path(tmp) / "rec"
        real_dir.mkdir()
        rec_dir.mkdir()
        for batch in tqdm(eval_loader(dataset, batch_size, limit=limit), desc="evaluate tokenizer",
                          disable=not progress):
            images = batch["image"].to(device)
            if images.numel() == 0:
                continue
            ids = model.encode(images)
            recon = model.decode(ids)
            counts += torch.bincount(ids.flatten().cpu(), minlength=model.vocab_size).double()
            symbols, n = black_patch_codes(images, ids, model.vocab_size).unique(return_counts=True)
            black_counts.update(dict(zip(symbols.tolist(), n.tolist())))
            if scorer is not None:
                score_reconstructions(scorer, recon, batch["captions"], scored)
            psnrs.append(psnr(images, recon).cpu())
            ssims.append(ssim(images, recon).cpu())
            if lpips_net is not None:
                lpipss.append(lpips_net(images, recon.clamp(-1, 1)).cpu())
            if feature_model is not None:
                for i, (a, b) in enumerate(zip(to_uint8(images), to_uint8(recon))):
                    name = f"{results['num_images'] + i:06d}.png"
                    Image.fromarray(a).save(real_dir / name)
                    Image.fromarray(b).save(rec_dir / name)
            results["num_images"] += images.shape[0]
        if results["num_images"] == 0:
            raise DataError("the evaluation set has no readable images")
        results["psnr"] = float(torch.cat(psnrs).mean())
        results["ssim"] = float(torch.cat(ssims).mean())
        results["lpips"] = float(torch.cat(lpipss).mean()) if lpipss else None
        results["rfid"] = fid_between_folders(real_dir, rec_dir, feature_model, device) if feature_model else None
    stats = usage_stats(counts)
    results["codebook_usage"] = stats["usage"]
    results["perplexity"] = stats["perplexity"]
    results["black_patch_codes"], results["black_patch_entropy"] = None, None
    if black_counts:
        p = torch.tensor(list(black_counts.values()), dtype=torch.float64)
        p /= p.sum()
        results["black_patch_codes"] = int(p.numel())
        results["black_patch_entropy"] = max(0.0, float(-(p * p.log()).sum()))  # one code: 0, not -0
    results["reconstruction_faithfulness"] = None
    if scored:
        results["reconstruction_faithfulness"] = {k: sum(v) / len(v) for k, v in scored.items()} | {
            f"count_{k}": len(v) for k, v in scored.items()}
    return results


def score_reconstructions(scorer, recon: torch.Tensor, captions: list[list[str]],
                          scored: dict[str, list[bool]]) -> None:
    """Score reconstructions (B, 3, H, W) against each image's first caption where the scorer reads
    it (others are skipped); append to `scored` by the caption's group."""
    for image, caps in zip(to_uint8(recon.clamp(-1, 1)), captions):
        if caps and scorer.applies_to(caps[0]):
            scored.setdefault(scorer.group(caps[0]), []).append(scorer.score(image, caps[0])[0])


BLACK = -0.95  # a pixel darker than this in every channel ([-1, 1] scale) counts as black


def black_patch_codes(images: torch.Tensor, ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(n,) one int64 code per patch whose pixels are all black. images (B, 3, H, W) in [-1, 1];
    ids (B, h, w), or (B, h, w, k) with several tokens per position (VQCT: the k ids are
    combined into one number, base vocab_size)."""
    factor = images.shape[-1] // ids.shape[2]
    black = (images.amax(1) < BLACK).float()[:, None]  # (B, 1, H, W)
    all_black = F.avg_pool2d(black, factor)[:, 0] == 1  # (B, h, w)
    picked = ids[all_black].long()
    if picked.dim() == 2:
        picked = (picked * vocab_size ** torch.arange(picked.shape[1], device=picked.device)).sum(1)
    return picked
