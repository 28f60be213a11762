"""How a downstream head reads a frozen tokenizer's codes.

Each code id becomes its code vector from the tokenizer's codebook (frozen, kept as a buffer so
the head stands alone), projected to the head's width, plus a learned position embedding per
token slot; optionally a small transformer encoder runs over them (`encoder_depth > 0`).

    reader = CodeReader(code_vectors, token_count=256, dim=192, encoder_depth=1)
    feats = reader(ids)          # (B, N) code ids -> (B, N, dim)
"""

from __future__ import annotations

import torch
from torch import nn
from x_transformers import Encoder


def tokenizer_code_vectors(tokenizer) -> torch.Tensor:
    """(V, D) the vector each code id stands for in the tokenizer (its quantizer's code_vectors)."""
    tokenizer.eval()
    with torch.no_grad():
        return tokenizer.quantizer.code_vectors().detach().cpu().float().contiguous()


class CodeReader(nn.Module):
    def __init__(self, code_vectors: torch.Tensor, token_count: int, dim: int, encoder_depth: int = 0,
                 heads: int = 4):
        super().__init__()
        self.register_buffer("code_vectors", code_vectors.clone())  # (V, D) frozen
        self.proj = nn.Sequential(nn.LayerNorm(code_vectors.shape[1]), nn.Linear(code_vectors.shape[1], dim))
        self.position = nn.Parameter(torch.randn(token_count, dim) * 0.02)
        self.encoder = Encoder(dim=dim, depth=encoder_depth, heads=heads, attn_flash=True) if encoder_depth else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) code ids -> (B, N, dim)."""
        x = self.proj(self.code_vectors[ids]) + self.position[: ids.shape[1]]
        return self.encoder(x) if self.encoder is not None else x
