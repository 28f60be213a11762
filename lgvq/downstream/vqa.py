"""VQA head over a frozen tokenizer's codes (LG-VQ's setup: codes and question tokens into a
transformer, a classifier over the answer vocabulary from the last hidden state).

    head = VQAHead(code_vectors=..., token_count=256, tokenizer_name="minilm", token_ids=[...],
                   answers=["red", ...])
    logits = head(codes, question_ids, question_mask)        # (B, N), (B, T), (B, T) -> (B, A)

The sequence is [code tokens; question tokens] (a segment embedding tells them apart) through a
GPT-style causal x-transformers Decoder, as in the paper (`causal=False`: a bidirectional
Encoder); `pooling: last` reads the hidden state of the question's last token (the paper),
`mean` averages the question's hidden states.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from torch import nn

from lgvq.downstream.code_reader import CodeReader
from lgvq.downstream.text_vocab import TextVocab
from lgvq.errors import ConfigError, PromptError
from lgvq.hub import LgvqModelMixin
from lgvq.runs import MODEL_CONFIG
from lgvq.xtransformers import Decoder, Encoder


class VQAHead(LgvqModelMixin, ConfigMixin):
    model_kind = "VQA head"
    config_name = MODEL_CONFIG

    @register_to_config
    def __init__(self, code_vocab_size: int = 1024, code_dim: int = 64, token_count: int = 256,
                 tokenizer_name: str = "minilm", token_ids: list | None = None, answers: list | None = None,
                 dim: int = 192, depth: int = 3, heads: int = 4, code_encoder_depth: int = 0,
                 code_conv_layers: int = 0, token_shape: tuple | None = None,
                 max_question_length: int = 32, pooling: str = "last", dropout: float = 0.1, causal: bool = True):
        super().__init__()
        if not answers:
            raise ConfigError("a VQA head needs its answer vocabulary (answers=[...])")
        if pooling not in ("last", "mean"):
            raise ConfigError(f"pooling must be 'last' or 'mean', not {pooling!r}")
        self.vocab = TextVocab(tokenizer_name, list(token_ids or []))
        self.codes = CodeReader(torch.zeros(code_vocab_size, code_dim), token_count, dim, code_encoder_depth, heads,
                                code_conv_layers, token_shape)
        self.word_embedding = nn.Embedding(len(self.vocab), dim, padding_idx=self.vocab.pad)
        self.word_position = nn.Parameter(torch.randn(max_question_length, dim) * 0.02)
        self.segment = nn.Parameter(torch.randn(2, dim) * 0.02)  # 0: codes, 1: question
        self.encoder = (Decoder if causal else Encoder)(dim=dim, depth=depth, heads=heads, attn_flash=True,
                                                        attn_dropout=dropout, ff_dropout=dropout)
        self.classifier = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, len(answers)))
        self.answer_index = {a: i for i, a in enumerate(answers)}

    def set_code_vectors(self, vectors: torch.Tensor) -> None:
        self.codes.code_vectors.copy_(vectors)

    def encode_questions(self, questions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, T), mask (B, T); a question longer than the head reads is truncated (data
        questions; a user's question goes through `check_questions` first)."""
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise PromptError("empty question: ask something about the image, e.g. 'what colour is the circle?'")
        return self.vocab.encode(questions, self.config.max_question_length, add_bos_eos=False)

    def check_questions(self, questions: list[str]) -> None:
        """A user's questions: not empty and within the head's length (never silently cut)."""
        limit = self.config.max_question_length
        for q in questions:
            if not isinstance(q, str) or not q.strip():
                raise PromptError("empty question: ask something about the image, e.g. 'what colour is the circle?'")
            head = q[:20 * limit]  # enough text for more than `limit` tokens; a 5,000-character question is cut
            n = len(self.vocab.tokenizer(head, add_special_tokens=False)["input_ids"])
            if n > limit:
                shown = q if len(q) <= 80 else q[:77] + "..."
                raise PromptError(f"question {shown!r} has {'over ' if len(head) < len(q) else ''}{n} tokens; this "
                                  f"head reads at most {limit}")

    def forward(self, codes: torch.Tensor, question: torch.Tensor, question_mask: torch.Tensor,
                targets: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """codes (B, N) ids, question (B, T) restricted token ids + mask -> answer logits (B, A); with
        `targets` (B,) answer indices -> (mean cross-entropy, logits)."""
        b, n = codes.shape
        t = question.shape[1]
        x_codes = self.codes(codes) + self.segment[0]
        x_words = self.word_embedding(question) + self.word_position[:t] + self.segment[1]
        mask = torch.cat([torch.ones(b, n, dtype=torch.bool, device=codes.device), question_mask], 1)
        hidden = self.encoder(torch.cat([x_codes, x_words], 1), mask=mask)[:, n:]  # (B, T, dim)
        if self.config.pooling == "last":
            last = question_mask.long().sum(1).clamp_min(1) - 1
            pooled = hidden[torch.arange(b, device=codes.device), last]
        else:
            m = question_mask[..., None].float()
            pooled = (hidden * m).sum(1) / m.sum(1).clamp_min(1)
        logits = self.classifier(pooled)
        return logits if targets is None else (F.cross_entropy(logits.float(), targets), logits)

    def answer_targets(self, answers: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Answer words -> their classifier indices (B,)."""
        return torch.tensor([self.answer_index[a] for a in answers], device=device)

    @torch.no_grad()
    def answer(self, codes: torch.Tensor, questions: list[str]) -> list[str]:
        ids, mask = self.encode_questions(questions)
        device = self.codes.code_vectors.device
        logits = self(codes.to(device), ids.to(device), mask.to(device))
        return [self.config.answers[i] for i in logits.argmax(-1).tolist()]
