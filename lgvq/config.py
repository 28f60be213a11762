"""Typed configs: dataclass schemas, filled from YAML files and dotted command-line overrides.

    cfg = load_config(TokenizerRunConfig, "configs/tokenizer/vqgan_shapes.yaml", ["train.max_steps=200"])

An unknown key or a value of the wrong type raises `ConfigError` naming the key and, for unknown
keys, the closest valid names. OmegaConf does the merging and type conversion; the checks here
only make its errors readable.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from lgvq.errors import ConfigError

T = TypeVar("T")

# A field's allowed range, checked when the config loads (`limits` of a config class):
# ">= 1", "> 0", "[0, 1]", "[0, 1)", "(0, 1]"; "each >= 1" applies to every item of a list.


def within(value: float, rule: str) -> bool:
    if rule.startswith(">="):
        return value >= float(rule[2:])
    if rule.startswith(">"):
        return value > float(rule[1:])
    low, high = (float(x) for x in rule[1:-1].split(","))
    above = value >= low if rule[0] == "[" else value > low
    below = value <= high if rule[-1] == "]" else value < high
    return above and below


def check_limits(cfg: Any, prefix: str = "") -> None:
    """Raise ConfigError for the first value outside its field's range, naming the key and range."""
    limits = getattr(type(cfg), "limits", {})
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_limits(value, f"{prefix}{f.name}.")
            continue
        rule = limits.get(f.name)
        if rule is None or value is None:
            continue
        each = rule.startswith("each ")
        items = value if each else [value]
        if not all(within(v, rule.removeprefix("each ")) for v in items):
            raise ConfigError(f"config key '{prefix}{f.name}' must be {rule} (got {value!r})")


@dataclass
class DataConfig:
    """Where images and captions come from and how they are prepared."""

    limits: ClassVar[dict[str, str]] = {
        "image_size": ">= 8", "num_train": ">= 1", "num_val": ">= 0", "two_object_fraction": "[0, 1]",
        "shuffle_buffer": ">= 1", "resize": ">= 1", "num_workers": ">= 0"}

    source: Literal["shapes", "folder", "hub"] = "shapes"
    path: str | None = None  # folder path (source=folder) or hub dataset id (source=hub)
    image_size: int = 64
    # shapes only
    num_train: int = 20000
    num_val: int = 500
    seed: int = 0
    two_object_fraction: float = 0.5
    # folder / hub
    train_split: str = "train"
    val_split: str = "validation"
    image_column: str = "image"
    caption_column: str = "auto"  # auto: `captions` (a list), then `text`
    label_column: str | None = None  # auto-detects `label` when None
    streaming: bool = False
    shuffle_buffer: int = 1000  # streaming shuffle buffer
    # preprocessing
    resize: int | None = None  # shorter side before the crop; None = image_size
    crop: Literal["center", "random", "none"] = "center"
    flip: bool = False  # horizontal flips; note they swap left/right in relation captions
    strict: bool = False  # an unreadable image is an error instead of being skipped and counted
    num_workers: int = 0
    # images any of whose captions holds one of these words are left out (whole words, any case):
    # a colour or class held out for a fine-tuning experiment, e.g. [purple]
    exclude_words: list[str] = field(default_factory=list)


@dataclass
class TrainConfig:
    """The shared training loop (lgvq.training.Trainer)."""

    limits: ClassVar[dict[str, str]] = {
        "max_steps": ">= 1", "batch_size": ">= 1", "grad_accum": ">= 1", "lr": "> 0", "betas": "each [0, 1)",
        "weight_decay": ">= 0", "warmup_steps": ">= 0", "min_lr_ratio": "[0, 1]", "grad_clip": ">= 0",
        "ema_decay": "[0, 1)", "log_every": ">= 1", "sample_every": ">= 0", "checkpoint_every": ">= 1",
        "keep_checkpoints": ">= 1", "num_threads": ">= 0", "muon_lr": "> 0"}

    output_dir: str = "runs/tokenizer"
    max_steps: int = 2000
    batch_size: int = 16  # per process
    grad_accum: int = 1
    lr: float = 2e-4
    betas: list[float] = field(default_factory=lambda: [0.5, 0.9])
    weight_decay: float = 0.0
    warmup_steps: int = 100
    schedule: Literal["cosine", "linear", "constant"] = "cosine"  # after warmup_steps, down to min_lr_ratio
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0  # 0 disables
    mixed_precision: Literal["no", "fp16", "bf16", "auto"] = "no"  # auto: bf16 where the device computes it natively
    ema_decay: float = 0.0  # 0 disables EMA weights
    seed: int = 0
    log_every: int = 10
    sample_every: int = 500  # reconstruction grid PNGs; 0 disables
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    num_threads: int = 0  # torch CPU threads per process; 0 = torch's default
    compile: bool = False  # torch.compile the trained modules' forward (pays off on GPUs; docs/results.md)
    # muon: the weight matrices of a prior's or a tokenizer's hidden layers take Muon, the rest Adam
    # (lgvq/training/optim.py)
    optimizer: Literal["adam", "muon"] = "adam"
    muon_lr: float | None = None  # Muon's peak learning rate; None: train.lr


def _schema_keys(schema: type) -> dict[str, Any]:
    return {f.name: f for f in dataclasses.fields(schema)}


def _nested_schema(f: dataclasses.Field) -> type | None:
    t = f.type
    if isinstance(t, str):  # postponed annotations: resolve through the default factory
        if f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            return type(value) if dataclasses.is_dataclass(value) else None
        return None
    return t if dataclasses.is_dataclass(t) else None


def _choices(schema: type, name: str) -> tuple | None:
    """The allowed values of a `Literal[...]` field, else None."""
    hint = typing.get_type_hints(schema).get(name)
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else None


def check_keys(schema: type, values: dict, prefix: str = "") -> None:
    """Raise ConfigError for any key of `values` that `schema` does not define, and for a value
    outside a field's `Literal` choices; both name the closest valid names."""
    fields = _schema_keys(schema)
    for key, value in values.items():
        full = f"{prefix}{key}"
        if key not in fields:
            # one level down too: model.codebook_size -> model.quantizer.codebook_size
            names = list(fields) + [f"{k}.{sub}" for k, f in fields.items() if (n := _nested_schema(f))
                                    for sub in _schema_keys(n)]
            close = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            close = close or [n for n in names if n.rsplit(".", 1)[-1] == key]
            hint = f"; did you mean {', '.join(prefix + c for c in close)}?" if close else ""
            valid = ", ".join(prefix + k for k in fields)
            raise ConfigError(f"unknown config key '{full}'{hint} Valid keys here: {valid}")
        choices = _choices(schema, key)
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"config key '{full}' is {value!r}{hint} It must be one of: "
                              f"{', '.join(map(str, choices))}")
        nested = _nested_schema(fields[key])
        if nested is not None and isinstance(value, dict):
            check_keys(nested, value, prefix=f"{full}.")


def _dotlist_to_dict(overrides: list[str]) -> dict:
    out: dict = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.max_steps=200)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else None
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def load_config(schema: type[T], path: str | Path | list[str | Path] | None = None,
                overrides: list[str] | None = None, base: dict | None = None) -> T:
    """Build a `schema` instance from defaults, then `base`, then the YAML file(s) in order, then
    `key=value` overrides (each later layer wins)."""
    layers: list[tuple[str, dict]] = [("base config", base)] if base else []
    paths = [] if path is None else ([path] if isinstance(path, (str, Path)) else list(path))
    for p in map(Path, paths):
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"config file {p} must hold a mapping of sections, not {type(data).__name__}")
        layers.append((str(p), data))
    if overrides:
        layers.append(("command line", _dotlist_to_dict(overrides)))
    upgrade = getattr(schema, "upgrade_legacy", None)  # a schema that renamed keys reads the old names
    merged = OmegaConf.structured(schema)
    for origin, data in layers:
        if upgrade is not None:
            data = upgrade(data)
        try:
            check_keys(schema, data)
        except ConfigError as e:
            raise ConfigError(f"{origin}: {e}") from None
        try:
            merged = OmegaConf.merge(merged, OmegaConf.create(data))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or "?"
            msg = str(e).split("\n")[0]
            raise ConfigError(f"{origin}: bad value for config key '{key}': {msg}") from None
    cfg = OmegaConf.to_object(merged)
    check_limits(cfg)
    return cfg


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config, so the run can be repeated with `--config path`."""
    Path(path).write_text(to_yaml(cfg))
