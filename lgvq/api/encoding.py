"""Writing a code store, and VQCT's vocabulary: what `lgvq encode` and `lgvq build-vocab` run.

    splits = encode_store("runs/tok/model", "runs/codes", text_max_length=24)   # {"train": Path, ...}
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lgvq.api.data import apply_data_overrides, data_config_for, source_config
from lgvq.data.code_store import StoreRequest, encode_split, keep_tokenizer_copy, weights_fingerprint
from lgvq.data.datasets import build_dataset
from lgvq.devices import resolve_device
from lgvq.runs import StoreDir
from lgvq.text.vocab import Vocabulary, build_vocab
from lgvq.tokenizers.model import VQTokenizer

log = logging.getLogger(__name__)


def encode_store(tokenizer: str | Path, out: str | Path, *, data: str | None = None, overrides: Sequence[str] = (),
                 splits: Sequence[str] = ("train", "validation"), copies: int = 1, text_encoder: str = "auto",
                 text_max_length: int = 32, text_cache_dir: str | Path | None = None, batch_size: int = 64,
                 device: str | None = None, overwrite: bool = False) -> dict[str, Path]:
    """Encode each split of the data (the tokenizer run's own unless `data` names another source)
    into the store `out`, resuming an interrupted attempt. A store made from other inputs (another
    tokenizer, data config, text encoder, or data files that changed since) is refused, or
    rebuilt with `overwrite`. `text_encoder`: auto (the tokenizer's alignment encoder, else
    minilm), none, or a name / path. Returns each split's folder."""
    model_dir = Path(tokenizer)
    model = VQTokenizer.from_pretrained(model_dir)
    if model.aligner is not None:
        model = model.without_alignment()
    data_cfg = data_config_for(data, model_dir, overrides)
    data_cfg.image_size = model.config.resolution
    if text_encoder == "auto":
        text_encoder = ((model.config.alignment or {}).get("config") or {}).get("text_encoder", "minilm")
    store = StoreDir(Path(out))
    weights = weights_fingerprint(model_dir)
    written = {}
    for split in splits:
        dataset = build_dataset(data_cfg, split)
        names = dataset.class_names()
        request = StoreRequest(str(model_dir.resolve()), dict(model.config), asdict(data_cfg), split,
                               copies if split == "train" else 1, None if text_encoder == "none" else text_encoder,
                               text_max_length, tokenizer_weights=weights, source=dataset.fingerprint(),
                               num_images=len(dataset))
        written[split] = encode_split(model, dataset, store.split(split), request, batch_size=batch_size,
                                      device=str(resolve_device(device)), num_classes=len(names) if names else None,
                                      class_names=names, text_cache_dir=text_cache_dir, overwrite=overwrite)
        log.info("%s: %d images encoded to %s", split, len(dataset), written[split])
    keep_tokenizer_copy(store.root, model_dir)  # after encoding: a store of another tokenizer was refused above
    return written


def build_vocabulary(out: str | Path, *, data: str = "shapes", overrides: Sequence[str] = (), source: str = "captions",
                     text_encoder: str = "minilm", min_count: int = 11, max_words: int = 4096,
                     tagger: str = "lexicon") -> Vocabulary:
    """VQCT's adjective / noun vocabulary with edges and word vectors, mined from the data's
    training captions (`source=captions`) or taken from the text encoder's whole words."""
    data_cfg = apply_data_overrides(source_config(data), overrides)
    captions = build_dataset(data_cfg, "train", require_captions=source == "captions").all_captions()
    return build_vocab(captions, out, source, text_encoder, min_count, max_words, tagger)
