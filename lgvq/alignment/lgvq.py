"""LG-VQ (Liang et al., NeurIPS 2024) as a plug-in for any stage-one tokenizer.

    L = L_vq + gsa_weight * L_gsa + mtp_weight * L_mtp + ras_weight * L_ras

The module reads the tokenizer's quantized features (straight-through in training, so the
language losses reach the encoder) and cached frozen text features; the tokenizer's encode and
decode never touch it.

Masked text prediction and the official code's leak: the official code feeds the predictor
contextual features of the *unmasked* caption (CLIP is causal, so tokens after a masked word
have attended to it). By default (`mtp_text_context: embeddings`) the predictor sees only
non-contextual token embeddings of the unmasked words plus position embeddings, so nothing it
sees is computed from a masked word; `masked` runs the frozen encoder on the masked caption
instead (needs a mask token, costs an encoder pass per step); `unmasked` reproduces the
official behaviour for comparison.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from einops import rearrange
from torch import nn

from lgvq.alignment.losses import gsa_loss, mtp_loss, nearest_visual_tokens, ras_loss
from lgvq.alignment.modules import (
    CodeProjection,
    MaskedTextPredictor,
    VisualTokenEncoder,
)
from lgvq.devices import native_bf16
from lgvq.errors import ConfigError
from lgvq.text.encoder import TextFeatures

TEXT_CONTEXTS = ("embeddings", "masked", "unmasked")
PRECISIONS = ("auto", "bf16", "fp32")


@dataclass
class LGVQConfig:
    """`alignment: lgvq` options. Default weights: the official CelebA-HQ/TextCaps configs."""

    limits: ClassVar[dict[str, str]] = {
        "gsa_weight": ">= 0", "mtp_weight": ">= 0", "ras_weight": ">= 0", "max_length": ">= 2",
        "visual_width": ">= 1", "visual_layers": ">= 1", "visual_heads": ">= 1", "mtp_layers": ">= 1",
        "mtp_heads": ">= 1", "mtp_dropout": "[0, 1)", "mask_ratio_mean": "[0, 1]", "mask_ratio_std": ">= 0",
        "mask_ratio_min": "[0, 1]", "mask_ratio_max": "[0, 1]", "label_smoothing": "[0, 1)",
        "gsa_temperature": "> 0", "images_per_batch": ">= 0"}

    gsa_weight: float = 0.001
    mtp_weight: float = 0.01
    ras_weight: float = 0.0001
    text_encoder: str = "minilm"  # or openai/clip-vit-base-patch32 (the papers' choice)
    max_length: int = 30  # the official code truncates captions to 30 tokens
    pooling: Literal["auto", "eot", "mean", "cls"] = "auto"  # sentence feature: CLIP eot; BERT-like mean or cls
    visual_width: int = 256
    visual_layers: int = 2
    visual_heads: int = 1
    mtp_layers: int = 2
    mtp_heads: int = 1
    mtp_dropout: float = 0.1
    mtp_text_context: Literal["embeddings", "masked", "unmasked"] = "embeddings"  # unmasked: official, leaks
    # mask ratio r ~ truncated normal, drawn once per batch (official: mean 0.5, std 0.1 in [0.1, 0.3])
    mask_ratio_mean: float = 0.5
    mask_ratio_std: float = 0.1
    mask_ratio_min: float = 0.1
    mask_ratio_max: float = 0.3
    label_smoothing: float = 0.1
    gsa_temperature: float = 1.0
    gsa_symmetric: bool = False
    ras_mean_over_padding: bool = False  # true: the official mean over padded entries
    # probe: the heads learn from detached codes and the tokenizer gets no language gradient; a
    # plain tokenizer trained this way gets the same diagnostics as an aligned one (the baseline)
    detach_codes: bool = False
    # auto: bf16 autocast for the alignment modules where the device runs bf16 natively (recent
    # GPUs, CPUs with AVX512-BF16/AMX), else fp32; losses are returned in fp32 either way
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    keep_in_export: bool = True  # false: the saved tokenizer drops the alignment modules
    text_cache_dir: str | None = None  # on-disk text-feature cache; None = in memory only
    precompute_text: bool = True  # encode all training captions once before the first step
    # the alignment losses on the first N images of each training batch (0: all of them), the
    # reconstruction on all: a cheaper step where the alignment modules cost more than the
    # autoencoder (the quick preset's small one); N = 8 is the papers' batch
    images_per_batch: int = 0


def sample_mask_ratio(cfg: LGVQConfig) -> float:
    r = torch.empty(1)
    torch.nn.init.trunc_normal_(r, cfg.mask_ratio_mean, cfg.mask_ratio_std, cfg.mask_ratio_min,
                                cfg.mask_ratio_max)
    return float(r)


def random_word_mask(maskable: torch.Tensor, ratio: float) -> torch.Tensor:
    """Each maskable token (B, L) is masked with probability `ratio` (official sampling)."""
    return maskable & (torch.rand(maskable.shape, device=maskable.device) < ratio)


def exact_word_mask(maskable: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mask exactly min(k, #maskable) random maskable tokens per row (Table 3's Mask-1/Mask-3)."""
    scores = torch.rand(maskable.shape, generator=generator).to(maskable.device)
    scores = scores.masked_fill(~maskable, -1.0)
    top = scores.topk(k, dim=1).indices
    out = torch.zeros_like(maskable)
    out.scatter_(1, top, True)
    return out & maskable


class LGVQAlignment(nn.Module):
    def __init__(self, cfg: LGVQConfig, code_dim: int, num_tokens: int, text_width: int, sentence_width: int,
                 vocab_size: int):
        super().__init__()
        if cfg.precision not in PRECISIONS:
            raise ConfigError(f"lgvq.precision must be one of {PRECISIONS}, not {cfg.precision!r}")
        if cfg.mtp_text_context not in TEXT_CONTEXTS:
            raise ConfigError(f"lgvq.mtp_text_context must be one of {TEXT_CONTEXTS}, not {cfg.mtp_text_context!r}")
        self.cfg = cfg
        self.visual = VisualTokenEncoder(code_dim, num_tokens, cfg.visual_width, text_width, cfg.visual_layers,
                                         cfg.visual_heads)
        self.cls_proj = nn.Identity() if sentence_width == text_width else nn.Linear(text_width, sentence_width)
        self.predictor = (MaskedTextPredictor(text_width, cfg.max_length, vocab_size, cfg.mtp_layers, cfg.mtp_heads,
                                              cfg.mtp_dropout, positions=cfg.mtp_text_context == "embeddings")
                          if cfg.mtp_weight > 0 else None)
        self.code_proj = CodeProjection(code_dim, text_width) if cfg.ras_weight > 0 else None

    # -- pieces, also used by the diagnostics ----------------------------------------------------
    def visual_tokens(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> Z_vt (B, 1 + h*w, D); token 0 is [CLS]."""
        return self.visual(quantized)

    def image_embedding(self, z_vt: torch.Tensor) -> torch.Tensor:
        """[CLS] in the sentence-feature space, (B, Ds)."""
        return self.cls_proj(z_vt[:, 0])

    def masked_text_input(self, text: TextFeatures, masked: torch.Tensor, token_embeddings: torch.Tensor,
                          encode_ids: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] | None = None
                          ) -> torch.Tensor:
        """The predictor's text input (B, L, D): mask embeddings at masked positions, the rest
        from the configured context; zero at padding."""
        context = self.cfg.mtp_text_context
        L = text.input_ids.shape[1]
        if context == "embeddings":
            base = token_embeddings.detach()[text.input_ids] + self.predictor.pos[:L]
        elif context == "unmasked":  # official: contextual features of the whole caption
            base = text.tokens
        else:
            if encode_ids is None:
                raise ValueError("mtp_text_context=masked needs the text encoder in the step")
            base = encode_ids(text.input_ids, text.mask, masked)
        x = torch.where(masked[..., None], self.predictor.mask_embed[:L].expand_as(base), base)
        return x * text.mask[..., None]

    def predict_masked(self, z_vt: torch.Tensor | None, text: TextFeatures, masked: torch.Tensor,
                       token_embeddings: torch.Tensor, encode_ids=None,
                       visual_factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits (M, V) at the masked positions (row-major order of `masked`). z_vt may be None
        when `visual_factors` give it (MaskedTextPredictor.forward)."""
        x = self.masked_text_input(text, masked, token_embeddings, encode_ids)
        hidden = self.predictor(x, text.mask, z_vt, visual_factors)
        return self.predictor.logits(hidden[masked], token_embeddings)

    def relation_codes(self, quantized: torch.Tensor, patch_tokens: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """For each word (B, L, D) the projected code vector at its nearest visual token, (B, L, D).
        patch_tokens (B, N, D): Z_vt without [CLS]."""
        idx = nearest_visual_tokens(words, patch_tokens)
        codes = rearrange(quantized, "b c h w -> b (h w) c")
        picked = torch.gather(codes, 1, idx[..., None].expand(-1, -1, codes.shape[-1]))  # (B, L, C)
        return self.code_proj(picked)  # per-token projection: pick first, project L codes, not all N

    # -- training --------------------------------------------------------------------------------
    def forward(self, quantized: torch.Tensor, text: TextFeatures, token_embeddings: torch.Tensor,
                maskable: torch.Tensor, encode_ids=None) -> dict[str, torch.Tensor]:
        """Named losses (unweighted) and `align`, their weighted sum.
        quantized (B, C, h, w) straight-through codes; text: cached features on this device;
        maskable (B, L): real, non-special tokens. With captions for fewer images than B
        (lgvq.images_per_batch) the first ones are aligned."""
        cfg = self.cfg
        quantized = quantized[:text.input_ids.shape[0]]
        if cfg.detach_codes:
            quantized = quantized.detach()
        with torch.autocast(quantized.device.type, torch.bfloat16, enabled=self.use_bf16(quantized.device)):
            losses = self.losses(quantized, text, token_embeddings, maskable, encode_ids)
        return {name: value.float() for name, value in losses.items()}

    def use_bf16(self, device: torch.device) -> bool:
        """lgvq.precision: bf16 autocast for the alignment modules where the device runs bf16 natively."""
        if self.cfg.precision == "fp32":
            return False
        return self.cfg.precision == "bf16" or native_bf16(device)

    def losses(self, quantized: torch.Tensor, text: TextFeatures, token_embeddings: torch.Tensor,
               maskable: torch.Tensor, encode_ids=None) -> dict[str, torch.Tensor]:
        """`forward`'s work, inside its autocast region: the modules may run in bf16, the loss
        functions always compute in fp32 (`in_fp32`)."""
        cfg = self.cfg
        hidden = self.visual.hidden(quantized)  # (B, 1 + N, width): Z_vt = hidden P^T
        # Of Z_vt only [CLS] takes a gradient (L_gsa): the predictor reads `hidden` and P through
        # its factors, L_ras only the index of each word's nearest patch token. So the patch
        # tokens are projected without autograd, which spares a (B N, D) x (D, width) product and
        # its weight's twin in every backward pass.
        losses: dict[str, torch.Tensor] = {}
        total = quantized.new_zeros(())
        if cfg.gsa_weight > 0:
            image = self.image_embedding(self.visual.proj(hidden[:, :1]))  # Z_vt's [CLS] alone
            losses["gsa"] = gsa_loss(image, text.sentence, cfg.gsa_temperature, cfg.gsa_symmetric)
            total = total + cfg.gsa_weight * losses["gsa"]
        if self.predictor is not None:
            masked = random_word_mask(maskable, sample_mask_ratio(cfg))
            logits = self.predict_masked(None, text, masked, token_embeddings, encode_ids,
                                         visual_factors=(hidden, self.visual.proj.weight))
            losses["mtp"] = mtp_loss(logits, text.input_ids[masked], cfg.label_smoothing)
            total = total + cfg.mtp_weight * losses["mtp"]
        if self.code_proj is not None:
            with torch.no_grad():
                patch_tokens = self.visual.proj(hidden[:, 1:])  # (B, N, D)
            codes = self.relation_codes(quantized, patch_tokens, text.tokens)
            losses["ras"] = ras_loss(text.tokens, codes, text.mask, cfg.ras_mean_over_padding)
            total = total + cfg.ras_weight * losses["ras"]
        losses["align"] = total
        return losses
