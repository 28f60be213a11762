"""Which data an evaluation or encoding reads: a run's own, or another source named by the user."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from lgvq.config import DataConfig, load_config
from lgvq.errors import UsageError
from lgvq.runs import RunDir
from lgvq.tokenizers.config import TokenizerRunConfig


def source_config(data: str, image_size: int | None = None) -> DataConfig:
    """`shapes`, an imagefolder path or a hub dataset id -> its DataConfig."""
    cfg = DataConfig() if image_size is None else DataConfig(image_size=image_size)
    if data != "shapes":
        cfg.source, cfg.path = ("folder" if Path(data).is_dir() else "hub"), data
    return cfg


def data_config_for(data: str | None, model_dir: str | Path, overrides: Sequence[str] = ()) -> DataConfig:
    """The data to evaluate or encode with a tokenizer: the run's own (RUN/config.yaml beside
    RUN/model) unless `data` names another source; then `data.key=value` overrides."""
    run = RunDir.of(model_dir)
    base = load_config(TokenizerRunConfig, run.config).data if run.config.is_file() else DataConfig()
    if data is not None:
        base = source_config(data, base.image_size)
    return apply_data_overrides(base, overrides)


def apply_data_overrides(base: DataConfig, overrides: Sequence[str]) -> DataConfig:
    bad = [o for o in overrides if not o.startswith("data.")]
    if bad:
        raise UsageError(f"only data.* overrides apply here, not {bad}")
    return load_config(DataConfig, None, [o[len("data."):] for o in overrides], base=asdict(base))
