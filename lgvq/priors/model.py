"""The GPT prior over a tokenizer's code sequences, on x-transformers.

    prior = PriorTransformer(prior_args(vocab_size=1024, seq_len=64, conditioning="text", text_width=384,
                                        text_length=24))   # or PriorArgs(PriorData(...), sized("base"))
    logits = prior(tokens, Condition(text=feats, text_mask=mask))   # (B, N) ids -> (B, N, V)

The network is x-transformers' `TransformerWrapper` + `Decoder` (rotary positions, PyTorch's
scaled-dot-product attention). Every conditioning is a prefix of embeddings in front of the image
tokens, ending in a learned start-of-image embedding whose output predicts the first token:

- unconditional:     [soi]
- class-conditional: [class embedding, soi]; row `num_classes` is the null class (guidance)
- text-conditional:  [projected frozen text features (padding masked), soi]; with `text_layers` > 0
  the projected features first pass a small bidirectional transformer (x-transformers `Encoder`,
  rotary positions) trained with the prior; with `prompt_word_rows` > 0 each projected feature gets
  its word piece's learned row (token ids hashed into that many rows) added first

With `group_size` g > 1 each decoder position reads and predicts a g x g block of the token grid
(lgvq/priors/groups.py): a g^2-times shorter sequence, the block's codes predicted one after another
by a small head on the position's output. The interface stays the same: tokens and logits are
(B, N) / (B, N, V) in raster order.

Text goes in as a prefix rather than through cross-attention (LlamaGen's t2i design): one attention
mechanism serves text and image, the KV cache holds the text after the first step, and x-transformers'
cached decoding with `prepend_embeds` is exercised by its own tests and ours. The null text for
guidance is a learned sequence; condition dropout swaps it in while training.

Why `text_layers`: in the causal prefix a word sees only the words before it, and the decoder's few
layers must both read the prompt and draw. On shapes two-object prompts the prior without it drew
the right colours and shapes but bound them wrongly ("a blue square ... a yellow triangle" drawn as a
blue triangle and a yellow square: a third of the misses). Two such layers over the 24 caption
tokens made a training step of the shapes preset ~10 % slower; when sampling they run once per prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin
from torch import nn

from lgvq.errors import ConfigError, PromptError
from lgvq.hub import LgvqModelMixin
from lgvq.priors.args import PriorArgs, prior_args
from lgvq.priors.code_features import CodeFeatures
from lgvq.priors.groups import CodeGroupHead, GroupEmbedding, from_groups, to_groups
from lgvq.runs import MODEL_CONFIG
from lgvq.xtransformers import Decoder, Encoder, TransformerWrapper

__all__ = ["Condition", "PriorTransformer", "prior_args"]


@dataclass
class Condition:
    """What to condition on, per sequence of the batch. Fields the prior does not use stay None."""

    labels: torch.Tensor | None = None  # (B,) long class ids
    text: torch.Tensor | None = None  # (B, L, D) frozen per-token text features
    text_mask: torch.Tensor | None = None  # (B, L) bool, True at real tokens
    batch_size: int | None = None  # needed only for unconditional priors
    text_ids: torch.Tensor | None = None  # (B, L) long, the text encoder's token ids (prompt_word_rows)

    def size(self) -> int:
        for t in (self.labels, self.text):
            if t is not None:
                return t.shape[0]
        if self.batch_size is None:
            raise ValueError("an unconditional Condition needs batch_size")
        return self.batch_size

    def map(self, fn, batch_size: int | None = None) -> Condition:
        """`fn` applied to every tensor (moving, slicing or repeating the batch); `batch_size`: the
        new size, for an unconditional Condition whose rows fn changes."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        mapped = {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in values.items()}
        return replace(Condition(**mapped), batch_size=batch_size or self.batch_size)

    def to(self, device) -> Condition:
        return self.map(lambda t: t.to(device))

    def repeat(self, k: int) -> Condition:
        """Each row k times in a row: (B, ...) -> (B * k, ...)."""
        return self.map(lambda t: t.repeat_interleave(k, 0), batch_size=self.size() * k)


class PriorTransformer(LgvqModelMixin, ConfigMixin):
    model_kind = "prior"
    config_name = MODEL_CONFIG

    def __init__(self, args: PriorArgs | None = None):
        """`args`: the architecture and what the code store decides (lgvq/priors/args.py). The
        saved config.json holds them as one flat dict, so `prior.config.seq_len` etc. read them."""
        super().__init__()
        args = PriorArgs() if args is None else args
        args.data.check()
        self.register_to_config(**args.to_config())
        self.args = args
        data, arch = args.data, args.architecture
        dim, heads, ff_mult, dropout = arch.dim, arch.heads, arch.ff_mult, arch.dropout
        check_groups(arch.group_size, data.token_shape, data.tokens_per_position, data.seq_len)
        qk = dict(attn_qk_norm=True, attn_qk_norm_dim_scale=True) if arch.qk_norm else {}
        self.net = TransformerWrapper(
            num_tokens=data.vocab_size, max_seq_len=self.num_positions + self.prefix_length, use_abs_pos_emb=False,
            emb_dropout=dropout,
            attn_layers=Decoder(dim=dim, depth=arch.depth, heads=heads, attn_dim_head=arch.dim_head,
                                rotary_pos_emb=True, attn_flash=True, ff_mult=ff_mult, attn_dropout=dropout,
                                ff_dropout=dropout, **qk))
        self.start = nn.Parameter(torch.randn(1, 1, dim) * 0.02)  # start-of-image embedding
        if arch.group_size > 1:  # g x g codes per position (lgvq/priors/groups.py)
            k = arch.group_size ** 2
            self.group_embedding = GroupEmbedding(data.vocab_size, dim, k)
            self.group_head = CodeGroupHead(data.vocab_size, dim, k, hidden=dim * ff_mult)
        self.code_layers = None
        if arch.code_features:  # the tokenizer's code vectors beside the learned rows (lgvq/priors/code_features.py)
            if data.code_width < 1:
                raise ConfigError("model.code_features needs the tokenizer's code vectors: train the prior on a "
                                  "code store (its tokenizer gives them), or set code_width")
            k = arch.group_size ** 2  # input slots; then the group head's k - 1 context slots
            self.code_layers = CodeFeatures(data.vocab_size, data.code_width, dim, slots=2 * k - 1)
        if arch.grid_positions:  # learned row, column (and slot) embeddings, see `grid_embeddings`
            (h, w), k = self.position_grid, data.tokens_per_position
            self.row_embedding, self.column_embedding = nn.Embedding(h, dim), nn.Embedding(w, dim)
            self.slot_embedding = nn.Embedding(k, dim) if k > 1 else None
            for table in (self.row_embedding, self.column_embedding, self.slot_embedding):
                if table is not None:
                    nn.init.normal_(table.weight, std=0.02)
        if data.conditioning == "class":
            self.class_embedding = nn.Embedding(data.num_classes + 1, dim)  # last row: null class
        if data.conditioning == "text":
            self.text_proj = nn.Sequential(nn.LayerNorm(data.text_width), nn.Linear(data.text_width, dim))
            self.null_text = nn.Parameter(torch.randn(data.text_length, dim) * 0.02)
            self.word_embedding = None
            if arch.prompt_word_rows > 0:  # zero at first: the prior starts as without it
                self.word_embedding = nn.Embedding(arch.prompt_word_rows, dim)
                nn.init.zeros_(self.word_embedding.weight)
            self.prompt_encoder = None
            if arch.text_layers > 0:
                self.prompt_encoder = Encoder(dim=dim, depth=arch.text_layers, heads=heads,
                                              attn_dim_head=arch.dim_head, ff_mult=ff_mult, rotary_pos_emb=True,
                                              attn_flash=True, attn_dropout=dropout, ff_dropout=dropout, **qk)

    @classmethod
    def extract_init_dict(cls, config_dict, **kwargs):
        """Loading: config.json's flat keys -> the one `args` object the constructor takes."""
        hidden = {k: v for k, v in config_dict.items() if k.startswith("_")}
        saved = {k: v for k, v in config_dict.items() if not k.startswith("_")}
        return {"args": PriorArgs.from_config(saved)}, kwargs, hidden

    # -- layout ---------------------------------------------------------------------------------
    @property
    def position_grid(self) -> tuple[int, int]:
        """The grid of prior positions: the token grid, or its g x g blocks with group_size g."""
        (h, w), g = self.config.token_shape, self.config.group_size
        return h // g, w // g

    @property
    def num_positions(self) -> int:
        """Positions of an image in the decoder's sequence (seq_len / g^2 with group_size g)."""
        return self.config.seq_len // self.config.group_size ** 2

    def to_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, seq_len, ...) tokens in raster order -> the decoder's order: (B, n, g^2, ...) with
        group_size g > 1, unchanged otherwise."""
        g = self.config.group_size
        return to_groups(tokens, self.config.token_shape, g) if g > 1 else tokens

    def from_positions(self, positions: torch.Tensor) -> torch.Tensor:
        """The inverse of `to_positions`."""
        g = self.config.group_size
        return from_groups(positions, self.config.token_shape, g) if g > 1 else positions

    # -- conditioning prefix -----------------------------------------------------------------
    @property
    def prefix_length(self) -> int:
        return {"none": 1, "class": 2, "text": self.config.text_length + 1}[self.config.conditioning]

    def check_condition(self, cond: Condition) -> None:
        """Clear errors for a condition this prior cannot take."""
        c = self.config
        if c.conditioning == "class":
            if cond.labels is None:
                raise PromptError("this prior is class-conditional: give class labels")
            if cond.labels.numel() and (cond.labels.min() < 0 or cond.labels.max() >= c.num_classes):
                raise PromptError(f"class out of range: this prior knows classes 0..{c.num_classes - 1}")
        elif c.conditioning == "text":
            if cond.text is None:
                raise PromptError("this prior is text-conditional: give a prompt")
            if cond.text.shape[1] > c.text_length:
                raise PromptError(f"prompt features have {cond.text.shape[1]} tokens; this prior takes at most "
                                  f"{c.text_length}")
            if c.prompt_word_rows and cond.text_ids is None:
                raise PromptError("this prior also reads the prompt's token ids (prompt_word_rows): give "
                                  "Condition(text_ids=...) beside the features, as TextToImagePipeline does")
        elif cond.labels is not None or cond.text is not None:
            raise PromptError("this prior is unconditional: it was not trained with classes or prompts")

    def prefix(self, cond: Condition, drop: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Prefix embeddings (B, P, dim) and mask (B, P). `drop` (B,) bool swaps in the null condition."""
        b = cond.size()
        device = self.start.device
        start = self.start.expand(b, -1, -1)
        ones = lambda n: torch.ones(b, n, dtype=torch.bool, device=device)
        kind = self.config.conditioning
        if kind == "none":
            return start, ones(1)
        if drop is None:
            drop = torch.zeros(b, dtype=torch.bool, device=device)
        if kind == "class":
            labels = torch.where(drop, self.config.num_classes, cond.labels.to(device))
            return torch.cat([self.class_embedding(labels)[:, None], start], 1), ones(2)
        L = self.config.text_length
        text, mask = cond.text.to(device), cond.text_mask.to(device)
        if text.shape[1] < L:  # pad to the trained prefix length (positions must match training)
            text = F.pad(text, (0, 0, 0, L - text.shape[1]))
            mask = F.pad(mask, (0, L - mask.shape[1]), value=False)
        emb = self.text_proj(text.to(self.start.dtype))
        if self.word_embedding is not None:  # + each word piece's own learned row (ids hashed into the rows)
            ids = F.pad(cond.text_ids.to(device), (0, L - cond.text_ids.shape[1]))
            emb = emb + self.word_embedding(ids % self.word_embedding.num_embeddings)
        emb = torch.where(drop[:, None, None], self.null_text.expand(b, -1, -1), emb)
        mask = mask | drop[:, None]
        if self.prompt_encoder is not None:  # (B, L, dim), each word seeing the whole prompt
            emb = self.prompt_encoder(emb, mask=mask)
        return torch.cat([emb, start], 1), torch.cat([mask, ones(1)], 1)

    def drop_mask(self, batch_size: int) -> torch.Tensor | None:
        """Condition dropout for training: which rows get the null condition."""
        if self.config.conditioning == "none" or not self.training or self.config.cond_dropout <= 0:
            return None
        return torch.rand(batch_size, device=self.start.device) < self.config.cond_dropout

    # -- forward -------------------------------------------------------------------------------
    def grid_embeddings(self, n: int, start: int = 0) -> torch.Tensor | None:
        """(n, dim) embeddings added to input tokens start..start + n - 1: input i predicts token
        i + 1, so it gets that token's row and column on the token grid (and slot, with several
        tokens per position). Rotary positions alone leave the column implicit, and a raster model
        that loses track of it continues an object across the right edge onto the next row's left."""
        if not self.config.grid_positions:
            return None
        (_, w), k = self.position_grid, self.config.tokens_per_position
        target = torch.arange(start + 1, start + n + 1, device=self.start.device)
        cell = target // k
        emb = self.row_embedding(cell // w) + self.column_embedding(cell % w)
        return emb + self.slot_embedding(target % k) if self.slot_embedding is not None else emb

    def extra_embeddings(self, inputs: torch.Tensor, dtype: torch.dtype, start: int = 0) -> torch.Tensor | None:
        """What is added to the token embeddings of inputs start..start + n - 1, (B, n, dim): the
        grid positions and, with group_size g > 1, the block's codes (inputs (B, n, g^2))."""
        grid = self.grid_embeddings(inputs.shape[1], start)
        extra = grid.to(dtype).expand(inputs.shape[0], -1, -1) if grid is not None else None
        if self.config.group_size > 1:
            group = self.group_embedding(inputs).to(dtype)
            extra = group if extra is None else extra + group
        if self.code_layers is not None:  # every slot's code vector, projected and summed
            ids = inputs if self.config.group_size > 1 else inputs[..., None]
            codes = self.code_layers.embed(ids, slice(0, ids.shape[-1])).sum(-2).to(dtype)
            extra = codes if extra is None else extra + codes
        return extra

    def run_network(self, inputs: torch.Tensor, prefix: torch.Tensor, mask: torch.Tensor, **kwargs):
        """The x-transformers network over [prefix, inputs]; (B, P + n, V) logits (or what
        `kwargs` such as return_intermediates ask for). `inputs`: (B, n) ids, or (B, n, g^2) with
        group_size g > 1 (then ask for embeddings: the logits come from `group_logits`)."""
        sum_embeds = self.extra_embeddings(inputs, prefix.dtype)
        ids = inputs[..., 0] if self.config.group_size > 1 else inputs
        return self.net(ids, prepend_embeds=prefix, prepend_mask=mask, sum_embeds=sum_embeds, **kwargs)

    def input_embeddings(self, inputs: torch.Tensor, dtype: torch.dtype, start: int = 0) -> torch.Tensor:
        """(B, n, dim): inputs start..start + n - 1 embedded as `run_network`'s network embeds them
        (token embedding, then the extra embeddings added), for decoding outside x-transformers."""
        ids = inputs[..., 0] if self.config.group_size > 1 else inputs
        embedded = self.net.token_emb(ids)
        extra = self.extra_embeddings(inputs, dtype, start)
        return embedded if extra is None else embedded + extra

    def output_logits(self, features: torch.Tensor) -> torch.Tensor:
        """The decoder's output embeddings, or CodeGroupHead features, (..., dim) -> logits (..., V):
        the decoder's output layer, plus the code-vector scores with code_features. Those are
        folded into the layer's rows, h W^T + (h O^T) C^T = h (W + C O)^T: one product over the
        V codes instead of two and a sum of logits."""
        weight = self.net.to_logits.weight  # (V, dim)
        if self.code_layers is not None:
            weight = weight + self.code_layers.output_rows(weight.dtype)
        return F.linear(features, weight)

    def group_features(self, hidden: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Sampling a group: the decoder's output (B, dim) and the group's codes so far (B, j) ->
        the features code j is predicted from (B, dim)."""
        context = None
        if self.code_layers is not None and codes.shape[1]:
            k = self.config.group_size ** 2
            context = self.code_layers.embed(codes, slice(k, k + codes.shape[1])).sum(1).to(hidden.dtype)
        return self.group_head.step(hidden, codes, context)

    def forward(self, tokens: torch.Tensor, cond: Condition, drop: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: (B, N) ids -> logits (B, N, V), position i predicting tokens[:, i].
        With `targets` (the same ids: the training case) -> the mean next-token cross-entropy
        alone, with condition dropout in training unless `drop` says which rows to drop."""
        if targets is not None and drop is None:
            drop = self.drop_mask(tokens.shape[0])
        prefix, mask = self.prefix(cond, drop)
        if self.config.group_size == 1:
            hidden = self.run_network(tokens[:, :-1], prefix, mask, return_embeddings=True)[:, prefix.shape[1] - 1:]
            logits = self.output_logits(hidden)
        else:  # each position's output predicts the next group's codes, one after another
            groups = self.to_positions(tokens)
            hidden = self.run_network(groups[:, :-1], prefix, mask, return_embeddings=True)[:, prefix.shape[1] - 1:]
            context = None
            if self.code_layers is not None:  # (B, n, k - 1, dim): codes 0..k-2 as the later slots see them
                k = self.config.group_size ** 2
                context = self.code_layers.embed(groups[..., :-1], slice(k, 2 * k - 1)).to(hidden.dtype)
            logits = self.output_logits(self.group_head(hidden, groups, context))  # (B, n, g^2, V)
            if targets is not None:  # the mean over the same terms in the decoder's order, sparing
                # the logits' copy into raster order and back
                return next_token_loss(logits.flatten(1, 2), self.to_positions(targets).flatten(1, 2))
            logits = self.from_positions(logits)
        return logits if targets is None else next_token_loss(logits, targets)

    def loss(self, tokens: torch.Tensor, cond: Condition) -> torch.Tensor:
        """Mean next-token cross-entropy over image tokens, with condition dropout in training."""
        return self(tokens, cond, targets=tokens)


def check_groups(group_size: int, token_shape: tuple, tokens_per_position: int, seq_len: int) -> None:
    if group_size == 1:
        return
    h, w = token_shape
    if group_size < 1 or h % group_size or w % group_size:
        raise ConfigError(f"model.group_size {group_size} must divide the token grid {h} x {w}")
    if tokens_per_position != 1 or seq_len != h * w:
        raise ConfigError("model.group_size > 1 needs one token per grid position (not a VQCT store with several)")


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(B, N, V) logits, (B, N) targets -> mean cross-entropy in nats per token."""
    return F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
