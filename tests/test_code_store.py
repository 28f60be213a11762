"""The code store: what `lgvq encode` writes equals the tokenizer's and text encoder's outputs,
an interrupted encode resumes, and mismatched or unfinished stores are refused."""

import numpy as np
import pytest
import torch

from lgvq.config import DataConfig
from lgvq.data.code_store import CodeStore, StoreError, StoreRequest, encode_split
from lgvq.data.datasets import build_dataset
from lgvq.text.encoder import FrozenTextEncoder
from lgvq.tokenizers.model import VQTokenizer
from tests.conftest import SHAPES_DATA


def test_store_holds_the_tokenizers_ids_labels_captions_and_features(tiny_store, tiny_tokenizer_dir):
    store = CodeStore(tiny_store / "train")
    tok = VQTokenizer.from_pretrained(tiny_tokenizer_dir).eval()
    data = build_dataset(DataConfig(**SHAPES_DATA), "train")
    assert len(store) == SHAPES_DATA["num_train"] and store.manifest.seq_len == 16
    batch = store.batch([0, 5, 7])
    images = torch.stack([data[i]["image"] for i in (0, 5, 7)])
    with torch.no_grad():
        assert torch.equal(batch["tokens"], tok.encode(images).reshape(3, -1))
    assert batch["label"].tolist() == [data[i]["label"] for i in (0, 5, 7)]
    assert batch["caption"] == [data.sample(i).captions[0] for i in (0, 5, 7)]
    encoder = FrozenTextEncoder("minilm", store.text.max_length)
    feats = encoder.encode(batch["caption"])
    L = store.text.length
    assert torch.equal(batch["text_mask"], feats.mask[:, :L])
    assert torch.equal(batch["text_ids"], feats.input_ids[:, :L] * feats.mask[:, :L])
    assert torch.allclose(batch["text"], feats.tokens[:, :L].float(), atol=2e-2)  # stored as float16


def test_captions_are_drawn_per_image_from_its_own_captions(tiny_store):
    store = CodeStore(tiny_store / "train")
    data = build_dataset(DataConfig(**SHAPES_DATA), "train")
    seen = set()
    for seed in range(20):
        caption = store.batch([3], np.random.default_rng(seed))["caption"][0]
        assert caption in data.sample(3).captions
        seen.add(caption)
    assert len(seen) > 1


class Interrupt(RuntimeError):
    pass


class FailingDataset:
    """Wraps a dataset and raises once `fail_at` items have been read."""

    def __init__(self, inner, fail_at):
        self.inner, self.fail_at, self.reads = inner, fail_at, 0

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, key):
        self.reads += 1
        if self.reads > self.fail_at:
            raise Interrupt()
        return self.inner[key]


def test_interrupted_encode_resumes_and_matches(tiny_tokenizer_dir, tmp_path):
    tok = VQTokenizer.from_pretrained(tiny_tokenizer_dir)
    data_cfg = DataConfig(**SHAPES_DATA)
    data = build_dataset(data_cfg, "train")
    request = StoreRequest(str(tiny_tokenizer_dir), dict(tok.config), {"n": 1}, "train", text_encoder=None)
    straight = encode_split(tok, data, tmp_path / "straight", request, batch_size=4, progress=False)
    failing = FailingDataset(data, fail_at=21)  # dies inside the second chunk of 16 items
    with pytest.raises(Interrupt):
        encode_split(tok, failing, tmp_path / "resumed", request, batch_size=1, progress=False)
    with pytest.raises(StoreError, match="unfinished"):
        CodeStore(tmp_path / "resumed")
    counter = FailingDataset(data, fail_at=10**9)
    encode_split(tok, counter, tmp_path / "resumed", request, batch_size=1, progress=False)
    assert counter.reads == len(data) - 16  # the finished chunk was not encoded again
    a, b = CodeStore(straight), CodeStore(tmp_path / "resumed")
    assert np.array_equal(a.tokens, b.tokens) and np.array_equal(a.labels, b.labels)
    assert a.captions == b.captions and a.texts == b.texts


def test_store_of_another_tokenizer_is_refused(tiny_tokenizer_dir, tmp_path):
    tok = VQTokenizer.from_pretrained(tiny_tokenizer_dir)
    data = build_dataset(DataConfig(**SHAPES_DATA), "validation")
    request = StoreRequest(str(tiny_tokenizer_dir), dict(tok.config), {}, "validation", text_encoder=None)
    encode_split(tok, data, tmp_path / "s", request, progress=False)
    other = StoreRequest(str(tiny_tokenizer_dir), dict(tok.config) | {"codebook_size": 7}, {}, "validation",
                         text_encoder=None)
    with pytest.raises(StoreError, match="the tokenizer's config changed"):
        encode_split(tok, data, tmp_path / "s", other, progress=False)


def test_not_a_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="lgvq encode"):
        CodeStore(tmp_path)


def test_moved_store_brings_its_own_tokenizer(tiny_store, tiny_tokenizer_dir, tmp_path):
    """A store copied to another machine (where the tokenizer's original folder does not exist)
    still gives a prior or head run its tokenizer; without STORE/tokenizer the error says where
    to put one."""
    import json
    import shutil

    moved = tmp_path / "moved"
    shutil.copytree(tiny_store, moved)
    for split in ("train", "validation"):
        manifest = moved / split / "store.json"
        manifest.write_text(json.dumps(json.loads(manifest.read_text()) | {"tokenizer": str(tmp_path / "gone")}))
    copied = CodeStore(moved / "train").copy_tokenizer_to(tmp_path / "run")
    a, b = VQTokenizer.from_pretrained(copied), VQTokenizer.from_pretrained(tiny_tokenizer_dir)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    shutil.rmtree(moved / "tokenizer")
    with pytest.raises(StoreError, match="put the tokenizer's model folder at .*moved/tokenizer"):
        CodeStore(moved / "validation").copy_tokenizer_to(tmp_path / "run2")
