"""CVQ-VAE (Zheng and Vedaldi), `kind: cvq`: plain VQ whose rarely used codes are re-anchored
online.

Every training step each code moves toward an anchor sampled among the batch's encoder features, by
a weight that is ~1 for codes whose running usage (EMA, `cvq.decay` 0.99) is ~0 and vanishes for
used ones: `e <- e (1 - w) + anchor w`, `w = exp(-usage * K * 10 / (1 - decay) - 1e-3)`. Anchors:
`probrandom` (a feature drawn with probability softmax(-distance) to the code, CVQ-VAE's default),
`closest` or `random`. `cvq.contrastive` adds CVQ-VAE's contrastive term (temperature 0.07).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lgvq.tokenizers.quantizers.base import dist_ready
from lgvq.tokenizers.quantizers.config import QuantizerConfig
from lgvq.tokenizers.quantizers.vq import VectorQuantizer


class CVQQuantizer(VectorQuantizer):
    def __init__(self, cfg: QuantizerConfig, dim: int):
        super().__init__(cfg, dim)
        self.decay, self.anchor, self.contrastive = cfg.cvq.decay, cfg.cvq.anchor, cfg.cvq.contrastive
        self.register_buffer("code_usage_ema", torch.zeros(self.codebook_size))

    def full_distances(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Squared distances (M, K) with the ||z||^2 term: ranking the features for one code (CVQ's
        anchors, its contrastive term) depends on it unless the features are l2-normalised."""
        return flat.float().pow(2).sum(1)[:, None] + self.distances(flat, codes)

    def anchor_scores(self, flat: torch.Tensor) -> torch.Tensor:
        """(M, K) how close each feature is to each code, -squared distance: CVQ's `closest`
        anchor of code k is the argmax over features, `probrandom` draws from its softmax."""
        return -self.full_distances(flat, self.codes())

    @torch.no_grad()
    def update_codes(self, z_e: torch.Tensor, ids: torch.Tensor) -> None:
        """CVQ-VAE's online clustered re-initialisation (see the module docstring)."""
        flat = z_e.reshape(-1, z_e.shape[-1])
        counts = torch.bincount(ids.flatten(), minlength=self.codebook_size).float()
        if dist_ready():
            dist.all_reduce(counts)
        self.code_usage_ema.mul_(self.decay).add_(counts / counts.sum(), alpha=1 - self.decay)
        if self.anchor == "random":
            pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        else:
            similarity = self.anchor_scores(flat)  # (M, K)
            if self.anchor == "closest":
                pick = similarity.argmax(0)
            else:
                pick = torch.multinomial(torch.softmax(similarity.t(), dim=1), 1).view(-1)
        anchors = flat[pick].to(self.codebook.weight.dtype)
        if dist_ready():
            dist.broadcast(anchors, src=0)  # the same codebook on every process
        w = torch.exp(-self.code_usage_ema * self.codebook_size * 10 / (1 - self.decay) - 1e-3)[:, None]
        self.codebook.weight.data.mul_(1 - w).add_(anchors * w)

    def add_training_terms(self, loss: torch.Tensor, z_e: torch.Tensor) -> torch.Tensor:
        return loss + self.contrastive_loss(z_e) if self.contrastive else loss

    def contrastive_loss(self, z_e: torch.Tensor) -> torch.Tensor:
        """CVQ-VAE's contrastive term: per code, its nearest features (positive, averaged) against
        the farthest half of the batch (negatives), temperature 0.07."""
        flat = z_e.reshape(-1, z_e.shape[-1])
        similarity = self.anchor_scores(flat)  # (M, K), features ranked per code; gradients reach the codes
        ordered = similarity.sort(dim=0).values
        m = ordered.shape[0]
        positive = ordered[-max(1, m // self.codebook_size):].mean(0, keepdim=True)
        negative = ordered[: max(1, m // 2)]
        logits = torch.cat([positive, negative]).t() / 0.07  # (K, 1 + M/2)
        return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device))
