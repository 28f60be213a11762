"""The project's small JSON files as typed records: a code store's store.json and the evaluations'
results (RUN/eval/tokenizer.json, alignment.json, prior.json, head.json), which the evaluation
functions of lgvq.api return.

    manifest = StoreManifest.from_json(json.loads(path.read_text()))
    manifest.seq_len, manifest.text.width if manifest.text else None
    path.write_text(json.dumps(manifest.to_json()))

Readers use the fields; the JSON layout stays what it was, so files written before load as they are.
Keys a record does not know (a newer writer's) are kept aside (`extra`) and written back unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

R = TypeVar("R", bound="Record")
NOT_SAVED = {"saved": False}  # field metadata: known to the record, not part of its JSON


def written_to() -> Any:
    """The field an evaluation's record has for the file it was written to (not saved in it)."""
    return field(default=None, metadata=NOT_SAVED)


class Record:
    """to_json / from_json for a dataclass with an `extra` field. `json_names` maps a field to its
    JSON key where the key is not a Python name ("CIDEr-D", "retrieval_r@1")."""

    json_names: ClassVar[dict[str, str]] = {}

    @classmethod
    def _saved(cls) -> dict[str, str]:
        """JSON key -> field name, for the fields the JSON holds."""
        return {cls.json_names.get(f.name, f.name): f.name for f in fields(cls)
                if f.name != "extra" and f.metadata.get("saved", True)}

    @classmethod
    def from_json(cls: type[R], data: dict) -> R:
        saved = cls._saved()
        return cls(**{saved[k]: v for k, v in data.items() if k in saved},
                   extra={k: v for k, v in data.items() if k not in saved})

    def to_json(self) -> dict:
        return {key: getattr(self, name) for key, name in self._saved().items()} | self.extra


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
    written_to: str | None = written_to()

    def faithful(self, group: str) -> float | None:
        return _share(self.reconstruction_faithfulness, group)


MASK_RECALL = "mask_recall@1/"


@dataclass
class AlignmentEvaluation(Record):
    """`lgvq evaluate-alignment`: image-to-text retrieval, masked-word recall from the image's own
    codes against another image's, and the code-word relation MSE."""

    json_names: ClassVar[dict[str, str]] = {"retrieval_r1": "retrieval_r@1", "retrieval_r5": "retrieval_r@5",
                                            "retrieval_chance_r1": "retrieval_chance_r@1"}
    num_images: int = 0
    retrieval_r1: float | None = None
    retrieval_r5: float | None = None
    retrieval_chance_r1: float | None = None
    # "maskK/own|swapped/all|content" -> recall@1 of K masked words (JSON: mask_recall@1/maskK/...)
    masked_word_recall: dict[str, float | None] = field(default_factory=dict)
    relation_mse: float | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    written_to: str | None = written_to()

    def masked_word(self, codes: str, words: int = 1, scope: str = "content") -> float | None:
        """Recall@1 of `words` masked words predicted from the image's own codes (`codes="own"`) or
        another image's ("swapped"), over content words or all words."""
        return self.masked_word_recall.get(f"mask{words}/{codes}/{scope}")

    @classmethod
    def from_json(cls, data: dict) -> AlignmentEvaluation:
        recall = {k[len(MASK_RECALL):]: v for k, v in data.items() if k.startswith(MASK_RECALL)}
        record = super().from_json({k: v for k, v in data.items() if not k.startswith(MASK_RECALL)})
        record.masked_word_recall = recall
        return record

    def to_json(self) -> dict:
        flat = super().to_json()
        return flat | {MASK_RECALL + k: v for k, v in flat.pop("masked_word_recall").items()}


@dataclass
class CaptioningEvaluation(Record):
    """`lgvq evaluate-head` on a captioning head: the COCO caption metrics on the validation split."""

    json_names: ClassVar[dict[str, str]] = {"bleu_1": "BLEU-1", "bleu_2": "BLEU-2", "bleu_3": "BLEU-3",
                                            "bleu_4": "BLEU-4", "meteor": "METEOR", "rouge_l": "ROUGE-L",
                                            "cider_d": "CIDEr-D"}
    bleu_1: float | None = None
    bleu_2: float | None = None
    bleu_3: float | None = None
    bleu_4: float | None = None
    meteor: float | None = None
    rouge_l: float | None = None
    cider_d: float | None = None
    beams: int | None = None
    images: int = 0
    examples: list = field(default_factory=list)  # the first ten: caption and references
    kind: str = "captioning"
    store: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    written_to: str | None = written_to()

    def scores(self) -> dict[str, float | None]:
        """Metric name ("BLEU-4", "CIDEr-D", ...) -> score."""
        return {key: getattr(self, name) for name, key in self.json_names.items()}


@dataclass
class VQAEvaluation(Record):
    """`lgvq evaluate-head` on a VQA head: accuracy overall and per question type (and WUPS)."""

    accuracy: float | None = None
    questions: int = 0
    per_type: dict[str, float] = field(default_factory=dict)
    kind: str = "vqa"
    store: str | None = None
    model: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    written_to: str | None = written_to()


def head_evaluation(data: dict) -> CaptioningEvaluation | VQAEvaluation:
    """A head's results, by the kind they say they are."""
    return (VQAEvaluation if data.get("kind") == "vqa" or "per_type" in data else CaptioningEvaluation).from_json(data)


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
    written_to: str | None = written_to()

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
