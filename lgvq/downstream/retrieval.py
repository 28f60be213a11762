"""Retrieval and masked-word prediction with an LG-VQ tokenizer's alignment modules.

    aligned = AlignedTokenizer.from_pretrained("runs/vqgan_lg_shapes/model")
    scores = aligned.similarity(images, ["a red circle", "a blue square"])     # (I, T) cosine
    aligned.fill_mask(image, "a small [MASK] circle")     # -> [("red", 0.91), ...] per [MASK]

Images go through the tokenizer's codes into the visual token encoder ([CLS] output, L_gsa's
image side); texts through the frozen text encoder's sentence feature (L_gsa's text side).
Masked words are predicted by the masked-text predictor (L_mtp) from the image's codes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from lgvq.errors import ConfigError, NotAlignedError, UsageError
from lgvq.tokenizers.model import VQTokenizer


class AlignedTokenizer:
    def __init__(self, tokenizer: VQTokenizer, device: str | torch.device = "cpu"):
        from lgvq.text.encoder import FrozenTextEncoder

        if tokenizer.aligner is None:
            raise NotAlignedError("this tokenizer has no LG-VQ alignment modules: retrieval and fill-mask need one "
                                  "trained with `alignment: lgvq` and saved with lgvq.keep_in_export=true")
        self.device = torch.device(device)
        self.tokenizer = tokenizer.to(self.device).eval()
        spec = tokenizer.config.alignment["config"]
        self.text = FrozenTextEncoder(spec["text_encoder"], spec["max_length"], spec["pooling"]).to(self.device)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> AlignedTokenizer:
        return cls(VQTokenizer.from_pretrained(path), device)

    @torch.no_grad()
    def visual_tokens(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> the alignment's visual tokens (B, N, width)."""
        tok = self.tokenizer
        return tok.aligner.visual_tokens(tok.quantizer.embed(tok.encode(images.to(self.device))))

    @torch.no_grad()
    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tokenizer.aligner.image_embedding(self.visual_tokens(images)), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        if any(not t.strip() for t in texts):
            raise UsageError("empty text: every caption to retrieve needs words")
        return F.normalize(self.text.encode(texts).sentence.float(), dim=-1)

    def similarity(self, images: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """(I, T) cosine similarities between images and texts."""
        return self.image_embeddings(images) @ self.text_embeddings(texts).t()

    @torch.no_grad()
    def fill_mask(self, image: torch.Tensor, caption: str, top_k: int = 3) -> list[list[tuple[str, float]]]:
        """Words for each mask token in `caption` (written as the encoder's mask token, e.g. [MASK],
        or as `_`), predicted from the image's codes: per mask, the top-k (word, probability)."""
        aligner = self.tokenizer.aligner
        if aligner.predictor is None:
            raise NotAlignedError("this tokenizer was trained without the masked-text term (mtp_weight = 0)")
        mask_token = self.text.tokenizer.mask_token
        if mask_token is None:
            raise ConfigError(f"{self.text.name} has no mask token")
        caption = " ".join(mask_token if w == "_" else w for w in caption.split())
        feats = self.text.encode([caption])
        masked = feats.input_ids == self.text.tokenizer.mask_token_id
        if not masked.any():
            raise UsageError(f"no {mask_token} (or _) in the caption {caption!r}: mark the words to predict")
        z_vt = self.visual_tokens(image[None] if image.dim() == 3 else image)
        mask_id = self.text.tokenizer.mask_token_id
        encode_masked = lambda ids, m, where: self.text(ids.masked_fill(where, mask_id), m).tokens
        logits = aligner.predict_masked(z_vt, feats, masked, self.text.token_embedding_matrix(),
                                        encode_masked)  # (M, V)
        probs = logits.float().softmax(-1)
        top = probs.topk(top_k, dim=-1)
        words = self.text.tokenizer.convert_ids_to_tokens
        return [[(w, float(p)) for w, p in zip(words(idx.tolist()), vals.tolist())]
                for vals, idx in zip(top.values, top.indices)]
