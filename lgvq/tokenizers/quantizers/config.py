"""The quantizer's config (`model.quantizer` of a tokenizer run): one typed object from the YAML
file to the quantizer's constructor. The saved tokenizer keeps it as a dict in its config.json
(`quantizer_config`), read back with `quantizer_config_from_dict`. Its defaults are written here
only; older layouts are read in `lgvq.tokenizers.quantizers.legacy`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from lgvq.config import load_config


@dataclass
class CVQConfig:
    """CVQ-VAE's online clustering (`kind: cvq`): rarely used codes move toward batch features."""

    limits: ClassVar[dict[str, str]] = {
        "decay": "[0, 1)"}

    decay: float = 0.99  # EMA decay of code usage
    anchor: Literal["probrandom", "closest", "random"] = "probrandom"
    contrastive: bool = False  # add CVQ-VAE's contrastive term


@dataclass
class VQCTConfig:
    """VQCT's transferred codebook (`kind: vqct`): codes are a graph network's output over words."""

    limits: ClassVar[dict[str, str]] = {
        "top_k": ">= 1", "dropout": "[0, 1)"}

    vocab: str | None = None  # folder written by `lgvq build-vocab`
    top_k: int = 2  # adjective codes averaged per position (VQCT: 2)
    transfer: Literal["gcn", "mlp", "linear"] = "gcn"  # mlp / linear: the ablations without the graph
    dropout: float = 0.5
    # the codebook that encodes and decodes outside training: `draw`, one dropout draw fixed when the
    # model is built and saved with it (the decoder only ever saw dropout codebooks); `mean`, the
    # deterministic dropout-free one, as the official code does (docs/methods.md, "VQCT")
    eval_codebook: Literal["draw", "mean"] = "draw"
    # the vocabulary's sizes, filled from `vocab` when the model is first built (not set by hand)
    num_adjectives: int = 0
    num_words: int = 0
    word_width: int = 0
    num_edges: int = 0


@dataclass
class QuantizerConfig:
    """The quantizer: plain VQ, CVQ or VQCT, and how codes are looked up and kept in use."""

    limits: ClassVar[dict[str, str]] = {
        "codebook_size": ">= 2", "codebook_dim": ">= 1", "beta": ">= 0", "usage_window": ">= 1",
        "restart_every": ">= 1"}

    kind: Literal["vq", "cvq", "vqct"] = "vq"
    codebook_size: int = 1024  # vq / cvq (VQCT's size is its vocabulary's)
    codebook_dim: int | None = None  # low-dimensional lookup (e.g. 8); None = the model's embed_dim
    l2_norm: bool = False  # cosine lookup on l2-normalised codes
    beta: float = 0.25  # commitment weight
    legacy_beta: bool = False  # taming's placement: beta on the codebook term
    usage_window: int = 100  # training batches in the codebook-usage window
    dead_code_restart: bool = False
    restart_every: int = 100
    data_init: bool = False  # initialise codes from the first batch's encoder outputs
    restart_sampling: Literal["uniform", "error"] = "uniform"  # new codes: at random, or k-means++ by error
    cvq: CVQConfig = field(default_factory=CVQConfig)
    vqct: VQCTConfig = field(default_factory=VQCTConfig)


def quantizer_config_from_dict(values: dict) -> QuantizerConfig:
    """The typed config of a `quantizer_config` dict (as a saved tokenizer holds it), with every key
    and value checked as a YAML file's are."""
    return load_config(QuantizerConfig, base=values)


def quantizer_dict(**fields) -> dict:
    """`VQTokenizer(quantizer_config=...)`: a QuantizerConfig with these fields (nested ones as dicts), as
    the dict the model saves, e.g. quantizer_dict(codebook_size=512, l2_norm=True)."""
    cvq, vqct = CVQConfig(**fields.pop("cvq", {})), VQCTConfig(**fields.pop("vqct", {}))
    return asdict(QuantizerConfig(**fields, cvq=cvq, vqct=vqct))
