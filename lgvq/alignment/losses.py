"""LG-VQ's alignment losses as plain functions of tensors (docs/methods.md, "LG-VQ").

    L_gsa  global semantic alignment (Eq. 5): InfoNCE between the visual [CLS] and the sentence feature
    L_ras  relationship alignment (Eqs. 7-8): code-code vs word-word cosine structure
    L_mtp  masked text prediction (Eq. 6): label-smoothed cross-entropy at masked positions
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F


def in_fp32(loss_fn):
    """Run a loss in fp32 even inside a bf16 autocast region (the alignment modules may run in
    bf16, see LGVQConfig.precision): floating-point tensor arguments are cast to float32."""

    @functools.wraps(loss_fn)
    def wrapper(*args, **kwargs):
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return loss_fn(*args, **kwargs)

    return wrapper


@in_fp32
def gsa_loss(cls: torch.Tensor, sentence: torch.Tensor, temperature: float = 1.0,
             symmetric: bool = False) -> torch.Tensor:
    """Eq. 5. cls (B, D), sentence (B, D) -> scalar.

    Paper form (default): cosine similarity, image-to-text, in-batch negatives, no temperature
    (tau = 1), averaged over the batch; the sentence features are targets (no gradient).
    `symmetric` adds the text-to-image direction (CLIP style) and averages the two."""
    img = F.normalize(cls, dim=-1)
    txt = F.normalize(sentence.detach(), dim=-1)
    logits = img @ txt.t() / temperature  # (B, B): image i against every caption j
    target = torch.arange(cls.shape[0], device=cls.device)
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.t(), target))
    return loss


def nearest_visual_tokens(words: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """For each word feature (B, L, D) the index of the most similar visual token (B, N, D) by
    cosine -> (B, L) long."""
    sim = F.normalize(words, dim=-1) @ F.normalize(visual, dim=-1).transpose(1, 2)  # (B, L, N)
    return sim.argmax(dim=-1)


@in_fp32
def ras_loss(words: torch.Tensor, codes: torch.Tensor, mask: torch.Tensor,
             mean_over_padding: bool = False) -> torch.Tensor:
    """Eq. 8 with a mean instead of the sum: words (B, L, D) word features, codes (B, L, D) the
    code vector picked for each word, mask (B, L) real tokens.

    (cos(w_i, w_j) - cos(z_i, z_j))^2 over pairs of real tokens; the word-word matrix is the
    target (detached). `mean_over_padding` reproduces the official code: padded rows/columns
    are zeroed in both matrices and the mean runs over all B x L x L entries."""
    w = F.normalize(words.detach(), dim=-1)
    z = F.normalize(codes, dim=-1)
    pair = (mask[:, :, None] & mask[:, None, :]).to(w.dtype)  # (B, L, L)
    target = (w @ w.transpose(1, 2)) * pair
    pred = (z @ z.transpose(1, 2)) * pair
    sq = (pred - target) ** 2
    if mean_over_padding:
        return sq.mean()
    return sq.sum() / pair.sum().clamp_min(1)


@in_fp32
def mtp_loss(logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.1) -> torch.Tensor:
    """Eq. 6 as ordinary cross-entropy: logits (M, V) at the M masked, non-padding positions,
    targets (M,) the original token ids. Zero (with a graph) when nothing was masked."""
    if targets.numel() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits, targets, label_smoothing=label_smoothing)
