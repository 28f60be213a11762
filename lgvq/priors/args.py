"""What a prior is built from, as one object (in the manner of LlamaGen's ModelArgs): its
architecture, chosen by the user, and what the code store decides about its data.

    args = PriorArgs(PriorData(vocab_size=1024, seq_len=144, conditioning="text", text_width=384,
                               text_length=24), sized("small", qk_norm=True))
    prior = PriorTransformer(args)

A saved prior's config.json holds both halves as one flat dict (`to_config` / `from_config`), so
priors saved before this object existed load unchanged.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar, Literal

from lgvq.errors import ConfigError


@dataclass
class PriorArchitecture:
    """The GPT (x-transformers Decoder) and how it reads its condition."""

    limits: ClassVar[dict[str, str]] = {
        "dim": ">= 1", "depth": ">= 1", "heads": ">= 1", "dim_head": ">= 1", "ff_mult": ">= 1", "dropout": "[0, 1)",
        "cond_dropout": "[0, 1]", "text_layers": ">= 0", "group_size": ">= 1", "prompt_word_rows": ">= 0"}

    dim: int = 256
    depth: int = 4
    heads: int = 4
    # width of each attention head (x-transformers' default 64, whatever `dim`): the attention is
    # heads x dim_head wide inside, 4x a 64-wide prior's own at 4 heads. dim // heads makes steps
    # cheaper, but the quick prior then bound two objects less often at equal time (docs/results.md)
    dim_head: int = 64
    ff_mult: int = 4
    dropout: float = 0.0
    cond_dropout: float = 0.1  # probability of the null condition while training (for guidance)
    text_layers: int = 0  # text priors: bidirectional transformer layers over the prompt before the prefix
    grid_positions: bool = False  # learned row / column embeddings of each token's grid cell (beside rotary)
    # codes per prior position along each axis: 2 reads and predicts each 2 x 2 block of the token grid
    # at one position (a quarter of the sequence), the block's codes one after another by a small head
    group_size: int = 1
    # l2-normalised queries and keys with a learned per-dimension scale (x-transformers' qk_norm with
    # qk_norm_dim_scale), in the decoder and the prompt layers: bounded attention logits, which
    # tolerate a higher learning rate
    qk_norm: bool = False
    # text priors: learned embeddings of the prompt's word pieces (the text encoder's token ids, hashed
    # into this many rows), added to the projected frozen features, so that what a word means for the
    # drawing can be learned directly beside the encoder's contextual features; 0: none
    prompt_word_rows: int = 0
    # the tokenizer's code vectors read beside each code's learned input and output rows, so that codes
    # that draw alike start out alike (lgvq/priors/code_features.py); the store's tokenizer gives them
    code_features: bool = False


# named sizes (width, layers, heads); `small` is the default architecture
SIZES: dict[str, dict[str, int]] = {
    "tiny": {"dim": 128, "depth": 4, "heads": 4},
    "small": {"dim": 256, "depth": 4, "heads": 4},
    "base": {"dim": 512, "depth": 8, "heads": 8},
    "large": {"dim": 768, "depth": 12, "heads": 12},
}
SizeName = Literal["tiny", "small", "base", "large"]


def sized(name: str, **changes) -> PriorArchitecture:
    """The architecture of a named size, with `changes` to its other fields."""
    if name not in SIZES:
        raise ConfigError(f"prior size must be one of {', '.join(SIZES)}, not {name!r}")
    return PriorArchitecture(**SIZES[name] | changes)


@dataclass
class PriorData:
    """What the code store decides: the token layout, the classes or the caption features."""

    vocab_size: int = 1024
    seq_len: int = 256  # tokens per image (grid cells x tokens per cell)
    token_shape: tuple = (16, 16)
    tokens_per_position: int = 1  # VQCT: k adjective ids + 1 noun id per grid cell
    conditioning: Literal["none", "class", "text"] = "none"
    num_classes: int = 0
    class_names: list | None = None
    trained_classes: list | None = None  # the class ids its training data held (None: all)
    text_width: int = 0  # the frozen text encoder's feature width
    text_length: int = 0  # caption tokens in the prefix
    text_encoder: str | None = None
    text_pooling: str = "auto"
    trained_words: list | None = None  # the words of its training captions (None: not recorded)
    code_width: int = 0  # the tokenizer's code-vector width, where the prior reads them (code_features)

    def check(self) -> None:
        if self.conditioning not in ("none", "class", "text"):
            raise ConfigError(f"conditioning must be one of none, class, text, not {self.conditioning!r}")
        if self.conditioning == "class" and self.num_classes < 1:
            raise ConfigError("a class-conditional prior needs num_classes >= 1")
        if self.conditioning == "text" and (self.text_width < 1 or self.text_length < 1):
            raise ConfigError("a text-conditional prior needs text_width and text_length")


@dataclass
class PriorArgs:
    data: PriorData = field(default_factory=PriorData)
    architecture: PriorArchitecture = field(default_factory=PriorArchitecture)

    def to_config(self) -> dict:
        """The flat dict a saved prior's config.json holds."""
        return asdict(self.data) | asdict(self.architecture)

    @classmethod
    def from_config(cls, config: dict) -> PriorArgs:
        """From a flat dict (config.json, or keyword arguments); unknown keys are refused."""
        data_keys = {f.name for f in fields(PriorData)}
        arch_keys = {f.name for f in fields(PriorArchitecture)}
        unknown = sorted(set(config) - data_keys - arch_keys)
        if unknown:
            raise ConfigError(f"unknown prior argument(s) {', '.join(unknown)}; known: "
                              f"{', '.join(sorted(data_keys | arch_keys))}")
        data = PriorData(**{k: v for k, v in config.items() if k in data_keys})
        data = replace(data, token_shape=tuple(data.token_shape))
        return cls(data, PriorArchitecture(**{k: v for k, v in config.items() if k in arch_keys}))


def prior_args(**flat) -> PriorArgs:
    """PriorArgs from flat keyword arguments, e.g. prior_args(vocab_size=64, seq_len=16, dim=32)."""
    return PriorArgs.from_config(flat)
