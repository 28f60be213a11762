"""The code store: every image's token ids, labels, captions and frozen caption features, written
once by `lgvq encode` so that priors and heads train without running the image encoder.

STORE/tokenizer is a copy of the stage-one model the codes came from, so that a store can move
to another machine. Layout of one split (STORE/train, STORE/validation), all arrays memory-mapped
numpy files:

    store.json       manifest: tokenizer, token layout, data config, text encoder, counts
    progress.json    how far encoding got (a rerun continues from there)
    tokens.npy       (items, seq_len) int32; item = copy * num_images + image
    valid.npy        (items,) bool; False where the image could not be read
    labels.npy       (images,) int64; -1 without a label
    captions.json    per image, its captions as indices into texts.json
    qa.json          per image, its question-answer pairs ({"type", "question", "answer"})
    texts.json       the unique captions
    text_ids.npy, text_tokens.npy (float16), text_offsets.npy: per unique caption its token ids and
                     frozen per-token features, concatenated without padding (row r is
                     offsets[r]:offsets[r+1])

Interrupted encoding resumes at the last finished chunk; a store made by another tokenizer or
from other data is refused rather than mixed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap

from lgvq.config import DataConfig, load_config
from lgvq.data.datasets import ImageTextDataset
from lgvq.data.loader import collate
from lgvq.errors import OutputWriteError, StoreError, describe_write_error, write_errno
from lgvq.records import StoreManifest, StoreText
from lgvq.runs import MODEL_CONFIG, RunDir, StoreDir

STORE_VERSION = 1


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value))
    tmp.replace(path)


def _read_json(path: Path):
    return json.loads(path.read_text())


@dataclass
class StoreRequest:
    """What `encode_split` writes; equal requests may continue each other's work."""

    tokenizer: str  # path of the tokenizer folder
    tokenizer_config: dict
    data: dict  # the DataConfig, as a dict
    split: str
    copies: int = 1  # augmented views per image (the data config's transforms, view k = epoch k)
    text_encoder: str | None = "minilm"  # None: no caption features
    text_max_length: int = 32
    text_pooling: str = "auto"
    tokenizer_weights: str | None = None  # hash of the tokenizer's weight files (`weights_fingerprint`)
    source: str | None = None  # the dataset's `fingerprint()`: its files, beyond the data config
    num_images: int | None = None

    def identity(self) -> dict:
        """JSON-normalised (tuples become lists), as it is stored in the manifest."""
        return json.loads(json.dumps({
            "tokenizer_config": {k: v for k, v in self.tokenizer_config.items() if not k.startswith("_")},
            "tokenizer_weights": self.tokenizer_weights, "data": self.data, "source": self.source,
            "num_images": self.num_images, "split": self.split, "copies": self.copies,
            "text_encoder": self.text_encoder, "text_max_length": self.text_max_length}))


# what changed, in words, for each identity key of a store that no longer matches its request
IDENTITY_WORDS = {
    "tokenizer_config": "the tokenizer's config", "tokenizer_weights": "the tokenizer's weights",
    "data": "the data config", "source": "the data files (images or metadata added, removed or changed)",
    "num_images": "the number of images", "split": "the split", "copies": "the number of augmented copies",
    "text_encoder": "the text encoder", "text_max_length": "the caption length"}


def weights_fingerprint(model_dir: str | Path) -> str:
    """A hash of a saved model's safetensors files: a retrained tokenizer with the same config
    makes other codes, so a store must not continue with it."""
    digest = hashlib.sha1()
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                digest.update(block)
    return digest.hexdigest()


def check_store_matches(out: Path, request: StoreRequest) -> None:
    """A store folder continues (or stands) only for the request it was made for."""
    manifest_path = out / "store.json"
    if not manifest_path.is_file():
        return
    old = _read_json(manifest_path).get("identity") or {}
    new = request.identity()
    if any(k not in old for k in new):
        raise StoreError(f"{out} holds a code store written by an older lgvq that did not record everything it "
                         f"was made from; rebuild it with --overwrite, or choose another --out")
    changed = [IDENTITY_WORDS.get(k, k) for k in new if old.get(k) != new[k]]
    if changed:
        raise StoreError(f"{out} holds a code store made from other inputs: {'; '.join(changed)} changed since it "
                         f"was written. Rebuild it with --overwrite, or choose another --out")


def encode_split(tokenizer, dataset: ImageTextDataset, out: str | Path, request: StoreRequest,
                 batch_size: int = 64, device: str = "cpu", num_classes: int | None = None,
                 class_names: list[str] | None = None, progress: bool = True,
                 text_cache_dir: str | Path | None = None, overwrite: bool = False) -> Path:
    """Encode every image of `dataset` into the store folder `out`, continuing a previous attempt
    made for the same request (a store made from other inputs is refused, or replaced with
    `overwrite`). `text_cache_dir`: a caption-feature cache to reuse (e.g. the tokenizer run's
    `lgvq.text_cache_dir`)."""
    out = Path(out)
    try:
        if overwrite and out.exists():
            _discard(out)
        check_store_matches(out, request)
        out.mkdir(parents=True, exist_ok=True)
        return _encode_into(tokenizer, dataset, out, request, batch_size, device, num_classes, class_names, progress,
                            text_cache_dir)
    except OSError as e:
        if isinstance(e, OutputWriteError) or write_errno(e) is None:
            raise
        raise OutputWriteError(f"could not write the code store {out} ({describe_write_error(e)}); what it held "
                               f"before is intact. Fix the permission or free space and run the same command "
                               f"again, or choose another --out") from e


def _discard(out: Path) -> None:
    """Remove an old store for --overwrite: renamed aside first, so that a folder this process may
    not change stays whole (the rename fails before anything is deleted)."""
    aside = out.with_name(f".discard-{out.name}-{os.getpid()}")
    out.rename(aside)
    shutil.rmtree(aside, ignore_errors=True)


def _encode_into(tokenizer, dataset: ImageTextDataset, out: Path, request: StoreRequest, batch_size: int,
                 device: str, num_classes: int | None, class_names: list[str] | None, progress: bool,
                 text_cache_dir: str | Path | None) -> Path:
    from tqdm.auto import tqdm

    manifest_path, progress_path = out / "store.json", out / "progress.json"
    num_images = len(dataset)
    num_items = num_images * request.copies
    h, w = tokenizer.token_shape
    seq_len = h * w * getattr(tokenizer, "tokens_per_position", 1)
    if manifest_path.is_file():
        state = _read_json(progress_path)
    else:
        state = {"items_done": 0, "text_done": False}
        open_memmap(out / "tokens.npy", "w+", np.int32, (num_items, seq_len))
        open_memmap(out / "valid.npy", "w+", np.bool_, (num_items,))
        open_memmap(out / "labels.npy", "w+", np.int64, (num_images,))
        _write_json(progress_path, state)
        manifest = StoreManifest(
            version=STORE_VERSION, identity=request.identity(), tokenizer=str(Path(request.tokenizer)),
            vocab_size=int(tokenizer.vocab_size), token_shape=[h, w],
            tokens_per_position=int(getattr(tokenizer, "tokens_per_position", 1)), seq_len=seq_len,
            num_images=num_images, copies=request.copies, num_items=num_items,
            num_classes=num_classes, class_names=class_names, complete=False)
        _write_json(manifest_path, manifest.to_json())
    manifest = StoreManifest.from_json(_read_json(manifest_path))
    (out / "parts").mkdir(exist_ok=True)

    tokenizer = tokenizer.to(device).eval()
    tokens = open_memmap(out / "tokens.npy", "r+")
    valid = open_memmap(out / "valid.npy", "r+")
    labels = open_memmap(out / "labels.npy", "r+")
    chunk = batch_size * 16  # progress is committed every chunk
    bar = tqdm(total=num_items, initial=state["items_done"], desc=f"encode {request.split}", unit="img",
               disable=not progress or state["items_done"] >= num_items)
    with torch.no_grad():
        for start in range(state["items_done"], num_items, chunk):
            stop = min(start + chunk, num_items)
            captions: dict[int, list[str]] = {}
            qa: dict[int, list[dict]] = {}
            for b in range(start, stop, batch_size):
                keys = [(item % num_images, item // num_images) for item in range(b, min(b + batch_size, stop))]
                items = [dataset[k] for k in keys]
                batch = collate(items)
                ok = [i for i, it in enumerate(items) if it is not None]
                rows = np.array([b + i for i in ok], dtype=np.int64)
                if len(ok):
                    ids = tokenizer.encode(batch["image"].to(device)).reshape(len(ok), -1)
                    tokens[rows] = ids.cpu().numpy().astype(np.int32)
                    valid[rows] = True
                    for it in (items[i] for i in ok):
                        labels[it["index"]] = it["label"]
                        captions[it["index"]] = it["captions"]
                        qa[it["index"]] = it.get("qa", [])
                bar.update(len(keys))
            for array in (tokens, valid, labels):
                array.flush()
            _write_json(out / "parts" / f"captions-{start:09d}.json", {"captions": captions, "qa": qa})
            state["items_done"] = stop
            _write_json(progress_path, state)
    bar.close()
    del tokens, valid, labels

    if not state["text_done"]:
        _write_captions_and_features(out, request, manifest, text_cache_dir)
        state["text_done"] = True
        _write_json(progress_path, state)
    manifest.complete = True
    _write_json(manifest_path, manifest.to_json())
    return out


def _write_captions_and_features(out: Path, request: StoreRequest, manifest: StoreManifest,
                                 text_cache_dir: str | Path | None) -> None:
    """Gather the per-chunk captions, index the unique ones, and store their frozen features."""
    per_image: dict[int, list[str]] = {}
    qa: dict[int, list[dict]] = {}
    for part in sorted((out / "parts").glob("captions-*.json")):
        content = _read_json(part)
        per_image |= {int(k): v for k, v in content["captions"].items()}
        qa |= {int(k): v for k, v in content["qa"].items()}
    _write_json(out / "qa.json", [qa.get(i, []) for i in range(manifest.num_images)])
    texts = list(dict.fromkeys(c for i in sorted(per_image) for c in per_image[i]))
    index = {t: i for i, t in enumerate(texts)}
    _write_json(out / "texts.json", texts)
    _write_json(out / "captions.json", [[index[c] for c in per_image.get(i, [])]
                                         for i in range(manifest.num_images)])
    if request.text_encoder is None or not texts:
        manifest.text = None
        return
    from lgvq.text.cache import TextFeatureCache
    from lgvq.text.encoder import FrozenTextEncoder

    encoder = FrozenTextEncoder(request.text_encoder, request.text_max_length, request.text_pooling)
    cache = TextFeatureCache(encoder, text_cache_dir, batch_size=256)
    cache.precompute(texts)
    cache.save()
    lengths = np.array([cache.rows[t][0].shape[0] for t in texts], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    np.save(out / "text_offsets.npy", offsets)
    np.save(out / "text_ids.npy", np.concatenate([cache.rows[t][0].numpy() for t in texts]).astype(np.int32))
    feats = open_memmap(out / "text_tokens.npy", "w+", np.float16, (int(offsets[-1]), encoder.width))
    for i, t in enumerate(texts):
        feats[offsets[i]:offsets[i + 1]] = cache.rows[t][1].numpy().astype(np.float16)
    feats.flush()
    manifest.text = StoreText(encoder=request.text_encoder, max_length=request.text_max_length,
                              pooling=request.text_pooling, width=encoder.width, length=int(lengths.max()))


def copy_folder(source: Path, target: Path) -> None:
    """Copy a model folder atomically: into a temporary folder, then renamed into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".tmp-{target.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    tmp.replace(target)


def keep_tokenizer_copy(store_root: str | Path, tokenizer_dir: str | Path) -> Path:
    """STORE/tokenizer: a copy of the stage-one model beside its codes, so that a store moved to
    another machine still trains priors and heads. Kept if already there."""
    target = StoreDir(Path(store_root)).tokenizer
    if not (target / MODEL_CONFIG).is_file():
        copy_folder(Path(tokenizer_dir), target)
    return target


def store_batches(num_items: int, batch_size: int, seed: int, rank: int, world_size: int, start_batch: int):
    """Training order over a store: (positions, rng) per batch, forever, from batch `start_batch`.
    The rng (for per-image choices such as which caption or question) is a function of
    (seed, rank, batch number), so a resumed run draws what an uninterrupted one would."""
    from lgvq.data.loader import EpochBatchSampler

    sampler = EpochBatchSampler(num_items, batch_size, seed, rank, world_size, start_batch)
    for k, keys in enumerate(sampler, start=start_batch):
        yield [i for i, _ in keys], np.random.default_rng([seed, rank, k])


class CodeStore:
    """Read side of one split of a code store (memory-mapped)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest = self.path / "store.json"
        if not manifest.is_file():
            raise StoreError(f"{self.path} is not a code store (no store.json); write one with "
                             f"`lgvq encode --tokenizer RUN/model --out STORE`")
        self.manifest = StoreManifest.from_json(_read_json(manifest))
        if not self.manifest.complete:
            raise StoreError(f"{self.path} is unfinished; run the same `lgvq encode` command again to complete it")
        self.tokens = np.load(self.path / "tokens.npy", mmap_mode="r")
        self.valid = np.load(self.path / "valid.npy", mmap_mode="r")
        self.labels = np.load(self.path / "labels.npy", mmap_mode="r")
        self.captions: list[list[int]] = _read_json(self.path / "captions.json")
        self.texts: list[str] = _read_json(self.path / "texts.json")
        qa_file = self.path / "qa.json"
        self.qa: list[list[dict]] = _read_json(qa_file) if qa_file.is_file() else [[] for _ in self.captions]
        self.text = self.manifest.text
        if self.text:
            self.text_offsets = np.load(self.path / "text_offsets.npy")
            self.text_ids = np.load(self.path / "text_ids.npy", mmap_mode="r")
            self.text_tokens = np.load(self.path / "text_tokens.npy", mmap_mode="r")
        self.items = np.flatnonzero(np.asarray(self.valid))  # readable items

    def __len__(self) -> int:
        return len(self.items)

    def data_config(self) -> DataConfig:
        """The data config the store was encoded from (to rebuild its dataset, e.g. for a scorer)."""
        return load_config(DataConfig, None, base=self.manifest.identity["data"])

    def images(self) -> np.ndarray:
        """The image index of each readable item."""
        return self.items % self.num_images

    def copy_tokenizer_to(self, run_dir: str | Path) -> Path:
        """RUN/tokenizer: a copy of the stage-one model the codes came from, so a prior or head run
        can decode / read images on its own. Taken from the store's own copy (STORE/tokenizer,
        which travels with the store), else from where it was encoded. Kept if already there."""
        target = RunDir(Path(run_dir)).tokenizer
        if target.is_dir():
            return target
        candidates = (StoreDir(self.path.parent).tokenizer, Path(self.manifest.tokenizer))
        source = next((c for c in candidates if (c / MODEL_CONFIG).is_file()), None)
        if source is None:
            raise StoreError(f"the store's tokenizer is gone: neither {candidates[0]} nor {candidates[1]} holds it; "
                             f"put the tokenizer's model folder at {candidates[0]}")
        copy_folder(source, target)
        return target

    @property
    def num_images(self) -> int:
        return self.manifest.num_images

    def image_of(self, item: int) -> int:
        return int(item) % self.num_images

    def text_features(self, text_rows: list[int], length: int | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded features (B, length, D) float32, mask (B, length) and the text encoder's token
        ids (B, length) long (0 at padding) for caption rows."""
        if not self.text:
            raise StoreError(f"{self.path} holds no caption features (encoded without a text encoder)")
        length = length or self.text.length
        feats = torch.zeros(len(text_rows), length, self.text.width)
        mask = torch.zeros(len(text_rows), length, dtype=torch.bool)
        ids = torch.zeros(len(text_rows), length, dtype=torch.long)
        for i, r in enumerate(text_rows):
            a, b = self.text_offsets[r], self.text_offsets[r + 1]
            n = min(b - a, length)
            feats[i, :n] = torch.from_numpy(np.asarray(self.text_tokens[a:a + n], dtype=np.float32))
            ids[i, :n] = torch.from_numpy(np.asarray(self.text_ids[a:a + n], dtype=np.int64))
            mask[i, :n] = True
        return feats, mask, ids

    def batch(self, positions: list[int], caption_rng: np.random.Generator | None = None,
              text_length: int | None = None) -> dict:
        """Positions into the readable items -> tokens (B, N), labels (B,), caption rows (one drawn per
        image; the first caption without `caption_rng`) and, with features stored, text (B, L, D),
        text_mask and text_ids (B, L), padded or truncated to `text_length` (default: the longest
        caption of this split)."""
        items = self.items[np.asarray(positions, dtype=np.int64)]
        images = items % self.num_images
        out = {"tokens": torch.from_numpy(np.asarray(self.tokens[items], dtype=np.int64)),
               "label": torch.from_numpy(np.asarray(self.labels[images], dtype=np.int64)),
               "index": torch.from_numpy(images)}
        rows = []
        for image in images:
            options = self.captions[int(image)]
            rows.append(options[int(caption_rng.integers(len(options)))] if caption_rng is not None and options
                        else (options[0] if options else -1))
        out["caption"] = [self.texts[r] if r >= 0 else "" for r in rows]
        if self.text and all(r >= 0 for r in rows):
            out["text"], out["text_mask"], out["text_ids"] = self.text_features(rows, text_length)
        return out
