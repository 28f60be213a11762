"""Config schema of a stage-one tokenizer run (`lgvq train-tokenizer`)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar, Literal

from lgvq.alignment.lgvq import LGVQConfig
from lgvq.config import DataConfig, TrainConfig


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


def quantizer_dict(**fields) -> dict:
    """`VQTokenizer(quantizer_config=...)`: a QuantizerConfig with these fields (nested ones as dicts), as
    the dict the model saves, e.g. quantizer_dict(codebook_size=512, l2_norm=True)."""
    cvq, vqct = CVQConfig(**fields.pop("cvq", {})), VQCTConfig(**fields.pop("vqct", {}))
    return asdict(QuantizerConfig(**fields, cvq=cvq, vqct=vqct))


@dataclass
class TokenizerModelConfig:
    """Autoencoder (taming architecture) and quantizer."""

    limits: ClassVar[dict[str, str]] = {
        "ch": ">= 1", "ch_mult": "each >= 1", "num_res_blocks": ">= 1", "attn_resolutions": "each >= 1",
        "z_channels": ">= 1", "embed_dim": ">= 1", "norm_groups": ">= 1"}

    ch: int = 64
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])  # downsampling f = 2^(len-1)
    num_res_blocks: int = 1
    attn_resolutions: list[int] = field(default_factory=lambda: [8])
    z_channels: int = 64
    embed_dim: int = 64  # channels after quant_conv, fed to the quantizer
    norm_groups: int = 32
    encoder_type: Literal["conv", "patch"] = "conv"  # conv (taming's) | patch (each f x f patch encoded alone)
    decoder_type: Literal["conv", "patch"] = "conv"  # conv (taming's) | patch (each code decoded to its patch alone)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)


# model.X keys of the flat layout configs had before the quantizer got its own section
LEGACY_MODEL_KEYS = {
    **{k: f"quantizer.{k}" for k in ("codebook_size", "codebook_dim", "l2_norm", "beta", "legacy_beta",
                                      "usage_window", "dead_code_restart", "restart_every", "data_init",
                                      "restart_sampling")},
    "cvq_decay": "quantizer.cvq.decay", "cvq_anchor": "quantizer.cvq.anchor",
    "cvq_contrastive": "quantizer.cvq.contrastive", "vqct_vocab": "quantizer.vqct.vocab",
    "vqct_top_k": "quantizer.vqct.top_k", "vqct_transfer": "quantizer.vqct.transfer",
    "vqct_dropout": "quantizer.vqct.dropout",
}


def upgrade_model_section(model: dict) -> dict:
    """A `model:` section in the flat layout (model.codebook_size, model.quantizer: vqct,
    model.online_clustering: true, model.cvq_decay, ...) -> the nested one; new layouts pass."""
    model = dict(model)
    quantizer = model.pop("quantizer", None)
    nested = dict(quantizer) if isinstance(quantizer, dict) else {}
    if isinstance(quantizer, str):
        nested["kind"] = quantizer
    if model.pop("online_clustering", False) and nested.get("kind", "vq") == "vq":
        nested["kind"] = "cvq"
    for old, new in LEGACY_MODEL_KEYS.items():
        if old in model:
            node = nested
            *parents, leaf = new.split(".")[1:]
            for parent in parents:
                node = node.setdefault(parent, {})
            node[leaf] = model.pop(old)
    if nested:
        model["quantizer"] = nested
    return model


@dataclass
class TokenizerLossConfig:
    """Reconstruction, perceptual and adversarial terms (taming's VQLPIPSWithDiscriminator)."""

    limits: ClassVar[dict[str, str]] = {
        "perceptual_weight": ">= 0", "codebook_weight": ">= 0", "disc_weight": ">= 0", "disc_start": ">= 0",
        "disc_ndf": ">= 1", "disc_layers": ">= 1", "disc_lr": "> 0"}

    rec_loss: Literal["l1", "mse"] = "l1"  # l1 (VQ-GAN) | mse (VQ-VAE)
    perceptual_weight: float = 0.0  # LPIPS; > 0 needs torchvision's VGG16 weights
    lpips_vgg_path: str | None = None
    codebook_weight: float = 1.0
    disc_weight: float = 0.8  # 0 disables the discriminator (VQ-VAE)
    disc_start: int = 10000  # generator step at which the GAN terms switch on
    adaptive_weight: bool = True  # lambda = ||grad L_rec|| / ||grad L_G|| at the decoder's last layer
    disc_ndf: int = 64
    disc_layers: int = 3
    disc_lr: float | None = None  # None = train.lr


@dataclass
class TokenizerRunConfig:
    name: str = "vqgan"
    alignment: Literal["none", "lgvq"] = "none"  # lgvq: add LG-VQ's language alignment losses
    lgvq: LGVQConfig = field(default_factory=LGVQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @staticmethod
    def upgrade_legacy(layer: dict) -> dict:
        """Read a config layer written for the flat model layout (see `upgrade_model_section`)."""
        if isinstance(layer.get("model"), dict):
            layer = layer | {"model": upgrade_model_section(layer["model"])}
        return layer
