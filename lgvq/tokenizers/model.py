"""The stage-one VQ tokenizer: encoder -> quant_conv -> quantizer -> post_quant_conv -> decoder.

    ids = tok.encode(images)        # (B, 3, H, W) in [-1, 1] -> (B, H/f, W/f) long
    images = tok.decode(ids)        # -> (B, 3, H, W)
    out = tok(images)               # reconstruction + named VQ losses (training)

In eval mode `decode(encode(x))` equals `tok(x).reconstruction` exactly: the forward pass uses
the looked-up codes themselves, not the straight-through sum, outside training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from lgvq.alignment import build_alignment
from lgvq.errors import ConfigError, NotAlignedError
from lgvq.hub import LgvqModelMixin
from lgvq.runs import MODEL_CONFIG, RunDir
from lgvq.tokenizers.autoencoder import build_decoder, build_encoder, build_patch_decoder, build_patch_encoder
from lgvq.tokenizers.config import TokenizerModelConfig
from lgvq.tokenizers.quantizers import build_quantizer, quantized_channels
from lgvq.tokenizers.quantizers.config import QuantizerConfig, quantizer_config_from_dict
from lgvq.tokenizers.quantizers.legacy import upgrade_saved_config
from lgvq.tokenizers.quantizers.vqct import load_vqct_vocab


@dataclass
class TokenizerOutput:
    reconstruction: torch.Tensor  # (B, 3, H, W)
    ids: torch.Tensor  # (B, h, w)
    quantized: torch.Tensor  # (B, embed_dim, h, w), straight-through in training
    # vq (weighted sum), codebook, commitment; with alignment inputs also gsa / mtp / ras and align
    losses: dict[str, torch.Tensor] = field(default_factory=dict)


class VQTokenizer(LgvqModelMixin, ConfigMixin):
    model_kind = "tokenizer"
    config_name = MODEL_CONFIG

    @register_to_config
    def __init__(self, resolution: int = 64, in_channels: int = 3, ch: int = 64, ch_mult: tuple = (1, 2, 2, 4),
                 num_res_blocks: int = 1, attn_resolutions: tuple = (8,), z_channels: int = 64, embed_dim: int = 64,
                 norm_groups: int = 32, encoder_type: str = "conv", decoder_type: str = "conv",
                 quantizer_config: dict | None = None, alignment: dict | None = None):
        """`quantizer_config`: the run's `model.quantizer` as the dict config.json keeps (read as a
        QuantizerConfig; default: plain VQ with 1024 codes); `alignment`: the alignment spec
        (training only)."""
        super().__init__()
        quantizer = QuantizerConfig() if quantizer_config is None else quantizer_config_from_dict(quantizer_config)
        if num_res_blocks < 1:
            raise ConfigError(f"num_res_blocks must be >= 1 (diffusers' blocks need one), not {num_res_blocks}")
        arch = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks,
                    attn_resolutions=list(attn_resolutions), resolution=resolution, norm_groups=norm_groups)
        if encoder_type not in ("conv", "patch"):
            raise ConfigError(f"model.encoder_type must be conv or patch, not {encoder_type!r}")
        if decoder_type not in ("conv", "patch"):
            raise ConfigError(f"model.decoder_type must be conv or patch, not {decoder_type!r}")
        self.encoder = (build_patch_encoder if encoder_type == "patch" else build_encoder)(in_channels, z_channels,
                                                                                         **arch)
        quant_channels = quantized_channels(quantizer, embed_dim)
        self.quantizer = build_quantizer(quantizer, embed_dim)
        self.quant_conv = nn.Conv2d(z_channels, quant_channels, 1)
        self.post_quant_conv = nn.Conv2d(quant_channels, z_channels, 1)
        self.decoder = (build_patch_decoder if decoder_type == "patch" else build_decoder)(in_channels, z_channels,
                                                                                         **arch)
        # training-only language alignment (e.g. LG-VQ); see lgvq.alignment.build_alignment
        self.aligner = build_alignment(alignment, quant_channels, self.token_shape) if alignment else None

    @classmethod
    def from_model_config(cls, cfg: TokenizerModelConfig, resolution: int, alignment: dict | None = None
                          ) -> VQTokenizer:
        """A new tokenizer from a run's `model` config (VQCT: with its vocabulary folder's words)."""
        arch = {k: v for k, v in asdict(cfg).items() if k != "quantizer"}
        quantizer, words = cfg.quantizer, None
        if quantizer.kind == "vqct":
            words = load_vqct_vocab(quantizer.vqct.vocab)
            sizes = {"num_adjectives": words["num_adjectives"], "num_words": words["vectors"].shape[0],
                     "word_width": words["vectors"].shape[1], "num_edges": words["edges"].shape[0]}
            quantizer = replace(quantizer, vqct=replace(quantizer.vqct, **sizes))
        model = cls(resolution=resolution, alignment=alignment, quantizer_config=asdict(quantizer), **arch)
        if words is not None:
            model.quantizer.set_words(words)
        return model

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """Loading: tokenizers saved with flat quantizer arguments still load (upgrade_saved_config)."""
        return super().extract_init_dict(upgrade_saved_config(dict(config_dict)), **kwargs)

    def without_alignment(self) -> VQTokenizer:
        """A copy for inference: same weights, no alignment modules."""
        config = {k: v for k, v in self.config.items() if not k.startswith("_")} | {"alignment": None}
        plain = type(self)(**config)
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("aligner.")}
        plain.load_state_dict(state)
        return plain.to(self.device)

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.config.ch_mult) - 1)

    @property
    def token_shape(self) -> tuple[int, int]:
        side = self.config.resolution // self.downsample_factor
        return (side, side)

    @property
    def vocab_size(self) -> int:
        """Ids the tokens take (VQCT: adjective and noun codes together)."""
        return self.quantizer.num_codes

    @property
    def tokens_per_position(self) -> int:
        """Tokens per grid position: 1, or VQCT's k adjective ids + 1 noun id."""
        return self.quantizer.tokens_per_position

    # -- encode / decode -------------------------------------------------------------------
    def encode_features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> pre-quantization features (B, embed_dim, h, w)."""
        return self.quant_conv(self.encoder(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> code ids (B, h, w), or (B, h, w, k + 1) for VQCT."""
        return self.quantizer.encode(self.encode_features(images))

    def decode_features(self, quantized: torch.Tensor) -> torch.Tensor:
        """(B, embed_dim, h, w) -> images (B, 3, H, W)."""
        return self.decoder(self.post_quant_conv(quantized))

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids (B, h, w) (VQCT: (B, h, w, k + 1)) -> images (B, 3, H, W)."""
        return self.decode_features(self.quantizer.embed(ids))

    def last_layer_weight(self) -> torch.Tensor:
        """The decoder's output convolution, where taming measures the adaptive GAN weight."""
        return self.decoder.conv_out.weight

    def forward(self, images: torch.Tensor, alignment_inputs: dict | None = None) -> TokenizerOutput:
        """Reconstruction and VQ losses; with `alignment_inputs` (text features etc., see
        TokenizerTask) also the alignment losses, computed here so that DDP sees them."""
        q = self.quantizer(self.encode_features(images))
        losses = {"vq": q.loss, "codebook": q.codebook_loss, "commitment": q.commitment_loss}
        if alignment_inputs is not None:
            if self.aligner is None:
                raise NotAlignedError("this tokenizer has no alignment modules (config alignment: none)")
            losses |= self.aligner(q.quantized, **alignment_inputs)
        return TokenizerOutput(self.decode_features(q.quantized), q.ids, q.quantized, losses)

    def usage(self) -> dict[str, float]:
        return self.quantizer.usage()

    @torch.no_grad()
    def code_vectors(self) -> torch.Tensor:
        """(V, D) the vector each code id stands for (its quantizer's codebook), float on the CPU:
        what heads and priors with code features read, frozen."""
        self.eval()
        return self.quantizer.code_vectors().detach().cpu().float().contiguous()


def run_code_vectors(run_dir: str | Path) -> torch.Tensor:
    """(V, D) the code vectors of the tokenizer a prior or head run keeps beside it (RUN/tokenizer)."""
    return VQTokenizer.from_pretrained(RunDir(Path(run_dir)).tokenizer).code_vectors()
