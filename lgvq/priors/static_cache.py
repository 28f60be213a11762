"""A static KV cache for sampling: the prior's x-transformers decoder run one position at a time
over keys and values preallocated for the whole sequence (gpt-fast's and LlamaGen's design).

x-transformers' own cache grows by concatenation at every step, so each step allocates new
tensors and launches many small kernels: on a GPU a step costs the same whatever the batch. Here
every decode step has the same shapes (the query attends over all `max_len` slots, the ones not
yet written masked out) and writes in place, so it can be compiled and replayed as a CUDA graph
(`torch.compile(mode="reduce-overhead")`, on CUDA). On the CPU the same step runs eagerly and draws
the same tokens as x-transformers' cache (tests/test_prior.py checks it token for token).

It reads the weights of x-transformers' modules and follows their forward for the settings the
prior uses (pre-norm layers, rotary positions, optional QK-norm; `supported` says when).

    decoder = StaticDecoder(prior, batch=2 * B, max_len=prefix_len + positions)
    hidden = decoder.prefill(embeddings, mask)          # (B', T, dim), after the final norm
    hidden = decoder.step(embedding, position)          # (B', 1, dim): position is a 0-d tensor
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgvq.xtransformers import apply_rotary_pos_emb, l2norm


def supported(net: nn.Module) -> bool:
    """Whether the decoder's layers are the plain kind this module follows (the prior's settings)."""
    layers = net.attn_layers
    if getattr(layers, "layer_types", None) is None or not hasattr(layers, "rotary_pos_emb"):
        return False
    for (norms, block, residual), kind in zip(layers.layers, layers.layer_types):
        if kind not in ("a", "f") or norms[1] is not None or norms[2] is not None:
            return False
        if getattr(residual, "residual_scale", None) is not None or residual.scale_residual_constant != 1:
            return False
        if kind == "a" and (block.num_mem_kv or block.use_latent_kv or block.head_scale or block.kv_heads != block.heads
                            or block.to_v_gate is not None or block.to_output_gate is not None):
            return False
    return len(layers.skip_combines) == 0 or all(c is None for c in layers.skip_combines)


class StaticDecoder:
    """Preallocated keys and values (one (B, heads, max_len, dim_head) pair per attention layer)
    and the decoder's forward over them."""

    def __init__(self, net: nn.Module, batch: int, max_len: int):
        if not supported(net):
            raise ValueError("this decoder uses x-transformers features the static cache does not follow")
        self.net, layers = net, net.attn_layers
        self.blocks = [(norms[0], block, kind) for (norms, block, _), kind in zip(layers.layers, layers.layer_types)]
        self.final_norm = layers.final_norm
        attention = next(block for _, block, kind in self.blocks if kind == "a")
        weight = attention.to_q.weight
        heads = attention.heads
        self.shape = (batch, heads, max_len, attention.to_q.out_features // heads)
        count = sum(kind == "a" for _, _, kind in self.blocks)
        # allocated at the first write, in the dtype the projections give (bf16 under autocast)
        self.keys: list[torch.Tensor | None] = [None] * count
        self.values: list[torch.Tensor | None] = [None] * count
        self.key_mask = torch.zeros(batch, max_len, dtype=torch.bool, device=weight.device)
        self.slots = torch.arange(max_len, device=weight.device)
        self.freqs = layers.rotary_pos_emb(self.slots)[0] if layers.rotary_pos_emb is not None else None
        # eager decoding attends over the slots written so far (`length`); a compiled step keeps the
        # full max_len so that its shapes never change (set `fixed_shapes`)
        self.fixed_shapes = False
        self.length = 0

    @torch.no_grad()
    def prefill(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The first positions (B, T, dim) with their mask (B, T) -> hidden states (B, T, dim). No
        query sees a masked (padding) position's key, so what is computed at one does not matter."""
        self.length = x.shape[1]
        return self._run(x, torch.arange(x.shape[1], device=x.device), mask)

    @torch.no_grad()
    def step(self, x: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """One more position (B, 1, dim) at `position` (a 0-d long tensor, so that the step's
        shapes never change) -> its hidden state (B, 1, dim)."""
        self.length += 1
        return self._run(x, position.reshape(1), None)

    def _run(self, x: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, t = x.shape[:2]
        self.key_mask.index_copy_(1, positions, mask if mask is not None else x.new_ones(b, t, dtype=torch.bool))
        # each query sees the written, unmasked slots up to its own position: (B, 1, T, slots)
        slots = self.key_mask.shape[1] if self.fixed_shapes else self.length
        visible = self.key_mask[:, None, None, :slots] & (self.slots[None, :slots] <= positions[:, None])[None, None]
        freqs = self.freqs.index_select(1, positions) if self.freqs is not None else None
        layer = 0
        for norm, block, kind in self.blocks:
            if kind == "f":
                x = block(norm(x)) + x
                continue
            x = self._attend(block, norm(x), layer, positions, freqs, visible) + x
            layer += 1
        return self.final_norm(x)

    def _attend(self, attention: nn.Module, h: torch.Tensor, layer: int, positions: torch.Tensor,
                freqs: torch.Tensor | None, visible: torch.Tensor) -> torch.Tensor:
        q, k, v = attention.to_q(h), attention.to_k(h), attention.to_v(h)
        q, k, v = attention.split_q_heads(q), attention.split_k_heads(k), attention.split_v_heads(v)
        if attention.qk_norm:
            q = l2norm(q, groups=attention.qk_norm_groups) * attention.qk_norm_q_scale
            k = l2norm(k, groups=attention.qk_norm_groups) * attention.qk_norm_k_scale
        if freqs is not None:
            q, k = apply_rotary_pos_emb(q, freqs), apply_rotary_pos_emb(k, freqs)
        if self.keys[layer] is None:
            self.keys[layer] = k.new_zeros(self.shape)
            self.values[layer] = v.new_zeros(self.shape)
        self.keys[layer].index_copy_(2, positions, k)
        self.values[layer].index_copy_(2, positions, v)
        scale = attention.attend.scale
        if scale is not None:  # x-transformers folds its scale into q and lets SDPA apply the default
            q = q * (scale / q.shape[-1] ** -0.5)
        slots = visible.shape[-1]
        out = F.scaled_dot_product_attention(q, self.keys[layer][:, :, :slots], self.values[layer][:, :, :slots],
                                             attn_mask=visible)
        return attention.to_out(attention.merge_heads(out))
