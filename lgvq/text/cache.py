"""Text features computed once per unique caption, kept in memory and optionally on disk.

    cache = TextFeatureCache(encoder)            # or TextFeatureCache(encoder, "runs/x/text_cache")
    feats = cache(["a red circle", ...])         # padded TextFeatures; only unseen captions are encoded

Rows are stored without padding (real tokens only). The disk file is keyed by the encoder's
`key` (name, max length, pooling): a cache written by another encoder is not reused.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lgvq.text.encoder import FrozenTextEncoder, TextFeatures

CACHE_FILE = "text_features.safetensors"
INDEX_FILE = "text_features.json"


class TextFeatureCache:
    def __init__(self, encoder: FrozenTextEncoder, cache_dir: str | Path | None = None, batch_size: int = 256):
        self.encoder, self.batch_size = encoder, batch_size
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.rows: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # ids (L,), tokens (L, D), sentence
        self.encoded_count = 0  # captions run through the encoder (for tests and logs)
        self._dirty = False
        if self.cache_dir is not None and (self.cache_dir / INDEX_FILE).is_file():
            self.load()

    def __len__(self) -> int:
        return len(self.rows)

    def _fill(self, texts: list[str]) -> None:
        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        # batches of similar length, each padded only to its longest caption: rows keep their real
        # tokens alone, and the encoder's work on padding (up to half of it on short captions) is saved
        missing.sort(key=len)
        for i in range(0, len(missing), self.batch_size):
            chunk = missing[i:i + self.batch_size]
            f = self.encoder.encode(chunk, pad_to_longest=True)
            for j, text in enumerate(chunk):
                m = f.mask[j]
                self.rows[text] = (f.input_ids[j][m].cpu(), f.tokens[j][m].float().cpu(), f.sentence[j].float().cpu())
            self.encoded_count += len(chunk)
            self._dirty = True

    def precompute(self, texts: list[str], progress: bool = True) -> int:
        """Encode every not-yet-cached text in large batches; returns how many were encoded."""
        from tqdm.auto import tqdm

        missing = list(dict.fromkeys(t for t in texts if t not in self.rows))
        for i in tqdm(range(0, len(missing), self.batch_size), desc="text features", disable=not progress or
                      not missing):
            self._fill(missing[i:i + self.batch_size])
        return len(missing)

    def __call__(self, texts: list[str], pad_to_longest: bool = False) -> TextFeatures:
        """Padded features (B, T, ...) for `texts`, on the CPU: T = the encoder's max_length, or
        with `pad_to_longest` the longest of these texts (padding is masked, so the real tokens'
        features are the same either way)."""
        self._fill(texts)
        D = self.encoder.width
        T = max(self.rows[t][0].shape[0] for t in texts) if pad_to_longest and texts else self.encoder.max_length
        pad = self.encoder.tokenizer.pad_token_id or 0
        ids = torch.full((len(texts), T), pad, dtype=torch.long)
        mask = torch.zeros(len(texts), T, dtype=torch.bool)
        tokens = torch.zeros(len(texts), T, D)
        sentence = torch.stack([self.rows[t][2] for t in texts])
        for i, text in enumerate(texts):
            row_ids, row_tokens, _ = self.rows[text]
            n = row_ids.shape[0]
            ids[i, :n], mask[i, :n], tokens[i, :n] = row_ids, True, row_tokens
        return TextFeatures(ids, mask, tokens, sentence)

    # -- disk ---------------------------------------------------------------------------------
    def save(self) -> None:
        """Write all rows to `cache_dir` (atomically); a no-op without a cache_dir or changes."""
        if self.cache_dir is None or not self._dirty:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        texts = list(self.rows)
        lengths = [self.rows[t][0].shape[0] for t in texts]
        tensors = {
            "ids": torch.cat([self.rows[t][0] for t in texts]),
            "tokens": torch.cat([self.rows[t][1] for t in texts]),
            "sentence": torch.stack([self.rows[t][2] for t in texts]),
        }
        tmp = self.cache_dir / f"{CACHE_FILE}.{os.getpid()}.tmp"  # processes may save side by side
        save_file(tensors, str(tmp))
        tmp.replace(self.cache_dir / CACHE_FILE)
        index_tmp = self.cache_dir / f"{INDEX_FILE}.{os.getpid()}.tmp"
        index_tmp.write_text(json.dumps({"encoder": self.encoder.key, "texts": texts, "lengths": lengths}))
        index_tmp.replace(self.cache_dir / INDEX_FILE)
        self._dirty = False

    def load(self) -> None:
        index = json.loads((self.cache_dir / INDEX_FILE).read_text())
        if index["encoder"] != self.encoder.key:
            return  # features of another encoder: recompute rather than mix
        tensors = load_file(str(self.cache_dir / CACHE_FILE))
        offset = 0
        for i, (text, n) in enumerate(zip(index["texts"], index["lengths"])):
            self.rows[text] = (tensors["ids"][offset:offset + n], tensors["tokens"][offset:offset + n],
                               tensors["sentence"][i])
            offset += n
