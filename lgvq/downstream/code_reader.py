"""How a downstream head reads a frozen tokenizer's codes.

Each code id becomes its code vector from the tokenizer's codebook (frozen, kept as a buffer so
the head stands alone), projected to the head's width, plus a learned position embedding per
token slot. Optionally residual 3 x 3 convolutions run over the token grid (`conv_layers > 0`:
a shape is an arrangement of neighbouring codes, which a convolution sees at once), then a small
transformer encoder over the tokens (`encoder_depth > 0`).

    reader = CodeReader(code_vectors, token_count=256, dim=192, encoder_depth=1)
    feats = reader(ids)          # (B, N) code ids -> (B, N, dim)
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import nn

from lgvq.errors import ConfigError
from lgvq.xtransformers import Encoder


class GridConv(nn.Module):
    """LayerNorm per grid cell (no statistics across cells, so the block stays local), 3 x 3
    convolution, GELU. (B, C, h, w) -> (B, C, h, w)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return nn.functional.gelu(self.conv(x))


class CodeReader(nn.Module):
    def __init__(self, code_vectors: torch.Tensor, token_count: int, dim: int, encoder_depth: int = 0,
                 heads: int = 4, conv_layers: int = 0, token_shape: tuple[int, int] | None = None):
        super().__init__()
        self.register_buffer("code_vectors", code_vectors.clone())  # (V, D) frozen
        self.proj = nn.Sequential(nn.LayerNorm(code_vectors.shape[1]), nn.Linear(code_vectors.shape[1], dim))
        self.position = nn.Parameter(torch.randn(token_count, dim) * 0.02)
        self.conv = None
        if conv_layers:
            h, w = token_shape or (0, 0)
            if h * w < 1 or token_count % (h * w):
                raise ConfigError(f"conv_layers needs the token grid: token_shape {token_shape} does not divide "
                                  f"{token_count} tokens")
            self.grid = (h, w, token_count // (h * w))  # k tokens per position (VQCT) share a grid cell
            channels = dim * self.grid[2]
            self.conv = nn.ModuleList(GridConv(channels) for _ in range(conv_layers))
        self.encoder = Encoder(dim=dim, depth=encoder_depth, heads=heads, attn_flash=True) if encoder_depth else None

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, N) code ids -> (B, N, dim)."""
        x = self.proj(self.code_vectors[ids]) + self.position[: ids.shape[1]]
        if self.conv is not None:
            h, w, k = self.grid
            grid = rearrange(x, "b (h w k) d -> b (k d) h w", h=h, w=w, k=k)
            for layer in self.conv:
                grid = grid + layer(grid)
            x = rearrange(grid, "b (k d) h w -> b (h w k) d", k=k)
        return self.encoder(x) if self.encoder is not None else x
