"""EMA weights (diffusers' `EMAModel`), saved as safetensors rather than a pickle.

`diffusers.training_utils` is imported only when a run keeps an EMA: it loads diffusers' UNets
and more, about 1.4 s of every training process's start (docs/results.md, "The quick preset").
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file
from torch import nn

if TYPE_CHECKING:
    from diffusers.training_utils import EMAModel


def build_ema(model: nn.Module, decay: float) -> EMAModel:
    from diffusers.training_utils import EMAModel

    return EMAModel(model.parameters(), decay=decay, use_ema_warmup=False, update_after_step=0)


def save_ema(ema: EMAModel, folder: Path) -> None:
    state = ema.state_dict()
    shadow = state.pop("shadow_params")
    save_file({f"shadow.{i}": t.detach().contiguous().cpu() for i, t in enumerate(shadow)},
              str(folder / "ema.safetensors"))
    (folder / "ema.json").write_text(json.dumps(state))


def load_ema(ema: EMAModel, folder: Path) -> None:
    state = json.loads((folder / "ema.json").read_text())
    tensors = load_file(str(folder / "ema.safetensors"))
    state["shadow_params"] = [tensors[f"shadow.{i}"] for i in range(len(tensors))]
    ema.load_state_dict(state)
