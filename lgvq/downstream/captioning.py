"""Captioning head over a frozen tokenizer's codes, with greedy and beam-search decoding.

Two variants (`variant`):
- `cross_attention`: an x-transformers Decoder over caption tokens that cross-attends to the
  code features (the default);
- `prefix`: ClipCap-style: the code features are a prefix of embeddings in front of the caption
  tokens of a GPT decoder (no cross-attention).

    head = CaptionHead(code_vectors=..., token_count=256, tokenizer_name="minilm", token_ids=[...])
    loss = head.loss(codes, captions)                 # teacher forcing, padding ignored
    texts = head.generate(codes, beams=3)             # list of strings
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config

from lgvq.downstream.code_reader import CodeReader
from lgvq.downstream.text_vocab import TextVocab
from lgvq.errors import ConfigError, PromptError
from lgvq.hub import LgvqModelMixin
from lgvq.runs import MODEL_CONFIG
from lgvq.xtransformers import Decoder, TransformerWrapper

VARIANTS = ("cross_attention", "prefix")


class CaptionHead(LgvqModelMixin, ConfigMixin):
    model_kind = "captioning head"
    config_name = MODEL_CONFIG

    @register_to_config
    def __init__(self, code_vocab_size: int = 1024, code_dim: int = 64, token_count: int = 256,
                 tokenizer_name: str = "minilm", token_ids: list | None = None, variant: str = "cross_attention",
                 dim: int = 192, depth: int = 3, heads: int = 4, code_encoder_depth: int = 1, max_length: int = 32,
                 dropout: float = 0.1, code_conv_layers: int = 0, token_shape: tuple | None = None):
        super().__init__()
        if variant not in VARIANTS:
            raise ConfigError(f"variant must be one of {VARIANTS}, not {variant!r}")
        self.vocab = TextVocab(tokenizer_name, list(token_ids or []))
        self.codes = CodeReader(torch.zeros(code_vocab_size, code_dim), token_count, dim, code_encoder_depth, heads,
                                code_conv_layers, token_shape)
        cross = variant == "cross_attention"
        self.decoder = TransformerWrapper(
            num_tokens=len(self.vocab), max_seq_len=max_length + (0 if cross else token_count),
            use_abs_pos_emb=False, emb_dropout=dropout,
            attn_layers=Decoder(dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, attn_flash=True,
                                cross_attend=cross, attn_dropout=dropout, ff_dropout=dropout))

    def set_code_vectors(self, vectors: torch.Tensor) -> None:
        self.codes.code_vectors.copy_(vectors)

    def forward(self, codes: torch.Tensor, tokens: torch.Tensor, targets: torch.Tensor | None = None
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """codes (B, N), caption tokens (B, T) -> next-token logits (B, T, V); with `targets` (B, T)
        (-100 where nothing is predicted) -> (mean cross-entropy, logits)."""
        logits = self.logits(codes, tokens)
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100), logits

    def teacher_forcing(self, captions: list[str], device: torch.device | str = "cpu"
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Captions -> decoder inputs (B, T) and the targets they predict (B, T), -100 at padding."""
        ids, mask = self.vocab.encode(captions, self.config.max_length)
        ids, mask = ids.to(device), mask.to(device)
        return ids[:, :-1], ids[:, 1:].masked_fill(~mask[:, 1:], -100)

    def logits(self, codes: torch.Tensor | None, tokens: torch.Tensor,
               context: torch.Tensor | None = None) -> torch.Tensor:
        """codes (B, N), caption tokens (B, T) -> next-token logits (B, T, V)."""
        context = self.codes(codes) if context is None else context
        if self.config.variant == "cross_attention":
            return self.decoder(tokens, context=context)
        return self.decoder(tokens, prepend_embeds=context)[:, context.shape[1]:]

    def loss(self, codes: torch.Tensor, captions: list[str]) -> torch.Tensor:
        return self(codes, *self.teacher_forcing(captions, codes.device))[0]

    @torch.no_grad()
    def generate(self, codes: torch.Tensor, beams: int = 1, max_length: int | None = None,
                 length_penalty: float = 1.0) -> list[str]:
        """Greedy (beams=1) or beam search; beams are ranked by log-probability / length^penalty."""
        if beams < 1:
            raise PromptError(f"beams must be >= 1, not {beams}")
        was_training = self.training
        self.eval()
        max_length = max_length or self.config.max_length
        context = self.codes(codes)
        out = [self._beam_search(context[i:i + 1], beams, max_length, length_penalty) for i in range(len(codes))] \
            if beams > 1 else self._greedy(context, max_length)
        self.train(was_training)
        return [self.vocab.decode(ids) for ids in out]

    def _greedy(self, context: torch.Tensor, max_length: int) -> list[list[int]]:
        b = context.shape[0]
        tokens = torch.full((b, 1), self.vocab.bos, dtype=torch.long, device=context.device)
        done = torch.zeros(b, dtype=torch.bool, device=context.device)
        for _ in range(max_length - 1):
            nxt = self.logits(None, tokens, context)[:, -1].argmax(-1)
            nxt = torch.where(done, self.vocab.pad, nxt)
            tokens = torch.cat([tokens, nxt[:, None]], 1)
            done |= nxt == self.vocab.eos
            if done.all():
                break
        return [row[1:] for row in tokens.tolist()]

    def _beam_search(self, context: torch.Tensor, beams: int, max_length: int, penalty: float) -> list[int]:
        """One image: keep the `beams` best partial captions; finished ones leave the beam."""
        device = context.device
        alive = [([self.vocab.bos], 0.0)]
        finished: list[tuple[list[int], float]] = []
        for _ in range(max_length - 1):
            tokens = torch.tensor([seq for seq, _ in alive], device=device)
            logp = torch.log_softmax(self.logits(None, tokens, context.expand(len(alive), -1, -1))[:, -1].float(), -1)
            candidates = []
            for (seq, score), row in zip(alive, logp):
                top = row.topk(beams)
                candidates += [(seq + [int(i)], score + float(v)) for v, i in zip(top.values, top.indices)]
            candidates.sort(key=lambda c: c[1], reverse=True)
            alive = []
            for seq, score in candidates:
                (finished if seq[-1] == self.vocab.eos else alive).append((seq, score))
                if len(alive) == beams:
                    break
            if not alive or len(finished) >= beams:
                break
        pool = finished or alive
        best = max(pool, key=lambda c: c[1] / max(len(c[0]) - 1, 1) ** penalty)
        return best[0][1:]
