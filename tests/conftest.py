"""Shared fixtures: tiny configs that train in seconds on a CPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lgvq.tokenizers.quantizers.config import quantizer_dict

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]

TINY_TOKENIZER = {
    "name": "tiny",
    "data": {"source": "shapes", "image_size": 32, "num_train": 64, "num_val": 16},
    "model": {"ch": 16, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [], "z_channels": 16,
              "embed_dim": 16, "norm_groups": 8,
              "quantizer": {"codebook_size": 64, "codebook_dim": 4, "l2_norm": True, "usage_window": 4,
                            "dead_code_restart": True, "restart_every": 2}},
    "loss": {"rec_loss": "l1", "disc_weight": 0.8, "disc_start": 2, "disc_ndf": 8, "disc_layers": 2},
    "train": {"max_steps": 6, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2, "log_every": 2,
              "sample_every": 3, "checkpoint_every": 2, "keep_checkpoints": 2, "num_threads": 1},
}


def write_config(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A tiny tokenizer config whose run directory lives under tmp_path."""
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_TOKENIZER.items()}
    data["train"]["output_dir"] = str(tmp_path / "run")
    return write_config(tmp_path / "tiny.yaml", data)


@pytest.fixture(autouse=True)
def fresh_accelerate_state():
    """accelerate keeps one AcceleratorState per process; tests build several Trainers."""
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


TINY_TOKENIZER_MODEL = dict(resolution=32, ch=16, ch_mult=(1, 2, 2, 2), num_res_blocks=1, attn_resolutions=(),
                            z_channels=16, embed_dim=16, norm_groups=8,
                            quantizer_config=quantizer_dict(codebook_size=64, codebook_dim=4, l2_norm=True))
# (4 x 4 = 16 tokens per image)

SHAPES_DATA = {"source": "shapes", "image_size": 32, "num_train": 48, "num_val": 12}


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A saved (untrained, randomly initialised) tokenizer: stage two only needs its encode/decode."""
    import torch

    from lgvq.tokenizers.model import VQTokenizer

    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("tokenizer") / "model"
    VQTokenizer(**TINY_TOKENIZER_MODEL).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_store(tiny_tokenizer_dir, tmp_path_factory) -> Path:
    """A code store of tiny shapes data (train + validation), with MiniLM caption features."""
    from lgvq.cli import main

    out = tmp_path_factory.mktemp("store") / "codes"
    overrides = [f"data.{k}={v}" for k, v in SHAPES_DATA.items()]
    assert main(["encode", "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out), "--data", "shapes",
                 "--batch-size", "16", *overrides]) == 0
    return out


TINY_PRIOR = {
    "model": {"dim": 32, "depth": 2, "heads": 2, "ff_mult": 2},
    "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "log_every": 2,
              "checkpoint_every": 2, "num_threads": 1},
    "sample": {"batch_size": 8},
}


def tiny_prior_config(tmp_path: Path, store: Path, conditioning: str = "text", name: str = "prior") -> Path:
    data = {k: dict(v) for k, v in TINY_PRIOR.items()}
    data["store"] = str(store)
    data["model"]["conditioning"] = conditioning
    data["train"]["output_dir"] = str(tmp_path / name)
    return write_config(tmp_path / f"{name}.yaml", data)


TINY_HEAD = {
    "model": {"dim": 32, "depth": 1, "heads": 2, "code_encoder_depth": 1, "max_length": 24},
    "train": {"max_steps": 4, "batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "log_every": 2,
              "checkpoint_every": 2, "num_threads": 1},
}


def tiny_head_config(tmp_path: Path, store: Path, name: str = "head") -> Path:
    data = {k: dict(v) for k, v in TINY_HEAD.items()}
    data["store"] = str(store)
    data["train"]["output_dir"] = str(tmp_path / name)
    return write_config(tmp_path / f"{name}.yaml", data)
