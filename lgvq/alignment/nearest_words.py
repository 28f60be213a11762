"""What an LG-VQ tokenizer's codes say in words, through its trained alignment.

    words = NearestWords(tokenizer, ["red", "blue", "circle", "square"])
    words(ids, k=3)      # ids (h, w) of one image -> for each position, its 3 nearest words

Each position's visual token Z_vt (the visual token encoder over the image's codes, in the text
encoder's width) against each word's feature from the frozen text encoder (the mean of its
word-piece features), by cosine: the rule by which L_ras pairs a caption word with a visual token
(`nearest_visual_tokens`). Z_vt reads the whole image, so one code id can name different words at
different positions. Needs a tokenizer saved with its alignment modules.
"""

from __future__ import annotations

from collections import Counter

import torch
import torch.nn.functional as F

from lgvq.errors import NotAlignedError, UsageError

# words that name nothing in an image; left out of a vocabulary mined from captions
FUNCTION_WORDS = frozenset(
    "a an the and or of to in on at by for with from is are was were be this that these those it its there "
    "which who as into onto over under above below left right side next one two three".split())


class NearestWords:
    def __init__(self, tokenizer, words: list[str]):
        from lgvq.text.encoder import FrozenTextEncoder

        if tokenizer.aligner is None:
            raise NotAlignedError("this tokenizer was saved without its alignment modules (alignment: none, or "
                             "lgvq.keep_in_export=false): its codes have no words")
        if not words:
            raise UsageError("no words to compare the codes with")
        lg = tokenizer.config.alignment["config"]
        encoder = FrozenTextEncoder(lg["text_encoder"], lg["max_length"], lg["pooling"])
        with torch.no_grad():
            feats = encoder.encode(list(words), pad_to_longest=True)
        special = torch.isin(feats.input_ids, torch.tensor(sorted(encoder.special_token_ids())))
        keep = (feats.mask & ~special).float()[..., None]  # (W, L, 1) the word's own pieces
        mean = (feats.tokens.float() * keep).sum(1) / keep.sum(1).clamp_min(1)
        self.vectors = F.normalize(mean, dim=-1)  # (W, D)
        self.words = list(words)
        self.tokenizer = tokenizer

    @torch.no_grad()
    def __call__(self, ids: torch.Tensor, k: int = 3) -> list[list[str]]:
        """ids (h, w) or (h, w, tokens per position) of one image -> the k nearest words of each
        position, row-major."""
        tok = self.tokenizer
        quantized = tok.quantizer.embed(ids[None].to(self.vectors.device))  # (1, C, h, w)
        z_vt = tok.aligner.visual_tokens(quantized)[0, 1:].float()  # (h*w, D); token 0 is [CLS]
        sim = F.normalize(z_vt, dim=-1) @ self.vectors.T
        top = sim.topk(min(k, len(self.words)), dim=-1).indices.tolist()
        return [[self.words[j] for j in row] for row in top]


def caption_vocabulary(captions: list[str], max_words: int = 500) -> list[str]:
    """The most frequent words of the captions (letters only, function words left out)."""
    counts = Counter(w for c in captions for w in c.lower().replace(",", " ").replace(".", " ").split()
                     if w.isalpha() and w not in FUNCTION_WORDS)
    return [w for w, _ in counts.most_common(max_words)]
