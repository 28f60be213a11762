"""Save/load conventions shared by every lgvq model.

Models are diffusers `ModelMixin` + `ConfigMixin`: `save_pretrained(dir)` writes `config.json`
and safetensors weights, `from_pretrained(dir)` reads them back and never unpickles anything.
`LgvqModelMixin.from_pretrained` first checks that the folder holds the model kind asked for.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import ModelMixin

from lgvq.errors import InputFileError, WrongModelKindError


def saved_class_name(path: str | Path) -> str | None:
    config = Path(path) / "config.json"
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except json.JSONDecodeError as e:
        raise ValueError(f"{config} is not valid JSON: {e}") from e


class LgvqModelMixin(ModelMixin):
    """Adds a kind check to diffusers' loading. `model_kind` is a human name for messages."""

    model_kind = "model"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = Path(pretrained_model_name_or_path)
        if path.exists():
            if not (path / "config.json").is_file():
                raise InputFileError(f"{path} holds no config.json: it is not a saved lgvq model folder "
                                        f"(expected config.json + *.safetensors written by save_pretrained)")
            found = saved_class_name(path)
            if found != cls.__name__:
                raise WrongModelKindError(
                    f"{path} holds a {found or 'model of unknown kind'}, not a {cls.model_kind} ({cls.__name__}); "
                    f"pass a folder saved by {cls.__name__}.save_pretrained")
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
