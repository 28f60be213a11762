"""Autoregressive sampling from a PriorTransformer: temperature, top-k, top-p, classifier-free
guidance in one doubled batch, a KV cache, seeded generators, and completion of given tokens.

    tokens = generate(prior, Condition(labels=torch.tensor([3, 7])), cfg_scale=3.0, top_k=100,
                      generator=torch.Generator().manual_seed(0))      # (2, seq_len)

Guidance: the batch is [conditional; null-conditional] and the next-token logits are
`u + s * (c - u)` (LlamaGen's form; s = 1 is plain conditional sampling and skips the doubling).
`temperature=0` is greedy decoding.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from lgvq.errors import PromptError
from lgvq.priors.model import Condition, PriorTransformer


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """(B, V) logits with everything outside the top-k / nucleus set to -inf."""
    if top_k:
        logits = TopKLogitsWarper(top_k)(None, logits)
    if top_p is not None and top_p < 1.0:
        logits = TopPLogitsWarper(top_p)(None, logits)
    return logits


def next_token(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
               generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) -> (B,) ids."""
    if temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits / temperature, top_k, top_p), -1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None, cfg_scale: float) -> None:
    if temperature < 0:
        raise PromptError(f"temperature must be >= 0 (0 = greedy), not {temperature}")
    if top_k is not None and top_k < 0:
        raise PromptError(f"top_k must be >= 1 (or 0/None for no limit), not {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise PromptError(f"top_p must be in (0, 1], not {top_p}")
    if cfg_scale < 0:
        raise PromptError(f"cfg_scale must be >= 0, not {cfg_scale}")


@torch.no_grad()
def generate(prior: PriorTransformer, cond: Condition, temperature: float = 1.0, top_k: int | None = None,
             top_p: float | None = None, cfg_scale: float = 1.0, generator: torch.Generator | None = None,
             use_cache: bool = True, prompt_tokens: torch.Tensor | None = None, guidance_batch: bool = True,
             return_logits: bool = False, on_token: Callable[[int], None] | None = None
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample (B, seq_len) token ids. `prompt_tokens` (B, K) are kept and the rest is completed.
    With `return_logits` also the (guided) logits of every generated position, (B, seq_len - K, V).
    `guidance_batch=False` runs the conditional and null passes separately (for comparison only).
    `on_token(B)` is called after each position (a progress bar's update)."""
    check_sampling_args(temperature, top_k, top_p, cfg_scale)
    prior.check_condition(cond)
    was_training = prior.training
    prior.eval()
    b, device = cond.size(), prior.start.device
    guided = cfg_scale != 1.0 and prior.config.conditioning != "none"
    streams = [prior.prefix(cond)]  # (prefix, mask) per forward pass
    if guided:
        streams.append(prior.prefix(cond, drop=torch.ones(b, dtype=torch.bool, device=device)))
        if guidance_batch:  # one pass over [conditional; null]
            streams = [(torch.cat([streams[0][0], streams[1][0]]), torch.cat([streams[0][1], streams[1][1]]))]
    caches = [None] * len(streams)
    tokens = (prompt_tokens.to(device).long() if prompt_tokens is not None
              else torch.zeros(b, 0, dtype=torch.long, device=device))
    all_logits = []
    for _ in range(tokens.shape[1], prior.config.seq_len):
        outs = []
        for i, (prefix, mask) in enumerate(streams):
            x = tokens.repeat(prefix.shape[0] // b, 1)
            logits, new_cache = prior.run_network(x, prefix, mask, cache=caches[i], return_intermediates=True)
            if use_cache:
                caches[i] = new_cache
            outs.append(logits[:, -1].float())
        last = torch.cat(outs)
        if guided:
            c, u = last.chunk(2)
            last = u + cfg_scale * (c - u)
        if return_logits:
            all_logits.append(last)
        tokens = torch.cat([tokens, next_token(last, temperature, top_k, top_p, generator)[:, None]], 1)
        if on_token is not None:
            on_token(b)
    prior.train(was_training)
    if return_logits:
        return tokens, torch.stack(all_logits, 1)
    return tokens
