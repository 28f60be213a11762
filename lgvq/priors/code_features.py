"""The tokenizer's code vectors inside the prior (`model.code_features`).

A prior normally learns one free embedding row and one output row per code id, so each of the
hundreds of codes that draw object edges is learnt on its own, from the few hundred times it
occurs in a short run. With code features the prior also reads what each id stands for: the
tokenizer's code vector (frozen, kept as a buffer so the prior stands alone), layer-normed, then

- on the input side projected to the prior's width, one projection per slot of a position (one
  slot, or g^2 with `group_size` g), and added to the id's learned row;
- on the output side a score for every code, the projected hidden state against each code vector,
  added to the learned logits.

Codes that draw alike have nearby vectors, so what the prior learns about one of them carries to
the others from the first step on. It is the same reading the downstream heads use
(lgvq/downstream/code_reader.py).

    features = CodeFeatures(vocab_size=1024, code_width=32, dim=128, slots=4)
    features.set_code_vectors(tokenizer.code_vectors())   # (V, D), frozen
    features.embed(ids)          # (B, n, k) ids -> (B, n, k, dim), slot j through projection j
    features.output_rows(dtype)  # (V, dim): scores of hidden states, added to the output layer's rows
"""

from __future__ import annotations

import torch
from torch import nn


class CodeFeatures(nn.Module):
    def __init__(self, vocab_size: int, code_width: int, dim: int, slots: int):
        super().__init__()
        # (V, D), filled from the tokenizer (`set_code_vectors`); saved with the prior's weights
        self.register_buffer("code_vectors", torch.zeros(vocab_size, code_width))
        self.norm = nn.LayerNorm(code_width)
        self.inputs = nn.Parameter(torch.randn(slots, code_width, dim) * code_width ** -0.5 * 0.1)
        self.output = nn.Linear(dim, code_width, bias=False)
        nn.init.normal_(self.output.weight, std=0.02)

    def set_code_vectors(self, vectors: torch.Tensor) -> None:
        if vectors.shape != self.code_vectors.shape:
            raise ValueError(f"code vectors {tuple(vectors.shape)} do not fit this prior's "
                             f"{tuple(self.code_vectors.shape)} (vocabulary x code width)")
        self.code_vectors.copy_(vectors)

    def vectors(self, dtype: torch.dtype) -> torch.Tensor:
        return self.norm(self.code_vectors).to(dtype)  # (V, D)

    def embed(self, ids: torch.Tensor, slots: slice = slice(None)) -> torch.Tensor:
        """(..., k) ids of consecutive slots -> (..., k, dim): slot j's code through slot j's projection."""
        x = self.vectors(self.inputs.dtype)[ids]
        return torch.einsum("...kc,kcd->...kd", x, self.inputs[slots])

    def output_rows(self, dtype: torch.dtype) -> torch.Tensor:
        """(V, dim): row v scores a hidden state h as code v's vector against h projected,
        C_v . (O h) = (C O)_v . h, so the prior adds these rows to its output layer's."""
        return self.vectors(dtype) @ self.output.weight.to(dtype)
