"""The project's small JSON files as typed records: a code store's store.json and the evaluations'
results (RUN/eval/tokenizer.json, RUN/eval/prior.json).

    manifest = StoreManifest.from_json(json.loads(path.read_text()))
    manifest.seq_len, manifest.text.width if manifest.text else None
    path.write_text(json.dumps(manifest.to_json()))

Readers use the fields; the JSON layout stays what it was, so files written before load as they are.
Keys a record does not know (a newer writer's) are kept aside (`extra`) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

R = TypeVar("R", bound="Record")


class Record:
    """to_json / from_json for a dataclass with an `extra` field."""

    @classmethod
    def from_json(cls: type[R], data: dict) -> R:
        known = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in data.items() if k in known},
                   extra={k: v for k, v in data.items() if k not in known})

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"} | self.extra


@dataclass
class StoreText:
    """The frozen caption features a store holds."""

    encoder: str
    max_length: int
    pooling: str
    width: int  # feature width
    length: int  # the longest caption's tokens


@dataclass
class StoreManifest(Record):
    """store.json: how the codes were made and how they are laid out."""

    version: int
    identity: dict  # what the store was made from (tokenizer hash, data, split, ...): `StoreRequest.identity`
    tokenizer: str  # where the tokenizer was when the store was encoded
    vocab_size: int
    token_shape: list[int]  # (h, w) grid cells
    tokens_per_position: int
    seq_len: int  # tokens per image: h * w * tokens_per_position
    num_images: int
    copies: int  # augmented copies of each image
    num_items: int  # num_images * copies
    num_classes: int | None = None
    class_names: list[str] | None = None
    complete: bool = False
    text: StoreText | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        return super().to_json() | {"text": asdict(self.text) if self.text is not None else None}

    @classmethod
    def from_json(cls, data: dict) -> StoreManifest:
        text = data.get("text")
        return super().from_json(data | {"text": StoreText(**text) if text else None})


def _share(rates: dict | None, group: str) -> float | None:
    return (rates or {}).get(group)


@dataclass
class TokenizerEvaluation(Record):
    """`lgvq evaluate-tokenizer`: reconstruction, codebook use, and (shapes) the scorer on the
    reconstructions. Fields an evaluation could not compute are None (the reason in `notes`)."""

    num_images: int = 0
    tokens_per_image: int | None = None
    codebook_size: int | None = None
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    rfid: float | None = None
    codebook_usage: float | None = None  # share of the codes used on the evaluation images
    perplexity: float | None = None
    black_patch_codes: int | None = None  # codes given to all-black patches, and their entropy (nats)
    black_patch_entropy: float | None = None
    # per group of captions (one_object, two_objects, ...): the share of reconstructions the scorer
    # accepts; count_GROUP: how many images
    reconstruction_faithfulness: dict | None = None
    notes: dict = field(default_factory=dict)
    data: dict | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def faithful(self, group: str) -> float | None:
        return _share(self.reconstruction_faithfulness, group)


@dataclass
class PriorEvaluation(Record):
    """`lgvq evaluate-prior`: validation NLL, prompt faithfulness per sampling seed and their mean,
    FID of the first seed's images."""

    prior: str | None = None
    seed: int = 0  # the first sampling seed
    sampling: dict = field(default_factory=dict)
    validation: dict | None = None  # nll, bits_per_token, perplexity, items
    faithfulness: dict | None = None  # per group of prompts, the mean over seeds; count_GROUP: prompts
    seeds: list | None = None  # with more than one seed
    faithfulness_per_seed: dict | None = None  # seed (str) -> per group
    fid: dict | None = None  # value, images, mode; or value None and why skipped
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nll(self) -> float | None:
        return (self.validation or {}).get("nll")

    @property
    def fid_value(self) -> float | None:
        return (self.fid or {}).get("value")

    @property
    def sampling_seeds(self) -> list:
        return self.seeds or [self.seed]

    def faithful(self, group: str) -> float | None:
        return _share(self.faithfulness, group)
