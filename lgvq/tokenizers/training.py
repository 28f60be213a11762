"""Stage-one training: the tokenizer (and its discriminator) as a task of the shared Trainer."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from lgvq.alignment import ALIGNMENTS
from lgvq.alignment.lgvq import LGVQConfig
from lgvq.config import ConfigError
from lgvq.data.datasets import build_dataset
from lgvq.data.loader import train_stream
from lgvq.images import save_grid
from lgvq.text.cache import TextFeatureCache
from lgvq.text.encoder import FrozenTextEncoder
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.losses import VQGANLoss
from lgvq.tokenizers.lpips import find_vgg16_weights
from lgvq.tokenizers.model import VQTokenizer
from lgvq.training.trainer import OptimizerSpec, StepContext, TrainingTask, muon_and_adam

PREVIEW_IMAGES = 8


class TokenizerTask(TrainingTask):
    main_module = "tokenizer"
    progress_keys = ("rec", "vq", "usage", "d_loss", "gsa", "mtp", "ras")

    def __init__(self, cfg: TokenizerRunConfig):
        self.cfg = cfg
        if cfg.alignment not in ALIGNMENTS:
            raise ConfigError(f"alignment must be one of {ALIGNMENTS}, not {cfg.alignment!r}")
        if cfg.loss.perceptual_weight > 0:
            find_vgg16_weights(cfg.loss.lpips_vgg_path)  # missing LPIPS weights stop the run at start-up
        self.aligned = cfg.alignment != "none"
        self.dataset = (build_dataset(cfg.data, "train", require_captions=self.aligned)
                        if not cfg.data.streaming else None)
        self.text: AlignmentText | None = AlignmentText(cfg.lgvq) if self.aligned else None
        if self.text is not None and self.dataset is not None and cfg.lgvq.precompute_text:
            # one batched pass over the captions instead of small encoder runs inside the steps
            self.text.cache.precompute(self.dataset.all_captions())
            self.text.cache.save()
        self.loss: VQGANLoss | None = None
        self._preview_batch: torch.Tensor | None = None

    def build_modules(self) -> dict[str, nn.Module]:
        # everything with random initial weights is built here, after the Trainer set the seed
        self.loss = VQGANLoss(self.cfg.loss)
        spec = self.text.alignment_spec() if self.text is not None else None
        modules: dict[str, nn.Module] = {
            "tokenizer": VQTokenizer.from_model_config(self.cfg.model, self.cfg.data.image_size, spec)}
        if self.loss.discriminator is not None:
            modules["discriminator"] = self.loss.discriminator
        return modules

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        specs = (muon_and_adam("tokenizer", t, autoencoder_matrices) if t.optimizer == "muon"
                 else [OptimizerSpec("tokenizer", t.lr, tuple(t.betas), t.weight_decay)])
        if self.cfg.loss.disc_weight > 0:
            specs.append(OptimizerSpec("discriminator", self.cfg.loss.disc_lr or t.lr, tuple(t.betas), t.weight_decay))
        return specs

    def train_batches(self, start_batch: int, rank: int, world_size: int):
        return train_stream(self.dataset, self.cfg.data, self.cfg.train.batch_size, self.cfg.train.seed, rank,
                            world_size, start_batch)

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        images = batch["image"]
        if self.loss.lpips is not None:
            self.loss.lpips.to(images.device)
        inputs = self.text.inputs(batch["caption"], images.device) if self.text is not None else None
        out = ctx.modules["tokenizer"](images, inputs)
        disc = ctx.unwrap("discriminator") if "discriminator" in ctx.modules else None
        g = self.loss.generator_loss(images, out.reconstruction, out.losses["vq"], step,
                                     ctx.unwrap("tokenizer").last_layer_weight(), disc)
        if "align" in out.losses:  # L = L_vq + a L_gsa + b L_mtp + c L_ras (generator step only)
            g["total"] = g["total"] + out.losses["align"]
        ctx.backward(g["total"])
        logs = {k: v.detach() for k, v in g.items()} | {k: v.detach() for k, v in out.losses.items()}
        if self.loss.gan_active(step):
            d = self.loss.discriminator_loss(ctx.modules["discriminator"], images, out.reconstruction)
            ctx.backward(d["d_loss"])
            logs |= {k: v.detach() for k, v in d.items()}
        return logs

    def progress_metrics(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        tok = modules["tokenizer"]
        tok = getattr(tok, "module", tok)
        return tok.usage()

    def preview(self, model: nn.Module, step: int, out_dir: Path) -> None:
        if self._preview_batch is None:
            val = build_dataset(self.cfg.data, "validation")
            n = min(PREVIEW_IMAGES, len(val))
            self._preview_batch = torch.stack([val[(i, 0)]["image"] for i in range(n)])
        images = self._preview_batch.to(next(model.parameters()).device)
        recon = model.decode(model.encode(images))
        save_grid([images, recon], out_dir / f"step-{step:07d}.png", scale=2)

    def export(self, model: nn.Module, out_dir: Path) -> None:
        if model.aligner is not None and not self.cfg.lgvq.keep_in_export:
            model = model.without_alignment()
        model.save_pretrained(str(out_dir))
        if self.text is not None:
            self.text.cache.save()


AUTOENCODER_PARTS = ("encoder.", "quant_conv.", "post_quant_conv.", "decoder.")


def autoencoder_matrices(tokenizer: nn.Module) -> list[nn.Parameter]:
    """The weights of rank 2 or more of the encoder, decoder and the 1 x 1 convolutions around the
    quantizer (convolution filters read as matrices): what Muon trains with `train.optimizer: muon`.
    The codebook, norms, biases and the alignment modules are not among them."""
    return [p for n, p in tokenizer.named_parameters() if p.ndim >= 2 and n.startswith(AUTOENCODER_PARTS)]


class AlignmentText:
    """The frozen text encoder and its feature cache, feeding the alignment losses."""

    def __init__(self, cfg: LGVQConfig):
        self.cfg = cfg
        self.encoder = FrozenTextEncoder(cfg.text_encoder, cfg.max_length, cfg.pooling)
        self.cache = TextFeatureCache(self.encoder, cfg.text_cache_dir)
        if cfg.mtp_text_context == "masked" and self.encoder.tokenizer.mask_token_id is None:
            raise ConfigError(f"lgvq.mtp_text_context=masked needs a text encoder with a mask token; "
                              f"{cfg.text_encoder} has none. Use mtp_text_context=embeddings.")
        self.special = torch.tensor(sorted(self.encoder.special_token_ids()))

    def alignment_spec(self) -> dict:
        return {"method": "lgvq", "config": asdict(self.cfg), "text_width": self.encoder.width,
                "sentence_width": self.encoder.sentence_width, "vocab_size": self.encoder.vocab_size}

    def inputs(self, captions: list[str], device: torch.device) -> dict:
        """Alignment inputs for a batch: cached features (the encoder runs only on unseen captions)
        of the images to align, all or the first `lgvq.images_per_batch`."""
        if self.special.device != device:
            self.encoder.to(device)
            self.special = self.special.to(device)
        captions = captions[:self.cfg.images_per_batch or len(captions)]
        feats = self.cache(captions, pad_to_longest=True).to(device)  # no work on padding columns
        maskable = feats.mask & ~torch.isin(feats.input_ids, self.special)
        encode_ids = self.encode_masked if self.cfg.mtp_text_context == "masked" else None
        return {"text": feats, "token_embeddings": self.encoder.token_embedding_matrix(), "maskable": maskable,
                "encode_ids": encode_ids}

    def encode_masked(self, input_ids: torch.Tensor, mask: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """Contextual features of the masked caption (mask token at masked positions)."""
        ids = input_ids.masked_fill(masked, self.encoder.tokenizer.mask_token_id)
        return self.encoder(ids, mask).tokens
