"""The one interface every quantizer of a tokenizer implements, and the factory that builds one
from its config (`model.quantizer`, saved in the tokenizer's config.json as a dict).

    q = build_quantizer({"kind": "vq", "codebook_size": 1024, ...}, embed_dim=64)
    out = q(z)                      # training: quantized (straight-through), ids, losses
    ids = q.encode(z)               # (B, C, h, w) -> (B, h, w), or (B, h, w, k + 1) for VQCT
    z_q = q.embed(ids)              # ids -> (B, C, h, w), exactly the eval-mode quantized features
    q.code_vectors()                # (num_codes, D) what each id stands for (downstream heads)
    q.usage()                       # share of codes used and perplexity over the training window
    q.num_codes, q.tokens_per_position
"""

from __future__ import annotations

from typing import Protocol

import torch

from lgvq.errors import ConfigError
from lgvq.tokenizers.quantizer import VectorQuantizer
from lgvq.tokenizers.vqct import VQCTQuantizer, build_vqct_quantizer


class Quantizer(Protocol):
    num_codes: int
    tokens_per_position: int

    def __call__(self, z: torch.Tensor): ...  # -> .quantized, .ids, .loss, .codebook_loss, .commitment_loss

    def encode(self, z: torch.Tensor) -> torch.Tensor: ...

    def embed(self, ids: torch.Tensor) -> torch.Tensor: ...

    def code_vectors(self) -> torch.Tensor: ...

    def usage(self) -> dict[str, float]: ...


def quantized_channels(config: dict, embed_dim: int) -> int:
    """Channels of the quantized features: VQCT quantizes an adjective and a noun half."""
    return 2 * embed_dim if config["kind"] == "vqct" else embed_dim


def build_quantizer(config: dict, embed_dim: int) -> VectorQuantizer | VQCTQuantizer:
    """The quantizer of a `model.quantizer` config (as a dict). VQCT's also holds its vocabulary's
    sizes (num_adjectives, num_words, word_width, num_edges), filled when the model is first built."""
    kind = config["kind"]
    if kind == "vqct":
        return build_vqct_quantizer(config["vqct"], embed_dim, config["beta"], config["legacy_beta"],
                                    config["usage_window"], config["l2_norm"])
    if kind not in ("vq", "cvq"):
        raise ConfigError(f"model.quantizer.kind must be vq, cvq or vqct, not {kind!r}")
    cvq = config["cvq"]
    return VectorQuantizer(
        codebook_size=config["codebook_size"], dim=embed_dim, codebook_dim=config["codebook_dim"],
        l2_norm=config["l2_norm"], beta=config["beta"], legacy_beta=config["legacy_beta"],
        usage_window=config["usage_window"], dead_code_restart=config["dead_code_restart"],
        restart_every=config["restart_every"], data_init=config["data_init"], online_clustering=kind == "cvq",
        cvq_decay=cvq["decay"], cvq_anchor=cvq["anchor"], cvq_contrastive=cvq["contrastive"],
        restart_sampling=config["restart_sampling"])


# the flat constructor arguments tokenizers were saved with before `quantizer` became one dict
_FLAT = ("codebook_size", "codebook_dim", "l2_norm", "beta", "legacy_beta", "usage_window", "dead_code_restart",
         "restart_every", "data_init", "restart_sampling")


def upgrade_saved_config(config: dict) -> dict:
    """A tokenizer config.json written with flat quantizer arguments -> `quantizer_config` (new
    configs pass). Defaults are those the flat constructor had."""
    if "quantizer_config" in config:
        return config
    config = dict(config)
    flat = {k: config.pop(k) for k in _FLAT if k in config}
    q = {"codebook_size": 1024, "codebook_dim": None, "l2_norm": False, "beta": 0.25, "legacy_beta": False,
         "usage_window": 100, "dead_code_restart": False, "restart_every": 100, "data_init": False,
         "restart_sampling": "uniform"} | flat
    online = config.pop("online_clustering", False)
    q["cvq"] = {"decay": config.pop("cvq_decay", 0.99), "anchor": config.pop("cvq_anchor", "probrandom"),
                "contrastive": config.pop("cvq_contrastive", False)}
    spec = config.pop("vqct", None)
    q["kind"] = "vqct" if spec else "cvq" if online else "vq"
    q["vqct"] = {"vocab": None, "top_k": 2, "transfer": "gcn", "dropout": 0.5} | (spec or {})
    if spec:  # VQCT's lookup was read from its spec (saved before it honoured l2_norm: Euclidean)
        q["l2_norm"] = q["vqct"].pop("l2_norm", False)
    config["quantizer_config"] = q
    return config
