"""Config schema of a stage-one tokenizer run (`lgvq train-tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from lgvq.alignment.lgvq import LGVQConfig
from lgvq.config import DataConfig, TrainConfig
from lgvq.tokenizers.quantizers.config import QuantizerConfig
from lgvq.tokenizers.quantizers.legacy import upgrade_model_section


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
