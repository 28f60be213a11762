"""Third-party output a user cannot act on, silenced where it comes from (never globally):
x-transformers' import-time `torch.jit.script` deprecation warning and transformers' per-load
"Loading weights" bar. `LGVQ_VERBOSE=1` (or `lgvq --verbose`) shows all of it again.

    with quiet_warnings(FutureWarning, r"`torch.jit.script` is deprecated"):
        from x_transformers import Decoder
    with no_library_progress():
        model = AutoModel.from_pretrained(path)
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator


def verbose() -> bool:
    return os.environ.get("LGVQ_VERBOSE", "") not in ("", "0")


@contextlib.contextmanager
def quiet_warnings(category: type[Warning], message: str) -> Iterator[None]:
    """Ignore warnings of `category` whose text matches the regex `message` inside the block."""
    with warnings.catch_warnings():
        if not verbose():
            warnings.filterwarnings("ignore", message=message, category=category)
        yield


@contextlib.contextmanager
def no_library_progress() -> Iterator[None]:
    """No transformers progress bars inside the block (a sub-second weight load draws one)."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    if not verbose():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()
