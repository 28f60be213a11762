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
    transformer (paper: 2 layers, 1 head, MLP 4x), ln_post on all tokens, projection. The layers
    are torch's `TransformerEncoderLayer`s (their parameters and order), run by hand."""

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
        x = self.ln_pre(x)
        # torch's pre-LN encoder layers (dropout 0), run by hand for the attention below
        for layer in self.transformer.layers:
            x = x + self_attention(layer.self_attn, layer.norm1(x))
            x = x + layer.linear2(layer.activation(layer.linear1(layer.norm2(x))))
        return self.ln_post(x)


def self_attention(attn: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    """attn over x (B, N, D), no mask, no dropout, as softmax(q k^T / sqrt(e)) v written out: at
    the visual encoder's size (257 tokens, one head of 128) the CPU's fused attention kernel takes
    twice as long in the backward pass as these four matrix products."""
    q, k, v = (rearrange(t, "b n (h e) -> b h n e", h=attn.num_heads)
               for t in F.linear(x, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1))
    p = ((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).softmax(-1)  # (B, h, N, N)
    return attn.out_proj(rearrange(p @ v, "b h n e -> b n (h e)"))


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
    run by hand so that the cross-attention never forms its keys and values: the few text queries
    meet Z_vt's pre-projection features H (Z_vt = H P^T) directly, the same numbers at a fraction
    of the cost (the shapes preset: 14 queries, 257 visual tokens, H 128 wide against 384), which
    was most of the predictor's time on a CPU."""

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

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, visual: torch.Tensor | None,
                visual_factors: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """text (B, L, D) masked text input, text_mask (B, L) real tokens, visual (B, N, D) Z_vt
        -> hidden states (B, L, D). `visual_factors` = (H (B, N, w), P (D, w)) with visual = H P^T
        gives the same result faster, and then `visual` is not read (it may be None)."""
        x, pad = text, ~text_mask
        for layer in self.decoder.layers:
            attn = layer.self_attn(x, x, x, key_padding_mask=pad, need_weights=False)[0]
            x = layer.norm1(x + layer.dropout1(attn))
            x = layer.norm2(x + layer.dropout2(self._cross_attention(layer.multihead_attn, x, visual, visual_factors)))
            x = layer.norm3(x + layer.dropout3(layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))))
        return x

    def _cross_attention(self, attn: nn.MultiheadAttention, x: torch.Tensor, visual: torch.Tensor,
                         factors: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        """Text queries x (B, L, D) over all visual tokens (no mask), with attn's weights, without
        forming the keys and values. With visual = H P^T (or H = visual, P = I), per head:
            K = H A_k^T + b_k,  V = H A_v^T + b_v,  A = W P  (D/heads, w)
            softmax(q K^T) = softmax((q A_k) H^T)     (q . b_k is the same for every key: it cancels)
            p V = (p H) A_v^T + (sum_j p_j) b_v       (the sum is 1 unless dropout zeroed some p_j)
        so the N visual tokens meet only the queries, never a (B, N, 2D) projection."""
        heads, width = attn.num_heads, x.shape[-1]
        hidden, proj = factors if factors is not None else (visual, None)
        w_q, w_k, w_v = attn.in_proj_weight.chunk(3)
        b_q, _, b_v = attn.in_proj_bias.chunk(3)
        if proj is not None:
            w_k, w_v = w_k @ proj, w_v @ proj  # (D, w)
        q = rearrange(F.linear(x, w_q, b_q), "b l (h e) -> b h l e", h=heads) * (width // heads) ** -0.5
        # einsum rather than broadcasting @, which would copy the weights and H once per image and head
        q = torch.einsum("bhle,hew->bhlw", q, rearrange(w_k, "(h e) w -> h e w", h=heads))
        scores = torch.einsum("bhlw,bnw->bhln", q, hidden)  # (B, h, L, N)
        p = F.dropout(scores.softmax(-1), attn.dropout, self.training)
        pooled = torch.einsum("bhln,bnw->bhlw", p, hidden)
        out = torch.einsum("bhlw,hwe->bhle", pooled, rearrange(w_v, "(h e) w -> h w e", h=heads))
        out = out + p.sum(-1, keepdim=True) * rearrange(b_v, "(h e) -> h 1 e", h=heads)  # (B, h, L, e)
        return attn.out_proj(rearrange(out, "b h l e -> b l (h e)"))

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
