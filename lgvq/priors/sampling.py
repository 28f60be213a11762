"""Autoregressive sampling from a PriorTransformer: temperature, top-k, top-p, classifier-free
guidance in one doubled batch, a static KV cache, seeded generators, and completion of given tokens.

    tokens = generate(prior, Condition(labels=torch.tensor([3, 7])), cfg_scale=3.0, top_k=100,
                      generator=torch.Generator().manual_seed(0))      # (2, seq_len)

Guidance: the batch is [conditional; null-conditional] and the next-token logits are
`u + s * (c - u)` (LlamaGen's form; s = 1 is plain conditional sampling and skips the doubling).
`temperature=0` is greedy decoding.

Re-ranking (`return_scores`): each sample's score is the sum over its drawn tokens of
log p(token | condition) - log p(token | null condition), the prior's own log-likelihood ratio of
the condition given the image, log p(c | x) - log p(c) by Bayes. Both terms come from the passes
that guidance runs anyway, so the score costs nothing extra there; `best_of` in the pipelines
draws several samples per prompt and keeps the highest-scoring one.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from lgvq.errors import PromptError
from lgvq.priors.groups import to_groups
from lgvq.priors.model import Condition, PriorTransformer
from lgvq.priors.static_cache import StaticDecoder, supported


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
    for name, value in (("temperature", temperature), ("top_p", top_p), ("cfg_scale", cfg_scale)):
        if value is not None and not math.isfinite(value):
            raise PromptError(f"{name} must be a finite number, not {value}")
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
             return_logits: bool = False, on_token: Callable[[int], None] | None = None,
             return_scores: bool = False, static_cache: bool = True,
             compile_step: bool = False) -> torch.Tensor | tuple[torch.Tensor, ...]:
    """Sample (B, seq_len) token ids. `prompt_tokens` (B, K) are kept and the rest is completed.
    With `return_logits` also the (guided) logits of every generated position, (B, seq_len - K, V).
    `guidance_batch=False` runs the conditional and null passes separately (for comparison only).
    `on_token(B)` is called after each token (a progress bar's update). A prior with
    `group_size` g > 1 runs its decoder once per g x g block and samples the block's codes in turn.
    With `return_scores` also each sample's (B,) conditional minus null log-likelihood of its
    sampled tokens (see the module's docstring; a conditional prior only), returned last.
    `static_cache` (with `use_cache`): decode over preallocated keys and values
    (lgvq/priors/static_cache.py: the same tokens, faster: docs/results.md), else through x-transformers'
    growing cache; `compile_step`: the static decode step compiled as a CUDA graph (CUDA only)."""
    check_sampling_args(temperature, top_k, top_p, cfg_scale)
    if top_k and top_k > prior.config.vocab_size:
        raise PromptError(f"top_k must be at most the codebook size, {prior.config.vocab_size} (0 turns it off), "
                          f"not {top_k}")
    prior.check_condition(cond)
    was_training = prior.training
    prior.eval()
    b, device = cond.size(), prior.start.device
    grouped = prior.config.group_size > 1
    if return_scores and prior.config.conditioning == "none":
        raise PromptError("re-ranking needs a conditional prior: an unconditional one has no condition to score")
    guided = cfg_scale != 1.0 and prior.config.conditioning != "none"
    with_null = guided or return_scores  # the null-condition pass: guidance and scores read it
    streams = [prior.prefix(cond)]  # (prefix, mask) per forward pass
    if with_null:
        streams.append(prior.prefix(cond, drop=torch.ones(b, dtype=torch.bool, device=device)))
        if guidance_batch:  # one pass over [conditional; null]
            streams = [(torch.cat([streams[0][0], streams[1][0]]), torch.cat([streams[0][1], streams[1][1]]))]

    scores = torch.zeros(b, device=device)

    def pick(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits of every stream's rows, (streams * B, V) -> (guided logits (B, V), sampled ids (B,))."""
        nonlocal scores
        logits = logits.float()
        if with_null:
            c, u = logits.chunk(2)
            logits = u + cfg_scale * (c - u) if guided else c
        if on_token is not None:
            on_token(b)
        ids = next_token(logits, temperature, top_k, top_p, generator)
        if return_scores:
            ratio = torch.log_softmax(c, -1) - torch.log_softmax(u, -1)
            scores = scores + ratio.gather(1, ids[:, None])[:, 0]
        return logits, ids

    static = static_cache and use_cache and supported(prior.net)
    runners = [(StaticStream if static else CachedStream)(prior, prefix, mask, use_cache, compile_step)
               for prefix, mask in streams]
    positions = prompt_positions(prior, prompt_tokens, b, device)  # (B, K) or (B, K / g^2, g^2)
    kept = positions.shape[1]
    all_logits = []
    for _ in range(kept, prior.num_positions):
        # each stream's last output: logits, or the decoder's embedding with groups
        outs = [runner.last(positions) for runner in runners]
        if not grouped:
            logits, ids = pick(torch.cat(outs))
            all_logits += [logits] if return_logits else []
            positions = torch.cat([positions, ids[:, None]], 1)
            continue
        hidden, codes, group_logits = torch.cat(outs), positions.new_zeros(b, 0), []
        for _ in range(prior.config.group_size ** 2):
            features = prior.group_features(hidden, codes.repeat(hidden.shape[0] // b, 1))
            logits, ids = pick(prior.output_logits(features))
            group_logits.append(logits)
            codes = torch.cat([codes, ids[:, None]], 1)
        all_logits += [torch.stack(group_logits, 1)] if return_logits else []
        positions = torch.cat([positions, codes[:, None]], 1)
    prior.train(was_training)
    tokens = prior.from_positions(positions)
    out = (tokens,)
    if return_logits:
        logits = torch.stack(all_logits, 1)
        if grouped:  # (B, n - K', g^2, V) in block order -> (B, N - K, V) in raster order
            logits = torch.cat([logits.new_zeros(b, kept, *logits.shape[2:]), logits], 1)
            logits = prior.from_positions(logits)[:, kept * prior.config.group_size ** 2:]
        out += (logits,)
    if return_scores:
        out += (scores,)
    return out[0] if len(out) == 1 else out


class CachedStream:
    """One forward pass per step through x-transformers, with its KV cache (or without, to compare)."""

    def __init__(self, prior: PriorTransformer, prefix: torch.Tensor, mask: torch.Tensor, use_cache: bool,
                 compile_step: bool = False):
        self.prior, self.prefix, self.mask, self.use_cache = prior, prefix, mask, use_cache
        self.rows, self.cache = prefix.shape[0], None

    def last(self, positions: torch.Tensor) -> torch.Tensor:
        """The positions so far (B, n[, g^2]) -> the last one's logits (rows, V), or its embedding
        (rows, dim) with group_size > 1; rows: B for each stream in the pass ([conditional; null])."""
        out, cache = self.prior.run_network(rows_of(positions, self.rows), self.prefix, self.mask, cache=self.cache,
                                            return_embeddings_and_intermediates=True)
        if self.use_cache:
            self.cache = cache
        return out[:, -1] if self.prior.config.group_size > 1 else self.prior.output_logits(out[:, -1])


class StaticStream:
    """The same through a StaticDecoder: the prefix and the given positions in one pass, then one
    position a step over the preallocated cache."""

    def __init__(self, prior: PriorTransformer, prefix: torch.Tensor, mask: torch.Tensor, use_cache: bool = True,
                 compile_step: bool = False):
        self.prior, self.prefix, self.mask, self.rows = prior, prefix, mask, prefix.shape[0]
        self.decoder = StaticDecoder(prior.net, self.rows, prefix.shape[1] + prior.num_positions)
        self.step = self.decoder.step
        if compile_step and prefix.device.type == "cuda":  # replayed as a CUDA graph
            self.decoder.fixed_shapes = True
            self.step = torch.compile(self.decoder.step, mode="reduce-overhead", dynamic=False)
        self.prefilled = False  # the prefix and the given positions are in the cache

    def last(self, positions: torch.Tensor) -> torch.Tensor:
        n, dtype = positions.shape[1], self.prefix.dtype
        if not self.prefilled:
            x = torch.cat([self.prefix, self.prior.input_embeddings(rows_of(positions, self.rows), dtype)], 1)
            ones = self.mask.new_ones(self.rows, n)
            hidden = self.decoder.prefill(x, torch.cat([self.mask, ones], 1))[:, -1]
        else:
            x = self.prior.input_embeddings(rows_of(positions[:, n - 1:], self.rows), dtype, start=n - 1)
            index = torch.tensor(self.prefix.shape[1] + n - 1, device=x.device)
            hidden = self.step(x, index)[:, -1].clone()  # a graph's output is overwritten by its next replay
        self.prefilled = True
        return hidden if self.prior.config.group_size > 1 else self.prior.output_logits(hidden)


def rows_of(positions: torch.Tensor, rows: int) -> torch.Tensor:
    """(B, n, ...) -> (rows, n, ...): the batch repeated once per stream of a doubled pass."""
    return positions.repeat(rows // positions.shape[0], *(1,) * (positions.dim() - 1))


def prompt_positions(prior: PriorTransformer, prompt_tokens: torch.Tensor | None, b: int,
                     device) -> torch.Tensor:
    """Given leading tokens (B, K) in raster order -> the decoder's positions holding them; with
    group_size g they must be whole rows of blocks (K a multiple of g x the grid's width)."""
    g, (_, w) = prior.config.group_size, prior.config.token_shape
    if prompt_tokens is None:
        return torch.zeros(b, 0, *((g * g,) if g > 1 else ()), dtype=torch.long, device=device)
    tokens = prompt_tokens.to(device).long()
    if g == 1:
        return tokens
    if tokens.shape[1] % (g * w):
        raise PromptError(f"this prior samples {g} x {g} blocks: the given tokens must be whole rows of blocks "
                          f"(a multiple of {g * w} tokens, not {tokens.shape[1]})")
    rows = tokens.shape[1] // w
    return to_groups(tokens, (rows, w), g)
