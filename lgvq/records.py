"""The project's small JSON files as typed records: what a code store's store.json holds.

    manifest = StoreManifest.from_json(json.loads(path.read_text()))
    manifest.seq_len, manifest.text.width if manifest.text else None
    path.write_text(json.dumps(manifest.to_json()))

Readers use the fields; the JSON layout stays what it was, so stores written before load as they are.
Keys a newer writer adds are kept aside (`extra`) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class StoreText:
    """The frozen caption features a store holds."""

    encoder: str
    max_length: int
    pooling: str
    width: int  # feature width
    length: int  # the longest caption's tokens


@dataclass
class StoreManifest:
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
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("extra", "text")}
        out["text"] = asdict(self.text) if self.text is not None else None
        return out | self.extra

    @classmethod
    def from_json(cls, data: dict) -> StoreManifest:
        known = {f.name for f in fields(cls)} - {"extra"}
        values = {k: v for k, v in data.items() if k in known}
        text = values.pop("text", None)
        return cls(**values, text=StoreText(**text) if text else None,
                   extra={k: v for k, v in data.items() if k not in known})
