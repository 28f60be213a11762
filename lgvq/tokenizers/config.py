"""Config schema of a stage-one tokenizer run (`lgvq train-tokenizer`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from lgvq.alignment.lgvq import LGVQConfig
from lgvq.config import DataConfig, TrainConfig


@dataclass
class TokenizerModelConfig:
    """Autoencoder (taming architecture) and quantizer."""

    ch: int = 64
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 4])  # downsampling f = 2^(len-1)
    num_res_blocks: int = 1
    attn_resolutions: list[int] = field(default_factory=lambda: [8])
    z_channels: int = 64
    embed_dim: int = 64  # channels after quant_conv, fed to the quantizer
    norm_groups: int = 32
    encoder_type: str = "conv"  # conv (taming's) | patch (each f x f patch encoded alone)
    codebook_size: int = 1024
    codebook_dim: int | None = None  # low-dimensional lookup (e.g. 8); None = embed_dim
    l2_norm: bool = False  # cosine lookup on l2-normalised codes
    beta: float = 0.25  # commitment weight
    legacy_beta: bool = False  # taming's placement: beta on the codebook term
    usage_window: int = 100  # training batches in the codebook-usage window
    dead_code_restart: bool = False
    restart_every: int = 100
    data_init: bool = False  # initialise codes from the first batch's encoder outputs
    restart_sampling: str = "uniform"  # new codes (restart, data init): uniform | error (k-means++ D^2)
    online_clustering: bool = False  # CVQ: pull rarely used codes toward anchors among encoder features
    cvq_decay: float = 0.99  # CVQ: EMA decay of code usage
    cvq_anchor: str = "probrandom"  # CVQ: probrandom | closest | random
    cvq_contrastive: bool = False  # CVQ: add CVQ-VAE's contrastive term
    quantizer: str = "vq"  # vq | vqct (codebook transferred from word vectors; needs vqct_vocab)
    vqct_vocab: str | None = None  # folder written by `lgvq build-vocab`
    vqct_top_k: int = 2  # adjective codes averaged per position (VQCT: 2)
    vqct_transfer: str = "gcn"  # gcn | mlp | linear (ablations: no graph, no transfer)
    vqct_dropout: float = 0.5


@dataclass
class TokenizerLossConfig:
    """Reconstruction, perceptual and adversarial terms (taming's VQLPIPSWithDiscriminator)."""

    rec_loss: str = "l1"  # l1 (VQ-GAN) | mse (VQ-VAE)
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
    alignment: str = "none"  # none | lgvq: add LG-VQ's language alignment losses to this tokenizer
    lgvq: LGVQConfig = field(default_factory=LGVQConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: TokenizerModelConfig = field(default_factory=TokenizerModelConfig)
    loss: TokenizerLossConfig = field(default_factory=TokenizerLossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
