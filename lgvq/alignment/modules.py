"""LG-VQ's trainable alignment modules (training only; encode/decode never use them).

VisualTokenEncoder (f_theta_vt, Eq. 4): [CLS] + quantized codes -> small transformer -> text width.
    quantized (B, C, h, w) -> Z_vt (B, 1 + h*w, D_text); token 0 is [CLS].
MaskedTextPredictor (f_theta_m, Eq. 6): masked caption tokens attend to themselves and, through
    cross-attention, to Z_vt; logits through the frozen token-embedding matrix plus a bias.
CodeProjection (the official `wrsr_fc`): quantized code vectors -> text width, for L_ras.
"""

from __future__ import annotations

import torch
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
        x = self.input(rearrange(quantized, "b c h w -> b (h w) c"))
        x = torch.cat([self.cls.expand(x.shape[0], 1, -1), x], dim=1) + self.pos
        x = self.transformer(self.ln_pre(x))
        return self.proj(self.ln_post(x))  # (B, 1 + N, out_dim)


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
    position-specific mask embeddings stand at masked positions."""

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

    def forward(self, text: torch.Tensor, text_mask: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
        """text (B, L, D) masked text input, text_mask (B, L) real tokens, visual (B, N, D)
        -> hidden states (B, L, D)."""
        return self.decoder(text, visual, tgt_key_padding_mask=~text_mask)

    def logits(self, hidden: torch.Tensor, token_embeddings: torch.Tensor) -> torch.Tensor:
        """hidden (M, D) at masked positions, token_embeddings (V, D) frozen -> (M, V)."""
        return self.head(hidden) @ token_embeddings.detach().t() + self.bias
