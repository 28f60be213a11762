"""VQCT vocabulary mining: parts of speech from the lexicon and context, counts, edges, vectors."""

import json

import pytest
from safetensors.torch import load_file

from lgvq.cli import main
from lgvq.text.vocab import (
    Vocabulary,
    mine_captions,
    mine_encoder_vocab,
    tag_lexicon,
    tokenize,
    word_prompts,
)

CAPTIONS = [
    "a small red circle",
    "a large blue square to the left of a small yellow triangle",
    "there is a small white square",
    "a square that is white",
    "the bird has black wings and a red crown",
    "this bird has larger wings than the smallest bird",
]


def tags(text):
    return [(w, t) for w, t, _ in tag_lexicon(tokenize(text)) if t]


def test_context_decides_adjective_or_noun():
    assert tags("a small red circle") == [("small", "ADJ"), ("red", "ADJ"), ("circle", "NOUN")]
    assert tags("a square that is white") == [("square", "NOUN"), ("white", "ADJ")]
    assert ("square", "NOUN") in tags("a large blue square to the left of it")
    assert tags("there is a bird") == [("bird", "NOUN")]  # function words are never content words


def test_mining_counts_lemmas_and_edges():
    vocab = mine_captions(CAPTIONS, min_count=1)
    assert {"small", "red", "large", "blue", "yellow", "white", "black"} <= set(vocab.adjectives)
    assert {"circle", "square", "triangle", "bird", "wing", "crown"} <= set(vocab.nouns)  # wings -> wing
    assert "larger" not in vocab.adjectives and "smallest" not in vocab.adjectives  # JJR / JJS excluded
    assert vocab.edges[("red", "circle")] == 1 and vocab.edges[("black", "wing")] == 1
    assert ("small", "red") not in vocab.edges  # adjective -> noun only
    assert vocab.counts["adj:small"] == 3 and vocab.counts["noun:bird"] == 3


def test_frequency_threshold_follows_the_official_more_than_ten():
    captions = ["a red circle"] * 11 + ["a blue circle"] * 10
    vocab = mine_captions(captions, min_count=11)
    assert vocab.adjectives == ["red"] and vocab.nouns == ["circle"]
    assert vocab.edges == {("red", "circle"): 11}


def test_encoder_vocabulary_with_caption_and_neighbour_edges():
    words = ["red", "blue", "circle", "square", "##ing", "the", "ok", "happy", "dog"]
    embed_calls = []

    def embed(ws):  # fixed pseudo-random features per word
        import torch

        embed_calls.append(list(ws))
        return torch.stack([torch.randn(8, generator=torch.Generator().manual_seed(sum(map(ord, w)))) for w in ws])

    vocab = mine_encoder_vocab(words, ["a red circle"], max_words=10, embed=embed, knn=1)
    assert set(vocab.adjectives) >= {"red", "blue", "happy"} and set(vocab.nouns) >= {"circle", "dog"}
    assert "the" not in vocab.adjectives + vocab.nouns and "##ing" not in vocab.nouns
    assert vocab.edges[("red", "circle")] == 1.0  # from the caption
    assert any(a == "blue" for a, _ in vocab.edges)  # from embedding neighbours
    assert "red" not in embed_calls[0]  # adjectives with caption edges need no neighbours


def test_encoder_vocabulary_keeps_the_caption_words_and_the_preferred_order():
    words = ["happy", "old", "new", "dog", "house", "tree", "car", "red", "circle"]  # caption words last
    vocab = mine_encoder_vocab(words, ["a red circle"], max_words=4)
    assert "red" in vocab.adjectives and "circle" in vocab.nouns
    assert len(vocab) == 4 and "car" not in vocab.nouns  # the rest filled in the given order


def test_save_load_and_prompts(tmp_path):
    vocab = mine_captions(CAPTIONS, min_count=1)
    vocab.save(tmp_path)
    again = Vocabulary.load(tmp_path)
    assert again.adjectives == vocab.adjectives and again.edges == vocab.edges
    prompts = word_prompts(vocab)
    assert prompts[0] == f"a photo of {vocab.adjectives[0]} object" and prompts[-1] == f"a photo of {vocab.nouns[-1]}"
    (idx, weights) = vocab.edge_index()
    assert all(a < len(vocab.adjectives) <= n for a, n in idx) and len(weights) == len(idx)


def test_build_vocab_cli_on_shapes(tmp_path):
    out = tmp_path / "vocab"
    assert main(["build-vocab", "--out", str(out), "--min-count", "5", "data.num_train=60"]) == 0
    vocab = json.loads((out / "vocab.json").read_text())
    assert set(vocab["adjectives"]) >= {"red", "small", "large"} and set(vocab["nouns"]) >= {"circle", "square"}
    vectors = load_file(str(out / "word_vectors.safetensors"))["vectors"]
    assert vectors.shape == (len(vocab["adjectives"]) + len(vocab["nouns"]), 384)


def test_build_vocab_without_nouns_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="needs both"):
        from lgvq.text.vocab import build_vocab

        build_vocab(["it is red"] * 20, tmp_path, min_count=1)


def test_cache_pads_to_the_longest_caption_only_when_asked():
    import torch

    from lgvq.text.cache import TextFeatureCache
    from lgvq.text.encoder import FrozenTextEncoder

    cache = TextFeatureCache(FrozenTextEncoder("minilm", max_length=24))
    texts = ["a red circle", "a large blue square to the left of a small yellow triangle"]
    full, short = cache(texts), cache(texts, pad_to_longest=True)
    n = int(short.mask.sum(1).max())
    assert full.tokens.shape[1] == 24 and short.tokens.shape[1] == n < 24
    assert torch.equal(full.tokens[:, :n], short.tokens) and not full.mask[:, n:].any()
    # cached in length-sorted batches padded to their longest: the same features as padded to max_length
    padded = cache.encoder.encode(texts)
    real = padded.mask
    assert torch.equal(real, full.mask) and torch.allclose(padded.tokens[real], full.tokens[real], atol=1e-5)
