"""LG-VQ's trainable alignment modules (training only; encode/decode never use them).

VisualTokenEncoder (f_theta_vt, Eq. 4): [CLS] + quantized codes -> small transformer -> text width.
    quantized (B, C, h, w) -> Z_vt (B, 1 + h*w, D_text); token 0 is [CLS].
MaskedTextPredictor (f_theta_m, Eq. 6): masked caption tokens attend to themselves and, through
    cross-attention, to Z_vt; logits through the frozen token-embedding matrix plus a bias.
CodeProjection (the official `wrsr_fc`): quantized code vectors -> text width, for L_ras.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


class VisualTokenEncoder(nn.Module):
    """Official `quantTransformer`: class embedding, position embeddings, ln_pre, a pre-LN
    transformer (paper: 2 layers, 1 head, MLP 4x), ln_post on all tokens, projection."""

    def __init__(self, code_dim: int, num_tokens: int, width: int, out_dim: int, layers: int = 2, heads: int = 1):
        super().__init__()
        self.input = nn.Linear(code_dim, width) if code_dim != width else nn.Identity()
        scale = width**-0.5
        self.cls = nn.Parameter(scale * torch.randn(width))
        self.pos = nn.Parameter(scale * torch.randn(num_tokens + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        layer = nn.TransformerEncoderLayer(width, heads, dim_feedforward=4 * width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim, bias=False)

    def forward(self, quantized: torch.Tensor) -> torch.Tensor:
        return self.proj(self.hidden(quantized))  # (B, 1 + N, out_dim)

    def hidden(self, quantized: torch.Tensor) -> torch.Tensor:
        """Z_vt before its final projection: (B, C, h, w) -> (B, 1 + N, width)."""
        x = self.input(rearrange(quantized, "b c h w -> b (h w) c"))
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos
        return self.ln_post(self.transformer(self.ln_pre(x)))


class CodeProjection(nn.Module):
    """Official `wrsLayer`: Linear (init std 0.01) -> GELU -> LayerNorm."""

    def __init__(self, code_dim: int, out_dim: int):
        super().__init__()
        self.linear = nn.Linear(code_dim, out_dim)
        nn.init.normal_(self.linear.weight, std=0.01)
        nn.init.zeros_(self.linear.bias)
        self.act, self.norm = nn.GELU(), nn.LayerNorm(out_dim)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return self.norm(self.act(self.linear(codes)))


class MaskedTextPredictor(nn.Module):
    """Cross-attention decoder over masked text (official: 2 layers, d = text width, 1 head,
    FFN d, ReLU, dropout 0.1, post-LN eps 1e-12), then the MLM head (Linear, GELU, LayerNorm)
    and logits against the frozen token-embedding matrix plus a learnable bias.

    Its text input is built by `masked_text_input` (lgvq.alignment.lgvq): learnable
    position-specific mask embeddings stand at masked positions.

    The layers are torch's `TransformerDecoderLayer`s (their parameters and their post-LN order),
    run by hand so that the cross-attention keys and values can come straight from Z_vt's
    pre-projection features: with Z_vt = H P^T, K = Z_vt W_k^T + b_k = H (W_k P)^T + b_k, the same
    numbers at a third of the cost when H is narrower than the text (the shapes preset: 128 vs
    384), which is most of the predictor's time on a CPU."""

    def __init__(self, dim: int, max_length: int, vocab_size: int, layers: int = 2, heads: int = 1,
                 dropout: float = 0.1, positions: bool = True):
        super().__init__()
        self.mask_embed = nn.Parameter(0.01 * torch.randn(max_length, dim))  # official init N(0, 0.01)
        # position embeddings for non-contextual (embedding-table) inputs; contextual ones carry positions
        self.pos = nn.Parameter(0.01 * torch.randn(max_length, dim)) if positions else None
        layer = nn.TransformerDecoderLayer(dim, heads, dim_feedforward=dim, dropout=dropout, activation="relu",
                                           batch_first=True, norm_first=False, layer_norm_eps=1e-12)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.head = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.LayerNorm(dim))
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, visual: torch.Tensor,
                visual_factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """text (B, L, D) masked text input, text_mask (B, L) real tokens, visual (B, N, D) Z_vt
        -> hidden states (B, L, D). `visual_factors` = (H (B, N, w), P (D, w)) with visual = H P^T
        gives the same result faster."""
        x, pad = text, ~text_mask
        for layer in self.decoder.layers:
            attn = layer.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
            x = layer.norm1(x + layer.dropout1(attn))
            x = layer.norm2(x + layer.dropout2(self._cross_attention(layer.multihead_attn, x, visual, visual_factors)))
            x = layer.norm3(x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))
        return x

    def _cross_attention(self, attn: nn.MultiheadAttention, x: torch.Tensor, visual: torch.Tensor,
                         factors: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Text queries x (B, L, D) over all visual tokens (no mask), with attn's weights."""
        d = x.shape[-1]
        w_q, w_kv = attn.in_proj_weight[:d], attn.in_proj_weight[d:]
        b_q, b_kv = attn.in_proj_bias[:d], attn.in_proj_bias[d:]
        q = F.linear(x, w_q, b_q)
        if factors is None:
            kv = F.linear(visual, w_kv, b_kv)
        else:
            hidden, proj = factors
            kv = F.linear(hidden, w_kv @ proj, b_kv)
        k, v = kv.chunk(2, dim=-1)
        q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=attn.num_heads) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=attn.dropout if self.training else 0.0)
        return attn.out_proj(rearrange(out, "b h n e -> b n (h e)"))

    def logits(self, hidden: torch.Tensor, token_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (M, D) at masked positions, token_embeddings (V, D) frozen -> (M, V)."""
        return self.head(hidden) @ self._frozen_in_autocast_dtype(token_embeddings.detach()).t() + self.bias

    def _frozen_in_autocast_dtype(self, weight: torch.Tensor) -> torch.Tensor:
        """Under autocast, the frozen (V, D) matrix cast once and kept: autocast would cast all
        30k rows again every step (it caches casts only of tensors that require grad)."""
        device = weight.device.type
        if not torch.is_autocast_enabled(device):
            return weight
        dtype = torch.get_autocast_dtype(device)
        key = (weight.data_ptr(), weight._version, weight.shape, dtype, weight.device)
        cached = getattr(self, "_frozen_cast", None)
        if cached is None or cached[0] != key:
            self._frozen_cast = cached = (key, weight.to(dtype))
        return cached[1]
