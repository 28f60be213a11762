"""x-transformers' building blocks, imported without the deprecation warning its import prints
(it decorates a helper with `torch.jit.script`, which torch deprecates; nothing to act on)."""

from lgvq.quiet import quiet_warnings

with quiet_warnings(FutureWarning, r"`torch.jit.script` is deprecated"):
    from x_transformers import Decoder, Encoder, TransformerWrapper
    from x_transformers.x_transformers import apply_rotary_pos_emb, l2norm  # shared with static_cache.py

__all__ = ["Decoder", "Encoder", "TransformerWrapper", "apply_rotary_pos_emb", "l2norm"]
