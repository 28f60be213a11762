"""Stage-one training: the tokenizer (and its discriminator) as a task of the shared Trainer."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lgvq.data.datasets import build_dataset
from lgvq.data.loader import train_stream
from lgvq.images import save_grid
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.losses import VQGANLoss
from lgvq.tokenizers.lpips import find_vgg16_weights
from lgvq.tokenizers.model import VQTokenizer
from lgvq.training.trainer import OptimizerSpec, StepContext, TrainingTask

PREVIEW_IMAGES = 8


class TokenizerTask(TrainingTask):
    main_module = "tokenizer"
    progress_keys = ("rec", "vq", "usage", "d_loss")

    def __init__(self, cfg: TokenizerRunConfig):
        self.cfg = cfg
        if cfg.loss.perceptual_weight > 0:
            find_vgg16_weights(cfg.loss.lpips_vgg_path)  # missing LPIPS weights stop the run at start-up
        self.dataset = build_dataset(cfg.data, "train") if not cfg.data.streaming else None
        self.loss: VQGANLoss | None = None
        self._preview_batch: torch.Tensor | None = None

    def build_modules(self) -> dict[str, nn.Module]:
        # everything with random initial weights is built here, after the Trainer set the seed
        self.loss = VQGANLoss(self.cfg.loss)
        modules: dict[str, nn.Module] = {
            "tokenizer": VQTokenizer.from_model_config(self.cfg.model, self.cfg.data.image_size)}
        if self.loss.discriminator is not None:
            modules["discriminator"] = self.loss.discriminator
        return modules

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        specs = [OptimizerSpec("tokenizer", t.lr, tuple(t.betas), t.weight_decay)]
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
        out = ctx.modules["tokenizer"](images)
        disc = ctx.unwrap("discriminator") if "discriminator" in ctx.modules else None
        g = self.loss.generator_loss(images, out.reconstruction, out.losses["vq"], step,
                                     ctx.unwrap("tokenizer").last_layer_weight(), disc)
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
        model.save_pretrained(str(out_dir))
