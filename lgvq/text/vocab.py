"""Part-of-speech vocabulary mining for VQCT's codebook (`lgvq build-vocab`).

    vocab = mine_captions(captions, min_count=11)     # adjectives, nouns (lemmatised), adj->noun edges
    vocab = mine_encoder_vocab(tokenizer_words, captions, max_words=4096, embed=...)

Tagging offline: the `lemminflect` lexicon gives each word its possible parts of speech; a word
that can be both adjective and noun is an adjective when the next word can be a noun ("red
circle") or when it follows a copula ("is red"), else a noun ("a square to the left"). Function
words are never content words. Adjectives are kept only in their base form (VQCT keeps the JJ
tag, not JJR/JJS, and does not lemmatise adjectives); nouns are lemmatised. With NLTK and its
tagger data installed, `tagger="nltk"` uses `nltk.pos_tag` instead, as the official code does.
Edges: an adjective immediately followed by a noun, one count per occurrence (VQCT's bigrams).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from lgvq.errors import ConfigError, DataError

FUNCTION_WORDS = frozenset("""
a an the this that these those there here it its they them their he she his her we our you your i me my
and or but nor so yet if then than as of in on at by for with without from to into onto over under above below
up down out off near beside between behind before after about around across along through toward towards
is are was were be been being am has have had having do does did will would can could shall should may might
must not no yes very too also just only all any each every some both either neither other another such own same
what which who whom whose where when why how while one two three four five
""".split())
COPULAS = frozenset({"is", "are", "was", "were", "be", "been", "being", "looks", "look", "seems", "seem", "appears"})
WORD = re.compile(r"[a-z]+(?:-[a-z]+)*")


def tokenize(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _lexicon(word: str) -> dict:
    import lemminflect

    return lemminflect.getAllLemmas(word)


def tag_lexicon(words: list[str]) -> list[tuple[str, str | None, str]]:
    """(word, 'ADJ' | 'NOUN' | None, lemma) per word, by the lexicon and the context rule."""
    lex = [({} if w in FUNCTION_WORDS else _lexicon(w)) for w in words]
    can_noun = ["NOUN" in x for x in lex]
    out = []
    for i, (w, x) in enumerate(zip(words, lex)):
        adj = "ADJ" in x and w in x["ADJ"]  # base form only (no comparatives / superlatives)
        noun = "NOUN" in x
        if adj and noun:
            next_noun = i + 1 < len(words) and can_noun[i + 1]
            after_copula = i > 0 and words[i - 1] in COPULAS
            tag = "ADJ" if next_noun or after_copula else "NOUN"
        else:
            tag = "ADJ" if adj else "NOUN" if noun else None
        lemma = x["NOUN"][0] if tag == "NOUN" else w
        out.append((w, tag, lemma))
    return out


def tag_nltk(words: list[str]) -> list[tuple[str, str | None, str]]:
    """NLTK's Penn Treebank tagger (needs nltk's tagger data): JJ -> ADJ, NN* -> NOUN (lemmatised)."""
    import lemminflect
    import nltk

    out = []
    for w, t in nltk.pos_tag(words):
        if t == "JJ":
            out.append((w, "ADJ", w))
        elif t.startswith("NN"):
            out.append((w, "NOUN", (lemminflect.getLemma(w, upos="NOUN") or (w,))[0]))
        else:
            out.append((w, None, w))
    return out


@dataclass
class Vocabulary:
    adjectives: list[str]
    nouns: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # "adj:red" / "noun:circle" -> occurrences
    edges: dict[tuple[str, str], int] = field(default_factory=dict)  # (adjective, noun) -> weight
    source: str = "captions"

    def __len__(self) -> int:
        return len(self.adjectives) + len(self.nouns)

    def edge_index(self) -> tuple[list[tuple[int, int]], list[float]]:
        """Edges between node ids (adjectives first, then nouns) with their weights."""
        a = {w: i for i, w in enumerate(self.adjectives)}
        n = {w: len(self.adjectives) + i for i, w in enumerate(self.nouns)}
        pairs = [((a[x], n[y]), float(c)) for (x, y), c in self.edges.items() if x in a and y in n]
        return [p for p, _ in pairs], [c for _, c in pairs]

    def save(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        data = {"source": self.source, "adjectives": self.adjectives, "nouns": self.nouns, "counts": self.counts,
                "edges": [[x, y, c] for (x, y), c in sorted(self.edges.items())]}
        tmp = folder / "vocab.json.tmp"
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(folder / "vocab.json")
        return folder / "vocab.json"

    @classmethod
    def load(cls, folder: str | Path) -> Vocabulary:
        data = json.loads((Path(folder) / "vocab.json").read_text())
        return cls(data["adjectives"], data["nouns"], data["counts"],
                   {(x, y): c for x, y, c in data["edges"]}, data["source"])


def mine_captions(captions: list[str], min_count: int = 11, tagger: str = "lexicon") -> Vocabulary:
    """VQCT's vocabulary from captions: adjectives and (lemmatised) nouns seen at least `min_count`
    times (the official code keeps words seen more than 10 times), and adjective->noun edges."""
    tag = {"lexicon": tag_lexicon, "nltk": tag_nltk}[tagger]
    adj, noun, edges = Counter(), Counter(), Counter()
    for caption in captions:
        tagged = tag(tokenize(caption))
        for i, (_, t, lemma) in enumerate(tagged):
            if t == "ADJ":
                adj[lemma] += 1
                if i + 1 < len(tagged) and tagged[i + 1][1] == "NOUN":
                    edges[(lemma, tagged[i + 1][2])] += 1
            elif t == "NOUN":
                noun[lemma] += 1
    keep_a = sorted(w for w, c in adj.items() if c >= min_count)
    keep_n = sorted(w for w, c in noun.items() if c >= min_count)
    ka, kn = set(keep_a), set(keep_n)
    counts = {f"adj:{w}": adj[w] for w in keep_a} | {f"noun:{w}": noun[w] for w in keep_n}
    return Vocabulary(keep_a, keep_n, counts, {e: c for e, c in edges.items() if e[0] in ka and e[1] in kn})


def mine_encoder_vocab(words: list[str], captions: list[str], max_words: int = 4096,
                       embed=None, knn: int = 5) -> Vocabulary:
    """Adjectives and nouns among a text encoder's whole-word vocabulary, chosen by the lexicon (up
    to `max_words`, adjectives and nouns in proportion to their share), with edges from adjacent
    pairs in the captions where any, and otherwise each adjective's `knn` nearest nouns by `embed`
    (a function: list of words -> (N, D) features), weight = cosine.

    `words` come in order of preference (a WordPiece vocabulary in id order is roughly by
    frequency); the captions' own adjectives and nouns come first, so the data's words are always
    in the codebook however small `max_words` is."""
    caption_vocab = mine_captions(captions, min_count=1) if captions else None
    adjectives = list(caption_vocab.adjectives) if caption_vocab else []
    nouns = list(caption_vocab.nouns) if caption_vocab else []
    seen = set(adjectives) | set(nouns)
    for w in words:
        if w in seen or not WORD.fullmatch(w) or len(w) < 3 or w in FUNCTION_WORDS:
            continue
        x = _lexicon(w)
        if "ADJ" in x and w in x["ADJ"]:
            adjectives.append(w)
        elif "NOUN" in x and w in x["NOUN"]:
            nouns.append(w)
    share = len(adjectives) / max(len(adjectives) + len(nouns), 1)
    n_adj = min(len(adjectives), max(round(max_words * share), 1))
    adjectives, nouns = sorted(adjectives[:n_adj]), sorted(nouns[:max_words - n_adj])
    from_captions = caption_vocab.edges if caption_vocab else {}
    ka, kn = set(adjectives), set(nouns)
    edges = {e: float(c) for e, c in from_captions.items() if e[0] in ka and e[1] in kn}
    linked = {a for a, _ in edges}
    lonely = [a for a in adjectives if a not in linked]
    if lonely and embed is not None and nouns:
        import torch

        fa = torch.nn.functional.normalize(embed(lonely), dim=-1)
        fn = torch.nn.functional.normalize(embed(nouns), dim=-1)
        sim = fa @ fn.t()
        top = sim.topk(min(knn, len(nouns)), dim=1)
        for i, a in enumerate(lonely):
            for v, j in zip(top.values[i].tolist(), top.indices[i].tolist()):
                edges[(a, nouns[j])] = max(float(v), 1e-3)
    return Vocabulary(adjectives, nouns, {}, edges, source="encoder_vocab")


def word_prompts(vocab: Vocabulary) -> list[str]:
    """VQCT's prompts: 'a photo of {adj} object' and 'a photo of {noun}', adjectives first."""
    return [f"a photo of {a} object" for a in vocab.adjectives] + [f"a photo of {n}" for n in vocab.nouns]


def build_vocab(captions: list[str], out: str | Path, source: str = "captions", text_encoder: str = "minilm",
                min_count: int = 11, max_words: int = 4096, tagger: str = "lexicon",
                batch_size: int = 256) -> Vocabulary:
    """Mine the vocabulary, embed its prompts with the frozen text encoder (sentence features),
    and write OUT/vocab.json + OUT/word_vectors.safetensors ("vectors": (N, D), adjectives first)."""
    import torch
    from safetensors.torch import save_file

    from lgvq.text.encoder import FrozenTextEncoder

    encoder = FrozenTextEncoder(text_encoder, max_length=16)

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.cat([encoder.encode(texts[i:i + batch_size]).sentence.float()
                          for i in range(0, len(texts), batch_size)])

    if source == "captions":
        vocab = mine_captions(captions, min_count, tagger)
    elif source == "encoder_vocab":
        token_ids = encoder.tokenizer.get_vocab()
        words = sorted(token_ids, key=token_ids.get)  # WordPiece ids run roughly by frequency
        vocab = mine_encoder_vocab(words, captions, max_words, embed=lambda ws: embed([f"a photo of {w}" for w in ws]))
    else:
        raise ConfigError(f"source must be 'captions' or 'encoder_vocab', not {source!r}")
    if not vocab.adjectives or not vocab.nouns:
        raise DataError(f"the {source} vocabulary has {len(vocab.adjectives)} adjectives and {len(vocab.nouns)} "
                        f"nouns; VQCT needs both (lower --min-count, or use --source encoder_vocab)")
    folder = Path(out)
    vocab.save(folder)
    vectors = embed(word_prompts(vocab))
    save_file({"vectors": vectors.contiguous()}, str(folder / "word_vectors.safetensors"),
              metadata={"text_encoder": text_encoder, "adjectives": str(len(vocab.adjectives))})
    return vocab
