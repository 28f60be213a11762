"""Vector quantizer with optional low-dimensional, l2-normalised code lookup.

    z (B, C, H, W) -> in_proj -> z_e (B, H, W, d) -> nearest code e_k -> out_proj -> (B, C, H, W)

Loss (van den Oord et al.; LG-VQ Eq. 2):  ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2, i.e. beta
weighs the *commitment* term. taming-transformers' `VectorQuantizer2(legacy=True)` (and diffusers'
`VectorQuantizer`, which `VQModel` builds with legacy on) puts beta on the codebook term instead;
`legacy_beta=True` reproduces that for comparison.

Codes unused over the whole usage window (`usage_window` training batches) can be restarted from
encoder outputs of the current batch (`dead_code_restart`). Where new codes are drawn from
(`restart_sampling`, also used by `data_init`): `uniform` picks batch features at random, so mostly
the commonest content (on shapes, black background, which then splits into hundreds of
near-identical codes); `error` picks them with probability proportional to their squared distance
from the nearest code (k-means++ seeding: one by one, each draw against the live codes and those
chosen so far), so new codes go where the codebook reconstructs worst. At a restart, once every
feature of the batch lies on a code, the dead codes left over wait for the next restart: drawn all
at once, they would pile onto the same few features as duplicates, and on 32 px shapes (512 features
a batch, 2048 codes) half the codebook ended up as copies of other codes.

CVQ-VAE's online clustering builds on this class (`lgvq.tokenizers.quantizers.cvq`).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lgvq.tokenizers.quantizers.base import Quantizer, QuantizerOutput, dist_ready
from lgvq.tokenizers.quantizers.config import QuantizerConfig


def _same_on_every_process(rows: torch.Tensor) -> torch.Tensor:
    """Process 0's rows (n, d) on every process (n may differ between processes before the call)."""
    if not dist_ready():
        return rows
    count = torch.tensor(rows.shape[0], device=rows.device)
    dist.broadcast(count, src=0)
    out = rows if dist.get_rank() == 0 else rows.new_zeros(int(count), rows.shape[1])
    dist.broadcast(out, src=0)
    return out


class VectorQuantizer(Quantizer):
    """Plain VQ (`kind: vq`) over `dim`-channel features, from the `model.quantizer` config."""

    def __init__(self, cfg: QuantizerConfig, dim: int):
        super().__init__()
        self.restart_sampling = cfg.restart_sampling
        self.codebook_size, self.dim = cfg.codebook_size, dim
        self.num_codes = cfg.codebook_size
        self.codebook_dim = cfg.codebook_dim or dim
        self.l2_norm, self.beta, self.legacy_beta = cfg.l2_norm, cfg.beta, cfg.legacy_beta
        self.dead_code_restart, self.restart_every = cfg.dead_code_restart, cfg.restart_every
        low_dim = self.codebook_dim != dim
        self.in_proj = nn.Linear(dim, self.codebook_dim) if low_dim else nn.Identity()
        self.out_proj = nn.Linear(self.codebook_dim, dim) if low_dim else nn.Identity()
        self.codebook = nn.Embedding(self.codebook_size, self.codebook_dim)
        if cfg.l2_norm:
            nn.init.normal_(self.codebook.weight)
        else:
            nn.init.uniform_(self.codebook.weight, -1.0 / self.codebook_size, 1.0 / self.codebook_size)
        self.init_usage_window(cfg.usage_window, self.codebook_size)
        # data-dependent init: codes drawn from the first training batch's encoder outputs, so
        # they start where the features are (a random start collapses to a few codes)
        self.data_init = cfg.data_init
        self.register_buffer("initialized", torch.tensor(not cfg.data_init))

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        # tokenizers saved when plain VQ and CVQ were one class hold CVQ's usage EMA in every kind
        if type(self) is VectorQuantizer:
            state.pop(prefix + "code_usage_ema", None)
        return super()._load_from_state_dict(state, prefix, *args, **kwargs)

    # -- lookup ------------------------------------------------------------------------------
    def codes(self) -> torch.Tensor:
        """The code vectors as used for lookup, (K, d)."""
        w = self.codebook.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def project_in(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> lookup space (B, H, W, d)."""
        z_e = self.in_proj(rearrange(z, "b c h w -> b h w c"))
        return F.normalize(z_e, dim=-1) if self.l2_norm else z_e

    def distances(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Squared distances (M, K) up to the per-row ||z||^2, which no argmin or softmax over
        codes (for one feature) depends on (CVQ, which ranks features per code, adds it back)."""
        return codes.float().pow(2).sum(1)[None, :] - 2 * flat.float() @ codes.float().t()

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Ids of the nearest codes, (B, H, W)."""
        flat = z_e.reshape(-1, z_e.shape[-1])
        return self.distances(flat, self.codes()).argmin(dim=1).view(z_e.shape[:-1])

    def code_vectors(self) -> torch.Tensor:
        """(K, C) the feature each id stands for after out_proj (what downstream heads read)."""
        return self.out_proj(self.codes())

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> ids (B, H, W) of the nearest codes, without training side effects."""
        return self.nearest(self.project_in(z))

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Ids (B, H, W) -> quantized features (B, C, H, W), exactly as `forward` in eval mode."""
        z_q = F.embedding(ids, self.codes())
        return rearrange(self.out_proj(z_q), "b h w c -> b c h w")

    # -- training ----------------------------------------------------------------------------
    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        z_e = self.project_in(z)
        if self.training and not bool(self.initialized):
            self._init_from(z_e.detach())
        ids = self.nearest(z_e.detach())
        z_q = F.embedding(ids, self.codes())
        codebook_loss = F.mse_loss(z_q, z_e.detach())
        commitment_loss = F.mse_loss(z_e, z_q.detach())
        if self.legacy_beta:
            loss = self.beta * codebook_loss + commitment_loss
        else:
            loss = codebook_loss + self.beta * commitment_loss
        if self.training:
            loss = self.add_training_terms(loss, z_e.detach())
            self.record_usage(ids)
            self.update_codes(z_e.detach(), ids)
            if self.dead_code_restart and int(self.usage_step) % self.restart_every == 0:
                self._restart_dead_codes(z_e.detach())
            z_q = z_e + (z_q - z_e).detach()  # straight-through
        quantized = rearrange(self.out_proj(z_q), "b h w c -> b c h w")
        return QuantizerOutput(quantized, ids, loss, codebook_loss, commitment_loss)

    @torch.no_grad()
    def _init_from(self, z_e: torch.Tensor) -> None:
        flat = z_e.reshape(-1, z_e.shape[-1]).float()
        if self.restart_sampling == "error":
            pick = kmeans_plus_plus(flat, self.codebook_size)
        else:
            pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        new = flat[pick].to(self.codebook.weight.dtype)
        if dist_ready():
            dist.broadcast(new, src=0)
        self.codebook.weight.data.copy_(new)
        self.initialized.fill_(True)

    def add_training_terms(self, loss: torch.Tensor, z_e: torch.Tensor) -> torch.Tensor:
        """The training loss with any further terms of a subclass (CVQ's contrastive one)."""
        return loss

    def update_codes(self, z_e: torch.Tensor, ids: torch.Tensor) -> None:
        """After each training lookup: move codes outside the gradient step (CVQ's clustering)."""

    @torch.no_grad()
    def _restart_dead_codes(self, z_e: torch.Tensor) -> None:
        """Re-initialise codes unused over the whole window from encoder outputs of this batch
        (random ones, or with `restart_sampling="error"` the worst-quantized ones, by D^2)."""
        if int(self.usage_step) < self.usage_history.shape[0]:
            return  # window not full yet
        dead = self.usage_history.sum(0) == 0
        n_dead = int(dead.sum())
        if n_dead == 0:
            return
        flat = z_e.reshape(-1, z_e.shape[-1])
        if self.restart_sampling == "error":
            # k-means++ against the live codes, one pick at a time: each badly quantized feature
            # gets one new code, and codes left over when every feature is covered stay dead until
            # the next restart (drawn all at once they pile onto the same few features)
            live = self.codes()[~dead].float()
            error = torch.cdist(flat.float(), live, compute_mode="donot_use_mm_for_euclid_dist").pow(2).min(1).values
            pick = kmeans_plus_plus(flat, n_dead, error, stop_when_covered=True)
        else:
            pick = torch.randint(0, flat.shape[0], (n_dead,), device=flat.device)
        new = _same_on_every_process(flat[pick].to(self.codebook.weight.dtype))
        self.codebook.weight.data[dead.nonzero().flatten()[:len(new)]] = new


def sample_by_weight(weight: torch.Tensor, n: int) -> torch.Tensor:
    """n indices drawn with probability proportional to `weight` (M,), without replacement while
    enough rows have weight; uniform where all weights are zero."""
    if float(weight.sum()) <= 0:
        return torch.randint(0, weight.shape[0], (n,), device=weight.device)
    return torch.multinomial(weight, n, replacement=n > int((weight > 0).sum()))


@torch.no_grad()
def kmeans_plus_plus(flat: torch.Tensor, k: int, nearest: torch.Tensor | None = None,
                     stop_when_covered: bool = False) -> torch.Tensor:
    """k-means++ seeding: up to k row indices of `flat` (M, d), each drawn with probability
    proportional to its squared distance from the nearest centre so far. `nearest` (M,) holds the
    squared distances to existing centres (None: no centre yet, the first pick is uniform). Once
    every distinct row is a centre, further picks are uniform, or with `stop_when_covered` none
    are made (fewer than k indices come back)."""
    flat = flat.float()
    picks: list[int] = []
    if nearest is None:
        picks.append(int(torch.randint(0, flat.shape[0], ())))
        nearest = (flat - flat[picks[0]]).pow(2).sum(1)
    nearest = nearest.float().clone()
    # "covered": within 1 % of the rows' typical norm of a centre (exact copies are at 0)
    covered = 1e-4 * float(flat.pow(2).sum(1).mean())
    while len(picks) < k:
        if stop_when_covered and float(nearest.max()) <= covered:
            break
        pick = int(sample_by_weight(nearest, 1))
        picks.append(pick)
        nearest = torch.minimum(nearest, (flat - flat[pick]).pow(2).sum(1))
    return torch.tensor(picks, dtype=torch.long, device=flat.device)
