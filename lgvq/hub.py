"""Save/load conventions shared by every lgvq model.

Models are diffusers `ModelMixin` + `ConfigMixin`: `save_pretrained(dir)` writes `config.json`
and safetensors weights, `from_pretrained(dir)` reads them back. `LgvqModelMixin.from_pretrained`
first checks that the folder exists, holds the model kind asked for and safetensors weights (a
folder with only .bin / .pt weights is refused: those would be unpickled), and turns a damaged
file into a message that names the folder.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffusers import ModelMixin

from lgvq.errors import InputFileError, LgvqError, WrongModelKindError
from lgvq.runs import MODEL_CONFIG


def saved_class_name(path: str | Path) -> str | None:
    config = Path(path) / MODEL_CONFIG
    if not config.is_file():
        return None
    try:
        return json.loads(config.read_text()).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InputFileError(f"{config} is not valid JSON ({e}); the model folder is damaged: train or copy it "
                             f"again") from e


class LgvqModelMixin(ModelMixin):
    """Adds checks to diffusers' loading: the folder exists, holds the model kind asked for, and
    holds safetensors weights, which are read without unpickling anything. `model_kind` is a human
    name for messages."""

    model_kind = "model"

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        path = Path(pretrained_model_name_or_path)
        if not path.exists():
            raise InputFileError(f"{path} does not exist; give a model folder written by save_pretrained "
                                 f"(a run's RUN/model, or the run folder itself)")
        if not (path / MODEL_CONFIG).is_file():
            raise InputFileError(f"{path} holds no config.json: it is not a saved lgvq model folder "
                                 f"(expected config.json + *.safetensors written by save_pretrained)")
        found = saved_class_name(path)
        if found != cls.__name__:
            raise WrongModelKindError(
                f"{path} holds a {found or 'model of unknown kind'}, not a {cls.model_kind} ({cls.__name__}); "
                f"pass a folder saved by {cls.__name__}.save_pretrained")
        weights = sorted(path.glob("*.safetensors"))
        if not weights:
            others = sorted(p.name for p in path.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt"))
            raise InputFileError(f"{path} holds no .safetensors weights{f' (only {others})' if others else ''}; "
                                 f"lgvq loads safetensors only, so that loading never unpickles a file")
        try:
            return super().from_pretrained(pretrained_model_name_or_path, *args, use_safetensors=True, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            if isinstance(e, LgvqError):
                raise
            raise InputFileError(f"cannot load the weights in {path} ({type(e).__name__}: {str(e).splitlines()[0]}); "
                                 f"the file is damaged or from another model: train or copy it again") from e
