"""The words a downstream head reads and writes: the text encoder's tokenizer, restricted to the
token ids that occur in the training texts (plus the special tokens).

A head over all 30k word pieces of a BERT vocabulary would spend most of its parameters and
logits on words the data never uses; the restricted vocabulary keeps the tokenizer's word
pieces (so any text still tokenizes) and maps unseen pieces to [UNK].
"""

from __future__ import annotations

from functools import lru_cache

import torch

from lgvq.errors import ConfigError


@lru_cache(maxsize=4)
def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    from lgvq.text.encoder import resolve_encoder_path

    return AutoTokenizer.from_pretrained(resolve_encoder_path(name))


class TextVocab:
    """Maps text <-> indices of a restricted vocabulary. Index 0 is padding."""

    def __init__(self, tokenizer_name: str, token_ids: list[int]):
        self.tokenizer_name = tokenizer_name
        self.tokenizer = load_tokenizer(tokenizer_name)
        t = self.tokenizer
        self.bos_id = t.cls_token_id if t.cls_token_id is not None else t.bos_token_id
        self.eos_id = t.sep_token_id if t.sep_token_id is not None else t.eos_token_id
        specials = [t.pad_token_id, t.unk_token_id, self.bos_id, self.eos_id]
        if any(s is None for s in specials):
            raise ConfigError(f"tokenizer {tokenizer_name} lacks a pad, unk, start or end token")
        self.token_ids = list(dict.fromkeys([*specials, *token_ids]))  # pad first -> index 0
        self.index = {tid: i for i, tid in enumerate(self.token_ids)}
        self.pad, self.unk, self.bos, self.eos = (self.index[s] for s in specials)

    @classmethod
    def from_texts(cls, tokenizer_name: str, texts: list[str]) -> TextVocab:
        tok = load_tokenizer(tokenizer_name)
        seen = sorted({i for ids in tok(list(texts), add_special_tokens=False)["input_ids"] for i in ids})
        return cls(tokenizer_name, seen)

    def __len__(self) -> int:
        return len(self.token_ids)

    def encode(self, texts: list[str], max_length: int, add_bos_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """-> ids (B, T) in the restricted vocabulary (padded with 0, truncated), mask (B, T) bool.
        With `add_bos_eos` every row is [BOS] text [EOS]."""
        pieces = self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        rows = []
        for p in pieces:
            ids = [self.index.get(i, self.unk) for i in p]
            if add_bos_eos:
                ids = [self.bos, *ids[:max_length - 2], self.eos]
            rows.append(ids[:max_length])
        width = max(len(r) for r in rows) if rows else 0
        out = torch.full((len(rows), width), self.pad, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, :len(r)] = torch.tensor(r)
        return out, out != self.pad

    def decode(self, ids: list[int]) -> str:
        """Restricted indices -> text (stops at [EOS], drops specials)."""
        pieces = []
        for i in ids:
            if i == self.eos:
                break
            if i in (self.pad, self.bos):
                continue
            pieces.append(self.token_ids[i])
        return self.tokenizer.decode(pieces, skip_special_tokens=True).strip()
