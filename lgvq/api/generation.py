"""Sampling and completing images with a trained prior: what `lgvq sample` and `lgvq complete` run.

    images, captions = sample_images("runs/prior", prompts=["a red circle"], num_images=4, seed=0)
    save_samples(images, "out/", captions)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from lgvq.devices import resolve_device
from lgvq.errors import UsageError
from lgvq.images import check_samples_folder
from lgvq.pipelines import load_pipeline
from lgvq.priors.model import Condition

WHAT_TO_GIVE = {"text": "a prompt", "class": "--class", "none": "--unconditional"}


def _check_request(kind: str, prompts, classes, unconditional: bool) -> None:
    """Exactly one kind of condition, and the one this prior was trained with."""
    chosen = [name for name, given in (("a prompt", prompts is not None), ("--class", classes is not None),
                                       ("--unconditional", unconditional)) if given]
    if len(chosen) != 1:
        raise UsageError("give exactly one of --prompt / --prompts-file, --class or --unconditional")
    if chosen[0] != WHAT_TO_GIVE[kind]:
        raise UsageError(f"this prior is {'unconditional' if kind == 'none' else kind + '-conditional'}: "
                         f"sample it with {WHAT_TO_GIVE[kind]}")


def sample_images(prior: str | Path, *, prompts: Sequence[str] | None = None, classes: Sequence[str] | None = None,
                  unconditional: bool = False, num_images: int = 4, seed: int | None = 0, device: str | None = None,
                  out: str | Path | None = None, overwrite: bool = False,
                  **sampling) -> tuple[list[Image.Image], list[str] | None]:
    """`num_images` per prompt (or class), in order, and the prompt (class) of each image.
    `sampling`: cfg_scale, temperature, top_k, top_p, batch_size, best_of, best_of_hard, hard_share,
    rerank_with (None keeps the run's default).
    `out`: the folder the images will be saved to, checked before sampling (`check_samples_folder`)."""
    pipe = load_pipeline(prior, device=resolve_device(device))
    kind = pipe.prior.config.conditioning
    _check_request(kind, prompts, classes, unconditional)
    wanted = list(prompts if kind == "text" else classes) if kind != "none" else []
    if kind == "text":
        pipe.check_prompts(wanted)
    elif kind == "class":
        pipe.class_ids(wanted)
    if out is not None:  # after the request is known to be valid, before the sampling
        check_samples_folder(out, overwrite)
    given = {k: v for k, v in sampling.items() if v is not None}
    if kind == "none":
        return pipe(num_images=num_images, seed=seed, **given), None
    images = pipe(wanted, num_images=num_images, seed=seed, **given)
    return images, [str(w) for w in wanted for _ in range(num_images)]


def complete_image(prior: str | Path, image: str | Path | Image.Image, *, keep_top: float = 0.5,
                   prompt: str | None = None, class_: str | None = None, num_images: int = 4, seed: int | None = 0,
                   device: str | None = None, out: str | Path | None = None, overwrite: bool = False,
                   **sampling) -> list[Image.Image]:
    """Keep the top `keep_top` of the image's token rows and sample the rest, `num_images` times,
    under the prompt (text priors) or class (class-conditional priors). `out`: as for `sample_images`."""
    pipe = load_pipeline(prior, device=resolve_device(device))
    kind = pipe.prior.config.conditioning
    cond = None
    if kind == "text":
        if not prompt:
            raise UsageError("this prior is text-conditional: give --prompt for the completion")
        cond = pipe.text_condition([prompt]).repeat(num_images)
    elif kind == "class":
        if class_ is None:
            raise UsageError("this prior is class-conditional: give --class for the completion")
        cond = Condition(labels=torch.tensor(pipe.class_ids(class_) * num_images))
    if out is not None:
        check_samples_folder(out, overwrite)
    given = {k: v for k, v in sampling.items() if v is not None}
    return pipe.complete(image, keep_top=keep_top, num_images=num_images, seed=seed, condition=cond, **given)
