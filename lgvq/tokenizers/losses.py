"""Stage-one training losses: taming's VQLPIPSWithDiscriminator, written out.

Generator:      L = L_rec + w_p * LPIPS + lambda * f_D * L_G + w_cb * L_vq
                L_G = -mean(D(x_rec)),  lambda = disc_weight * ||dL_nll/dW|| / (||dL_G/dW|| + 1e-4)
                (W: the decoder's last layer; lambda clamped to [0, 1e4]; f_D = 1 from disc_start)
Discriminator:  hinge, 0.5 * (mean(relu(1 - D(x))) + mean(relu(1 + D(x_rec))))

Before `disc_start` the discriminator is neither run nor trained (taming runs it with factor 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lgvq.errors import ConfigError
from lgvq.tokenizers.config import TokenizerLossConfig
from lgvq.tokenizers.discriminator import PatchDiscriminator
from lgvq.tokenizers.lpips import LPIPS


def hinge_d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor) -> torch.Tensor:
    """taming's `calculate_adaptive_weight` (without the disc_weight factor)."""
    nll_grad = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (nll_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, 1e4).detach()


class VQGANLoss(nn.Module):
    """Holds the frozen LPIPS network and the trainable discriminator."""

    def __init__(self, cfg: TokenizerLossConfig, in_channels: int = 3):
        super().__init__()
        if cfg.rec_loss not in ("l1", "mse"):
            raise ConfigError(f"loss.rec_loss must be l1 or mse, not {cfg.rec_loss!r}")
        self.cfg = cfg
        # LPIPS raises MissingWeightsError at build time when its VGG16 weights are absent
        self.lpips = LPIPS(cfg.lpips_vgg_path) if cfg.perceptual_weight > 0 else None
        self.discriminator = (PatchDiscriminator(in_channels, cfg.disc_ndf, cfg.disc_layers)
                              if cfg.disc_weight > 0 else None)

    def gan_active(self, step: int) -> bool:
        return self.discriminator is not None and step >= self.cfg.disc_start

    def reconstruction(self, images: torch.Tensor, recon: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.cfg.rec_loss == "l1":
            rec = (images - recon).abs().mean()
        else:
            rec = F.mse_loss(recon, images)
        terms = {"rec": rec, "nll": rec}
        if self.lpips is not None:
            p = self.lpips(images, recon).mean()
            terms["lpips"] = p
            terms["nll"] = rec + self.cfg.perceptual_weight * p
        return terms

    def generator_loss(self, images: torch.Tensor, recon: torch.Tensor, vq_loss: torch.Tensor, step: int,
                       last_layer: torch.Tensor | None, discriminator: nn.Module | None = None
                       ) -> dict[str, torch.Tensor]:
        """Named terms; `total` is what the generator minimises. `discriminator` is the module to
        score reconstructions with (the unwrapped one under DDP; its weights get no gradient)."""
        terms = self.reconstruction(images, recon)
        total = terms["nll"] + self.cfg.codebook_weight * vq_loss
        if self.gan_active(step):
            disc = discriminator or self.discriminator
            disc.requires_grad_(False)
            try:
                g_loss = -disc(recon).mean()
            finally:
                disc.requires_grad_(True)
            if self.cfg.adaptive_weight and last_layer is not None and torch.is_grad_enabled():
                weight = adaptive_weight(terms["nll"], g_loss, last_layer) * self.cfg.disc_weight
            else:
                weight = torch.tensor(self.cfg.disc_weight, device=images.device)
            total = total + weight * g_loss
            terms.update(g_loss=g_loss, d_weight=weight)
        terms["total"] = total
        return terms

    def discriminator_loss(self, discriminator: nn.Module, images: torch.Tensor, recon: torch.Tensor
                           ) -> dict[str, torch.Tensor]:
        real = discriminator(images.detach())
        fake = discriminator(recon.detach())
        return {"d_loss": hinge_d_loss(real, fake), "logits_real": real.detach().mean(),
                "logits_fake": fake.detach().mean()}
