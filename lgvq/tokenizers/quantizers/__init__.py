"""The quantizers of a tokenizer, one file per kind behind one interface (`base.Quantizer`):

    vq.py     plain VQ: nearest code, optional low-dimensional / l2-normalised lookup, restarts
    cvq.py    CVQ-VAE: VQ whose rarely used codes are re-anchored online
    vqct.py   VQCT: a codebook transferred from word vectors, adjective and noun halves

    q = build_quantizer(QuantizerConfig(kind="vq", codebook_size=1024), embed_dim=64)

`config.py` holds the config (`model.quantizer`), `legacy.py` reads its older layouts.
"""

from __future__ import annotations

from lgvq.errors import ConfigError
from lgvq.tokenizers.quantizers.base import Quantizer, QuantizerOutput
from lgvq.tokenizers.quantizers.config import QuantizerConfig
from lgvq.tokenizers.quantizers.cvq import CVQQuantizer
from lgvq.tokenizers.quantizers.vq import VectorQuantizer
from lgvq.tokenizers.quantizers.vqct import VQCTQuantizer

KINDS: dict[str, type[Quantizer]] = {"vq": VectorQuantizer, "cvq": CVQQuantizer, "vqct": VQCTQuantizer}

__all__ = ["KINDS", "Quantizer", "QuantizerConfig", "QuantizerOutput", "build_quantizer", "quantized_channels"]


def quantized_channels(cfg: QuantizerConfig, embed_dim: int) -> int:
    """Channels of the quantized features: VQCT quantizes an adjective and a noun half."""
    return 2 * embed_dim if cfg.kind == "vqct" else embed_dim


def build_quantizer(cfg: QuantizerConfig, embed_dim: int) -> Quantizer:
    """The quantizer of a `model.quantizer` config (VQCT's holds its vocabulary's sizes, filled
    when the model is first built)."""
    if cfg.cvq.contrastive and cfg.kind != "cvq":  # the term belongs to CVQ's class; say so, not ignore it
        raise ConfigError(f"model.quantizer.cvq.contrastive needs model.quantizer.kind: cvq (it is {cfg.kind})")
    return KINDS[cfg.kind](cfg, embed_dim)
