"""VQA head over a frozen tokenizer's codes (LG-VQ's setup: codes and question tokens into a
transformer, a classifier over the answer vocabulary from the last hidden state).

    head = VQAHead(code_vectors=..., token_count=256, tokenizer_name="minilm", token_ids=[...],
                   answers=["red", ...])
    logits = head(codes, question_ids, question_mask)        # (B, N), (B, T), (B, T) -> (B, A)
    logits = head(codes, question_ids, question_mask)        # (B, N), (B, Q, T), (B, Q, T) -> (B, Q, A)

The sequence is [code tokens; question tokens] (a segment embedding tells them apart) through a
GPT-style causal x-transformers Decoder, as in the paper (`causal=False`: a bidirectional
Encoder); `pooling: last` reads the hidden state of the question's last token (the paper),
`mean` averages the question's hidden states.

Several questions about one image (question ids (B, Q, T)) are read in one sequence
[codes; q1; ...; qQ] in which each question attends to the codes and to itself only: in the causal
decoder the codes never see a question, so each answer is the one a separate pass over
[codes; q] gives, and the codes' work (most of the sequence) is done once for all Q. A
bidirectional head (`causal=False`), whose codes read the question, runs each question apart.
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
        """codes (B, N) ids, question (B, T) restricted token ids + mask -> answer logits (B, A); or
        Q questions per image, (B, Q, T) -> (B, Q, A), a question slot with an all-False mask being
        padding. With `targets` ((B,) / (B, Q) answer indices, -100 for padding) -> (mean
        cross-entropy over the real questions, logits)."""
        single = question.ndim == 2
        if single:
            question, question_mask = question[:, None], question_mask[:, None]
        b, n = codes.shape
        q, t = question.shape[1:]
        if q > 1 and not self.config.causal:  # the codes read the question: one pass per question
            logits = self(codes.repeat_interleave(q, 0), question.flatten(0, 1), question_mask.flatten(0, 1))
            logits = logits.view(b, q, -1)
        else:
            logits = self.classifier(self.pooled_questions(codes, question, question_mask))  # (B, Q, A)
        if single:
            logits = logits[:, 0]
        if targets is None:
            return logits
        return F.cross_entropy(logits.float().flatten(0, -2), targets.flatten(), ignore_index=-100), logits

    def pooled_questions(self, codes: torch.Tensor, question: torch.Tensor,
                         question_mask: torch.Tensor) -> torch.Tensor:
        """codes (B, N), questions (B, Q, T) -> each question's pooled hidden state (B, Q, dim), from
        one pass over [codes; q1; ...; qQ]."""
        b, n = codes.shape
        q, t = question.shape[1:]
        x_codes = self.codes(codes) + self.segment[0]
        x_words = self.word_embedding(question) + self.word_position[:t] + self.segment[1]  # (B, Q, T, dim)
        mask = torch.cat([torch.ones(b, n, dtype=torch.bool, device=codes.device), question_mask.flatten(1)], 1)
        blocks = question_blocks(n, q, t, codes.device) if q > 1 else None  # one question: plain causal
        hidden = self.encoder(torch.cat([x_codes, x_words.flatten(1, 2)], 1), mask=mask, attn_mask=blocks)
        hidden = hidden[:, n:].unflatten(1, (q, t))  # (B, Q, T, dim)
        if self.config.pooling == "last":
            last = question_mask.long().sum(-1).clamp_min(1) - 1  # (B, Q)
            return hidden.gather(2, last[..., None, None].expand(-1, -1, 1, hidden.shape[-1]))[:, :, 0]
        m = question_mask[..., None].float()
        return (hidden * m).sum(2) / m.sum(2).clamp_min(1)

    def answer_targets(self, answers: list[str], device: torch.device | str = "cpu") -> torch.Tensor:
        """Answer words -> their classifier indices (B,)."""
        return torch.tensor([self.answer_index[a] for a in answers], device=device)

    def encode_question_sets(self, questions: list[list[str]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each image's questions -> ids (B, Q, T), mask (B, Q, T), Q the most any image has; an
        image with fewer gets padding slots (all-False masks)."""
        q = max((len(qs) for qs in questions), default=0)
        ids, mask = self.encode_questions([x for qs in questions for x in qs])
        out_ids = ids.new_full((len(questions), max(q, 1), ids.shape[1]), self.vocab.pad)
        out_mask = mask.new_zeros(out_ids.shape)
        image = torch.tensor([i for i, qs in enumerate(questions) for _ in qs], dtype=torch.long)
        slot = torch.tensor([j for qs in questions for j in range(len(qs))], dtype=torch.long)
        out_ids[image, slot], out_mask[image, slot] = ids, mask
        return out_ids, out_mask

    @torch.no_grad()
    def answer(self, codes: torch.Tensor, questions: list[str] | list[list[str]]) -> list[str] | list[list[str]]:
        """codes (B, N) and one question per image -> B answers; or each image's list of questions
        -> each image's answers (read together, see the module's docstring)."""
        if questions and isinstance(questions[0], str):  # one question an image: a list of one each
            return [given[0] for given in self.answer(codes, [[q] for q in questions])]
        device = self.codes.code_vectors.device
        ids, mask = self.encode_question_sets(questions)
        choice = self(codes.to(device), ids.to(device), mask.to(device)).argmax(-1).tolist()
        return [[self.config.answers[i] for i in row[:len(qs)]] for row, qs in zip(choice, questions)]


def question_blocks(num_codes: int, num_questions: int, length: int, device: torch.device) -> torch.Tensor:
    """(L, L) attention mask, True where allowed, over [codes; q1; ...; qQ] (L = num_codes +
    num_questions * length): the codes attend to the codes, each question to the codes and itself."""
    segment = torch.cat([torch.zeros(num_codes, dtype=torch.long, device=device),
                         torch.arange(1, num_questions + 1, device=device).repeat_interleave(length)])
    return (segment[None, :] == 0) | (segment[:, None] == segment[None, :])
