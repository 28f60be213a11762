"""What every quantizer of a tokenizer is to the model that calls it, and the codebook-usage window
they share.

    out = q(z)            # training: QuantizerOutput (quantized straight-through, ids, losses)
    ids = q.encode(z)     # (B, C, h, w) -> (B, h, w), or (B, h, w, k + 1) for VQCT
    z_q = q.embed(ids)    # ids -> (B, C, h, w), exactly the eval-mode quantized features
    q.code_vectors()      # (num_codes, D) what each id stands for (downstream heads)
    q.usage()             # share of codes used and perplexity over the training window
    q.num_codes, q.tokens_per_position

Codebook usage is tracked over a sliding window of the last `usage_window` training batches
(per-batch perplexity depends on batch size; a window does not).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, C, h, w), straight-through in training
    ids: torch.Tensor  # (B, h, w) long, or (B, h, w, k + 1) for VQCT
    loss: torch.Tensor  # scalar: codebook + commitment terms, weighted
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


class Quantizer(nn.Module):
    """The interface VQTokenizer calls. Subclasses set `num_codes`, call `init_usage_window` and
    implement forward, encode, embed and code_vectors."""

    tokens_per_position: int = 1
    num_codes: int

    def init_usage_window(self, window: int, num_codes: int) -> None:
        # one histogram row per training batch, written round-robin
        self.register_buffer("usage_history", torch.zeros(window, num_codes))
        self.register_buffer("usage_step", torch.zeros((), dtype=torch.long))

    def record_usage(self, ids: torch.Tensor) -> None:
        record_usage(self.usage_history, self.usage_step, ids)

    def usage(self) -> dict[str, float]:
        """Share of codes used and perplexity over the sliding window of training batches."""
        return usage_stats(self.usage_history.sum(0))

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def code_vectors(self) -> torch.Tensor:
        raise NotImplementedError


def dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


@torch.no_grad()
def record_usage(history: torch.Tensor, step: torch.Tensor, ids: torch.Tensor) -> None:
    """Write this batch's code histogram into row `step % window` of `history` (W, K); step += 1."""
    counts = torch.bincount(ids.flatten(), minlength=history.shape[1]).float()
    if dist_ready():
        dist.all_reduce(counts)
    history[int(step) % history.shape[0]] = counts
    step += 1


def usage_stats(counts: torch.Tensor) -> dict[str, float]:
    """From a code histogram (K,): fraction of codes used, perplexity exp(H(p))."""
    total = counts.sum()
    if total <= 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).float().mean()), "perplexity": float(entropy.exp())}
