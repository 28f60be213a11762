"""Vector quantizer with optional low-dimensional, l2-normalised code lookup.

    z (B, C, H, W) -> in_proj -> z_e (B, H, W, d) -> nearest code e_k -> out_proj -> (B, C, H, W)

Loss (van den Oord et al.; LG-VQ Eq. 2):  ||sg[z_e] - e||^2 + beta * ||z_e - sg[e]||^2, i.e. beta
weighs the *commitment* term. taming-transformers' `VectorQuantizer2(legacy=True)` (and diffusers'
`VectorQuantizer`, which `VQModel` builds with legacy on) puts beta on the codebook term instead;
`legacy_beta=True` reproduces that for comparison.

Codebook usage is tracked over a sliding window of the last `usage_window` training batches
(per-batch perplexity depends on batch size; a window does not). Codes unused over the whole
window can be restarted from encoder outputs of the current batch (`dead_code_restart`).
Where new codes are drawn from (`restart_sampling`, also used by `data_init`): `uniform` picks
batch features at random, so mostly the commonest content (on shapes, black background, which then
splits into hundreds of near-identical codes); `error` picks them with probability proportional to
their squared distance from the nearest code (k-means++ seeding: one by one, each draw against the
live codes and those chosen so far), so new codes go where the codebook reconstructs worst. At a
restart, once every feature of the batch lies on a code, the dead codes left over wait for the next
restart: drawn all at once, they would pile onto the same few features as duplicates, and on 32 px
shapes (512 features a batch, 2048 codes) half the codebook ended up as copies of other codes.

CVQ (`online_clustering`, Zheng and Vedaldi's CVQ-VAE): every training step each code moves
toward an anchor sampled among the batch's encoder features, by a weight that is ~1 for codes
whose running usage (EMA, `cvq_decay` 0.99) is ~0 and vanishes for used ones:
`e <- e (1 - w) + anchor w`, `w = exp(-usage * K * 10 / (1 - decay) - 1e-3)`. Anchors: `probrandom`
(a feature drawn with probability softmax(-distance) to the code, CVQ-VAE's default), `closest`
or `random`. `cvq_contrastive` adds CVQ-VAE's contrastive term (temperature 0.07).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lgvq.errors import ConfigError


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (B, C, H, W), straight-through in training
    ids: torch.Tensor  # (B, H, W) long
    loss: torch.Tensor  # scalar: codebook + commitment terms, weighted
    codebook_loss: torch.Tensor
    commitment_loss: torch.Tensor


def _dist_ready() -> bool:
    return dist.is_available() and dist.is_initialized()


def _same_on_every_process(rows: torch.Tensor) -> torch.Tensor:
    """Process 0's rows (n, d) on every process (n may differ between processes before the call)."""
    if not _dist_ready():
        return rows
    count = torch.tensor(rows.shape[0], device=rows.device)
    dist.broadcast(count, src=0)
    out = rows if dist.get_rank() == 0 else rows.new_zeros(int(count), rows.shape[1])
    dist.broadcast(out, src=0)
    return out


class VectorQuantizer(nn.Module):
    def __init__(self, codebook_size: int, dim: int, codebook_dim: int | None = None, l2_norm: bool = False,
                 beta: float = 0.25, legacy_beta: bool = False, usage_window: int = 100,
                 dead_code_restart: bool = False, restart_every: int = 100, data_init: bool = False,
                 online_clustering: bool = False, cvq_decay: float = 0.99, cvq_anchor: str = "probrandom",
                 cvq_contrastive: bool = False, restart_sampling: str = "uniform"):
        super().__init__()
        if restart_sampling not in ("uniform", "error"):
            raise ConfigError(f"restart_sampling must be uniform or error, not {restart_sampling!r}")
        self.restart_sampling = restart_sampling
        if cvq_anchor not in ("probrandom", "closest", "random"):
            raise ConfigError(f"cvq_anchor must be probrandom, closest or random, not {cvq_anchor!r}")
        self.online_clustering, self.cvq_decay, self.cvq_anchor = online_clustering, cvq_decay, cvq_anchor
        self.cvq_contrastive = cvq_contrastive
        self.register_buffer("code_usage_ema", torch.zeros(codebook_size))
        self.codebook_size, self.dim = codebook_size, dim
        self.codebook_dim = codebook_dim or dim
        self.l2_norm, self.beta, self.legacy_beta = l2_norm, beta, legacy_beta
        self.dead_code_restart, self.restart_every = dead_code_restart, restart_every
        low_dim = self.codebook_dim != dim
        self.in_proj = nn.Linear(dim, self.codebook_dim) if low_dim else nn.Identity()
        self.out_proj = nn.Linear(self.codebook_dim, dim) if low_dim else nn.Identity()
        self.codebook = nn.Embedding(codebook_size, self.codebook_dim)
        if l2_norm:
            nn.init.normal_(self.codebook.weight)
        else:
            nn.init.uniform_(self.codebook.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        # sliding-window usage: one histogram row per training batch, written round-robin
        self.register_buffer("usage_history", torch.zeros(usage_window, codebook_size))
        self.register_buffer("usage_step", torch.zeros((), dtype=torch.long))
        # data-dependent init: codes drawn from the first training batch's encoder outputs, so
        # they start where the features are (a random start collapses to a few codes)
        self.data_init = data_init
        self.register_buffer("initialized", torch.tensor(not data_init))

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
        codes (for one feature) depends on. Where features are ranked for one code, use
        `full_distances`."""
        return codes.float().pow(2).sum(1)[None, :] - 2 * flat.float() @ codes.float().t()

    def full_distances(self, flat: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Squared distances (M, K) with the ||z||^2 term: ranking the features for one code (CVQ's
        anchors, its contrastive term) depends on it unless the features are l2-normalised."""
        return flat.float().pow(2).sum(1)[:, None] + self.distances(flat, codes)

    def anchor_scores(self, flat: torch.Tensor) -> torch.Tensor:
        """(M, K) how close each feature is to each code, -squared distance: CVQ's `closest`
        anchor of code k is the argmax over features, `probrandom` draws from its softmax."""
        return -self.full_distances(flat, self.codes())

    def nearest(self, z_e: torch.Tensor) -> torch.Tensor:
        """Ids of the nearest codes, (B, H, W)."""
        flat = z_e.reshape(-1, z_e.shape[-1])
        return self.distances(flat, self.codes()).argmin(dim=1).view(z_e.shape[:-1])

    def code_vectors(self) -> torch.Tensor:
        """(K, C) the feature each id stands for after out_proj (what downstream heads read)."""
        return self.out_proj(self.codes())

    tokens_per_position = 1

    @property
    def num_codes(self) -> int:
        return self.codebook_size

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
        if self.training and self.cvq_contrastive:
            loss = loss + self._contrastive(z_e.detach())
        if self.training:
            self._record_usage(ids)
            if self.online_clustering:
                self._cluster_update(z_e.detach(), ids)
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
        if _dist_ready():
            dist.broadcast(new, src=0)
        self.codebook.weight.data.copy_(new)
        self.initialized.fill_(True)

    def _record_usage(self, ids: torch.Tensor) -> None:
        record_usage(self.usage_history, self.usage_step, ids)

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

    @torch.no_grad()
    def _cluster_update(self, z_e: torch.Tensor, ids: torch.Tensor) -> None:
        """CVQ-VAE's online clustered re-initialisation (see the module docstring)."""
        flat = z_e.reshape(-1, z_e.shape[-1])
        counts = torch.bincount(ids.flatten(), minlength=self.codebook_size).float()
        if _dist_ready():
            dist.all_reduce(counts)
        self.code_usage_ema.mul_(self.cvq_decay).add_(counts / counts.sum(), alpha=1 - self.cvq_decay)
        if self.cvq_anchor == "random":
            pick = torch.randint(0, flat.shape[0], (self.codebook_size,), device=flat.device)
        else:
            similarity = self.anchor_scores(flat)  # (M, K)
            if self.cvq_anchor == "closest":
                pick = similarity.argmax(0)
            else:
                pick = torch.multinomial(torch.softmax(similarity.t(), dim=1), 1).view(-1)
        anchors = flat[pick].to(self.codebook.weight.dtype)
        if _dist_ready():
            dist.broadcast(anchors, src=0)  # the same codebook on every process
        w = torch.exp(-self.code_usage_ema * self.codebook_size * 10 / (1 - self.cvq_decay) - 1e-3)[:, None]
        self.codebook.weight.data.mul_(1 - w).add_(anchors * w)

    def _contrastive(self, z_e: torch.Tensor) -> torch.Tensor:
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

    # -- statistics --------------------------------------------------------------------------
    def usage(self) -> dict[str, float]:
        """Fraction of codes used and perplexity over the sliding window of training batches."""
        return usage_stats(self.usage_history.sum(0))


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


@torch.no_grad()
def record_usage(history: torch.Tensor, step: torch.Tensor, ids: torch.Tensor) -> None:
    """Write this batch's code histogram into row `step % window` of `history` (W, K); step += 1."""
    counts = torch.bincount(ids.flatten(), minlength=history.shape[1]).float()
    if _dist_ready():
        dist.all_reduce(counts)
    history[int(step) % history.shape[0]] = counts
    step += 1


def usage_stats(counts: torch.Tensor) -> dict[str, float]:
    """From a code histogram (K,): fraction of codes used, perplexity exp(H(p))."""
    total = counts.sum()
    if total <= 0:
        return {"usage": 0.0, "perplexity": 0.0}
    p = counts / total
    entropy = -(p[p > 0] * p[p > 0].log()).sum()
    return {"usage": float((counts > 0).float().mean()), "perplexity": float(entropy.exp())}
