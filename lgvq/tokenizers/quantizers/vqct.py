"""VQCT: a codebook transferred from word vectors through a graph network over adjectives and
nouns, and the split adjective / noun quantization (docs/methods.md, "VQCT").

    transfer = CodebookTransfer(word_vectors, edges, weights, code_dim=256)    # E = GCN(X, A)
    vq = VQCTQuantizer(transfer, num_adjectives=n_adj, code_dim=256, top_k=2)
    out = vq(z)            # z (B, 2D, h, w) -> quantized (B, 2D, h, w), ids (B, h, w, k + 1)
    vq.embed(out.ids)      # == out.quantized in eval mode, bit for bit

Token layout per position (k + 1 tokens): the k nearest adjective codes in order of distance
(ids 0 .. n_adj - 1), then the nearest noun code offset by n_adj (ids n_adj .. N - 1), so one
vocabulary of N ids covers both halves and the prior sees one flat sequence. The official code
returns noun ids without the offset and decodes indices in a way that does not reproduce its
top-k mean; here decoding gathers the same codes in the same order and averages them the same
way, so `embed(ids)` equals the training-time quantized features exactly.

The codebook used outside training (`vqct.eval_codebook`): the decoder only ever sees codebooks
drawn with the GCN's dropout, whose mean (the deterministic eval-mode codebook the official code
encodes and decodes with) it never saw; on shapes that mismatch decided a run's PSNR (6.9 to 27.4
dB over training seeds; docs/results.md). `draw` (the default) fixes one dropout draw of the hidden
layer when the model is built and keeps it in the weights, so every encode and decode uses one
codebook of the kind the decoder learned from; `mean` is the official behaviour.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from lgvq.errors import ConfigError, InputFileError
from lgvq.tokenizers.quantizers.base import Quantizer, QuantizerOutput
from lgvq.tokenizers.quantizers.config import QuantizerConfig

TRANSFERS = ("gcn", "mlp", "linear")


def normalized_adjacency(num_nodes: int, edges: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """D^-1/2 (A + I) D^-1/2 as a sparse (N, N) tensor; A is symmetric with the edge weights
    (repeated co-occurrences add up, as duplicate edges do in PyG's gcn_norm)."""
    src, dst = edges[:, 0], edges[:, 1]
    loops = torch.arange(num_nodes)
    rows = torch.cat([src, dst, loops])
    cols = torch.cat([dst, src, loops])
    vals = torch.cat([weights, weights, torch.ones(num_nodes)])
    adj = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (num_nodes, num_nodes),
                                  check_invariants=True).coalesce()
    deg = torch.zeros(num_nodes).index_add_(0, adj.indices()[0], adj.values())
    scale = deg.rsqrt()
    i, j = adj.indices()
    return torch.sparse_coo_tensor(adj.indices(), adj.values() * scale[i] * scale[j], adj.shape,
                                   check_invariants=True).coalesce()


class CodebookTransfer(nn.Module):
    """E = f(X): frozen word vectors X (N, Dw) -> codebook (N, D).

    `gcn` (VQCT): GCNConv -> ReLU -> dropout 0.5 -> GCNConv over the normalised adjacency, recomputed
    every training step and cached in eval. Ablations: `mlp` (the same two layers without the
    graph), `linear` (no transfer: a learned projection of the raw vectors). `eval_codebook`:
    `draw` uses one fixed dropout draw outside training, `mean` none (see the module docstring)."""

    def __init__(self, word_vectors: torch.Tensor, edges: torch.Tensor, weights: torch.Tensor, code_dim: int,
                 mode: str = "gcn", dropout: float = 0.5, eval_codebook: str = "mean"):
        super().__init__()
        if mode not in TRANSFERS:
            raise ConfigError(f"transfer must be one of {TRANSFERS}, not {mode!r}")
        self.mode, self.dropout = mode, dropout
        width = word_vectors.shape[1]
        self.register_buffer("word_vectors", word_vectors.float().clone())
        self.register_buffer("edges", edges.long().reshape(-1, 2).clone())
        self.register_buffer("edge_weights", weights.float().clone())
        self._adjacency: torch.Tensor | None = None  # built on first use, from the (possibly loaded) buffers
        if mode == "linear":
            self.layers = nn.ModuleList([nn.Linear(width, code_dim)])
        else:
            self.layers = nn.ModuleList([nn.Linear(width, code_dim), nn.Linear(code_dim, code_dim)])
        # which hidden units the eval-mode codebook keeps: one draw, saved with the weights
        fixed_draw = eval_codebook == "draw" and mode != "linear" and dropout > 0
        self.register_buffer("eval_mask", torch.rand(len(word_vectors), code_dim) >= dropout if fixed_draw else None)
        # eval-mode codebook, with the version of the weights it was computed from: any in-place
        # change (load_state_dict, an optimizer step, a manual edit) bumps a tensor's version
        self._cache: torch.Tensor | None = None
        self._cache_key: tuple | None = None

    def train(self, mode: bool = True):
        self._cache = None
        return super().train(mode)

    def _load_from_state_dict(self, state, prefix, *args, **kwargs):
        self._cache, self._adjacency = None, None  # new weights and possibly new edges
        if self.eval_mask is not None:  # a checkpoint written before the draw existed keeps this one
            state.setdefault(prefix + "eval_mask", self.eval_mask)
        return super()._load_from_state_dict(state, prefix, *args, **kwargs)

    def _weights_key(self) -> tuple:
        return tuple((t.data_ptr(), t._version) for t in (*self.parameters(), *self.buffers()))

    def adjacency(self) -> torch.Tensor:
        """The normalised adjacency (sparse, on the buffers' device)."""
        if self._adjacency is None or self._adjacency.device != self.word_vectors.device:
            n = self.word_vectors.shape[0]
            self._adjacency = normalized_adjacency(n, self.edges.cpu(), self.edge_weights.cpu()).to(
                self.word_vectors.device)
        return self._adjacency

    def _propagate(self, h: torch.Tensor) -> torch.Tensor:
        return torch.sparse.mm(self.adjacency(), h) if self.mode == "gcn" else h

    def compute(self) -> torch.Tensor:
        x = self.word_vectors
        if self.mode == "linear":
            return self.layers[0](x)
        first, second = self.layers
        # GCNConv: aggregate the linearly transformed features, then add the bias
        h = self._propagate(F.linear(x, first.weight)) + first.bias
        h = F.relu(h)
        if self.training:
            h = F.dropout(h, self.dropout)
        elif self.eval_mask is not None:
            h = h * self.eval_mask / (1 - self.dropout)  # as F.dropout scales the units it keeps
        return self._propagate(F.linear(h, second.weight)) + second.bias

    def forward(self) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            self._cache = None
            return self.compute()
        key = self._weights_key()
        if self._cache is None or self._cache_key != key:
            self._cache, self._cache_key = self.compute(), key
        return self._cache


class VQCTQuantizer(Quantizer):
    """`kind: vqct` over encoder features of 2 x `code_dim` channels (an adjective and a noun half).
    The word vectors and edges are buffers of the sizes in `cfg.vqct`, filled by `set_words` (from
    the vocabulary folder) or from saved weights.

    `l2_norm` (not in VQCT; off in every preset): look up, average and decode l2-normalised
    codes and encoder halves, as the shapes VQ-GAN preset does; the layout and exact decoding are
    unchanged. On shapes it kept fewer codes in use than VQCT's Euclidean lookup (docs/results.md)."""

    def __init__(self, cfg: QuantizerConfig, code_dim: int):
        super().__init__()
        spec = cfg.vqct
        n, n_edges = spec.num_words, spec.num_edges
        self.transfer = CodebookTransfer(torch.zeros(n, spec.word_width), torch.zeros(n_edges, 2, dtype=torch.long),
                                         torch.zeros(n_edges), code_dim, spec.transfer, spec.dropout,
                                         spec.eval_codebook)
        self.num_adjectives, self.code_dim, self.top_k = spec.num_adjectives, code_dim, spec.top_k
        self.beta, self.legacy_beta, self.l2_norm = cfg.beta, cfg.legacy_beta, cfg.l2_norm
        self.num_codes = n
        if not 0 < self.num_adjectives < self.num_codes or self.top_k > self.num_adjectives:
            raise ConfigError(f"need adjectives and nouns ({self.num_adjectives} of {self.num_codes} codes are "
                              f"adjectives) and top_k <= adjectives ({self.top_k})")
        self.init_usage_window(cfg.usage_window, self.num_codes)

    @torch.no_grad()
    def set_words(self, words: dict) -> None:
        """Fill the word vectors (N, Dw), edges (E, 2) and weights (E,) of `load_vqct_vocab`."""
        t = self.transfer
        t.word_vectors.copy_(words["vectors"])
        t.edges.copy_(words["edges"])
        t.edge_weights.copy_(words["weights"])

    @property
    def tokens_per_position(self) -> int:
        return self.top_k + 1

    def codebook(self) -> torch.Tensor:
        """(N, D) the codes as looked up: the transfer network's output (l2-normalised if set)."""
        codes = self.transfer()
        return F.normalize(codes, dim=-1) if self.l2_norm else codes

    def halves(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M, 2D) encoder features -> adjective and noun halves (M, D) each, as looked up."""
        z_adj, z_noun = flat[:, : self.code_dim], flat[:, self.code_dim:]
        if self.l2_norm:
            z_adj, z_noun = F.normalize(z_adj, dim=-1), F.normalize(z_noun, dim=-1)
        return z_adj, z_noun

    def split(self, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return codebook[: self.num_adjectives], codebook[self.num_adjectives:]

    @torch.no_grad()
    def nearest(self, z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
        """z (M, 2D) -> ids (M, k + 1): the k nearest adjective codes, nearest first, then the noun."""
        adj_codes, noun_codes = self.split(codebook)
        z_adj, z_noun = self.halves(z)
        adj_ids = torch.cdist(z_adj, adj_codes).topk(self.top_k, dim=1, largest=False).indices  # nearest first
        noun_ids = torch.cdist(z_noun, noun_codes).argmin(1, keepdim=True)
        return torch.cat([adj_ids, noun_ids + self.num_adjectives], 1)

    def gather(self, ids: torch.Tensor, codebook: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids (M, k + 1) -> mean of the k adjective codes (M, D), the noun code (M, D)."""
        adj = codebook[ids[:, : self.top_k]].mean(1)
        return adj, codebook[ids[:, self.top_k]]

    @torch.no_grad()
    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, 2D, h, w) -> ids (B, h, w, k + 1), without training side effects."""
        b, _, h, w = z.shape
        return self.nearest(rearrange(z, "b c h w -> (b h w) c"), self.codebook()).reshape(b, h, w, -1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        z_halves = self.halves(rearrange(z, "b c h w -> (b h w) c"))
        flat = torch.cat(z_halves, 1)
        codebook = self.codebook()
        ids = self.nearest(flat, codebook)
        adj, noun = self.gather(ids, codebook)  # gradients reach the transfer network through these
        code_loss = commit = flat.new_zeros(())
        for z_p, q_p in zip(z_halves, (adj, noun)):
            code_loss = code_loss + F.mse_loss(q_p, z_p.detach())  # reaches the transfer network
            commit = commit + F.mse_loss(z_p, q_p.detach())
        loss = (self.beta * code_loss + commit) if self.legacy_beta else (code_loss + self.beta * commit)
        q = torch.cat([adj, noun], 1)
        if self.training:
            self.record_usage(ids)
            q = flat + (q - flat).detach()  # straight-through per half
        quantized = rearrange(q, "(b h w) c -> b c h w", b=b, h=h, w=w)
        return QuantizerOutput(quantized, ids.reshape(b, h, w, -1), loss, code_loss, commit)

    def code_vectors(self) -> torch.Tensor:
        """(N, D) the transferred code of each id (downstream heads read these)."""
        return self.codebook()

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, h, w, k + 1) ids -> (B, 2D, h, w), exactly the eval-mode quantized features."""
        b, h, w, _ = ids.shape
        adj, noun = self.gather(ids.reshape(-1, ids.shape[-1]), self.codebook())
        return rearrange(torch.cat([adj, noun], 1), "(b h w) c -> b c h w", b=b, h=h, w=w)


def load_vqct_vocab(folder: str | None) -> dict:
    """`lgvq build-vocab` output -> word vectors (N, Dw), edges (E, 2), weights (E,), num_adjectives."""
    from safetensors.torch import load_file

    from lgvq.text.vocab import Vocabulary

    if not folder or not (Path(folder) / "vocab.json").is_file():
        raise InputFileError(f"model.quantizer.vqct.vocab={folder!r} is not a vocabulary folder; write one with "
                             f"`lgvq build-vocab --data ... --out DIR` and set model.quantizer.vqct.vocab=DIR")
    vocab = Vocabulary.load(folder)
    vectors = load_file(str(Path(folder) / "word_vectors.safetensors"))["vectors"]
    pairs, weights = vocab.edge_index()
    return {"vectors": vectors, "edges": torch.tensor(pairs, dtype=torch.long).reshape(-1, 2),
            "weights": torch.tensor(weights, dtype=torch.float32), "num_adjectives": len(vocab.adjectives)}
