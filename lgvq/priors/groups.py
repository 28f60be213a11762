"""Groups of codes per prior position (`model.group_size`): the prior reads and predicts each
g x g block of the token grid at one position, a g^2-times shorter sequence.

    groups = to_groups(tokens, (16, 16), 2)            # (B, 256) raster ids -> (B, 64, 4)
    tokens = from_groups(groups, (16, 16), 2)          # and back

A position's input is the sum of one embedding per code of its group (one table per slot in the
group). Its output feeds `CodeGroupHead`, which predicts the group's codes one after another: code j
from the decoder's output plus the embeddings of codes 0..j-1 of the same group, through a small
residual MLP. The decoder does the raster-order work over a quarter of the positions (g = 2); the
head resolves which codes go together inside a block, where independent predictions could pick an
edge patch that does not fit its neighbour.
"""

from __future__ import annotations

import torch
from torch import nn


def to_groups(tokens: torch.Tensor, shape: tuple[int, int], g: int) -> torch.Tensor:
    """(B, h * w, ...) in raster order -> (B, (h / g) * (w / g), g * g, ...): blocks in raster order,
    each block's codes in raster order."""
    (h, w), b, rest = shape, tokens.shape[0], tokens.shape[2:]
    blocks = tokens.reshape(b, h // g, g, w // g, g, *rest).transpose(2, 3)
    return blocks.reshape(b, (h // g) * (w // g), g * g, *rest)


def from_groups(groups: torch.Tensor, shape: tuple[int, int], g: int) -> torch.Tensor:
    """The inverse of `to_groups`: (B, n, g * g, ...) -> (B, h * w, ...)."""
    (h, w), b, rest = shape, groups.shape[0], groups.shape[3:]
    rows = groups.reshape(b, h // g, w // g, g, g, *rest).transpose(2, 3)
    return rows.reshape(b, h * w, *rest)


def slot_rows(codes: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """(..., j) code ids of consecutive slots -> their rows in a table with one block of
    `vocab_size` rows per slot: code c of the i-th slot at row i * V + c."""
    return codes + torch.arange(codes.shape[-1], device=codes.device) * vocab_size


class GroupEmbedding(nn.Module):
    """The codes of slots 1..k-1 of each group as one summed embedding (slot 0 goes through the
    decoder's own token embedding): (B, n, k) ids -> (B, n, dim)."""

    def __init__(self, vocab_size: int, dim: int, k: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.table = nn.Embedding(vocab_size * (k - 1), dim)  # slot j's code c at row (j - 1) * V + c
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, groups: torch.Tensor) -> torch.Tensor:
        return self.table(slot_rows(groups[..., 1:], self.vocab_size)).sum(-2)


class CodeGroupHead(nn.Module):
    """Predicts a group's k codes in order from the decoder's output h at its position:
    code j from h + slot_j + sum of the embeddings of codes 0..j-1, through a residual MLP, then
    `to_logits` (the decoder's output layer, shared)."""

    def __init__(self, vocab_size: int, dim: int, k: int, hidden: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.slot = nn.Parameter(torch.randn(k, dim) * 0.02)
        self.previous = nn.Embedding(vocab_size * (k - 1), dim)  # slot j's code c at row j * V + c
        nn.init.normal_(self.previous.weight, std=0.02)
        self.mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm = nn.LayerNorm(dim)

    def features(self, h: torch.Tensor, slots: int | slice) -> torch.Tensor:
        z = h + self.slot[slots]
        return self.norm(z + self.mlp(z))

    def forward(self, hidden: torch.Tensor, groups: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: hidden (B, n, dim), groups (B, n, k) -> features (B, n, k, dim). `extra`
        (B, n, k - 1, dim): more of codes 0..k-2's embeddings (their code vectors), added to the rows."""
        # (B, n, k - 1, dim): the embedding of code j, seen by the slots after j
        earlier = self.previous(slot_rows(groups[..., :-1], self.vocab_size))
        earlier = earlier if extra is None else earlier + extra
        context = torch.cat([torch.zeros_like(earlier[..., :1, :]), earlier.cumsum(-2)], -2)  # codes before j
        return self.features(hidden[..., None, :] + context, slice(None))

    def step(self, h: torch.Tensor, codes: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        """Sampling: h (B, dim) and the group's codes so far (B, j) -> features of code j (B, dim);
        `extra` (B, dim): more of those codes' summed embeddings, as in `forward`."""
        if codes.shape[1]:
            h = h + self.previous(slot_rows(codes, self.vocab_size)).sum(1)
        if extra is not None:
            h = h + extra
        return self.features(h, codes.shape[1])
