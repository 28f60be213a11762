"""Language alignment of stage-one codebooks (LG-VQ), pluggable into any tokenizer."""

from __future__ import annotations

from lgvq.errors import ConfigError

ALIGNMENTS = ("none", "lgvq")


def build_alignment(spec: dict, code_dim: int, token_shape: tuple[int, int]):
    """The alignment module described by `spec` (stored in the tokenizer's config.json):
    {"method": "lgvq", "config": {...LGVQConfig...}, "text_width", "sentence_width", "vocab_size"}."""
    method = spec.get("method")
    if method == "lgvq":
        from lgvq.alignment.lgvq import LGVQAlignment, LGVQConfig

        return LGVQAlignment(LGVQConfig(**spec["config"]), code_dim, token_shape[0] * token_shape[1],
                             spec["text_width"], spec["sentence_width"], spec["vocab_size"])
    raise ConfigError(f"unknown alignment method {method!r}; expected one of {ALIGNMENTS[1:]}")
