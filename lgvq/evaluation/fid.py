"""FID through clean-fid, with the Inception weights taken from a local file.

clean-fid downloads `inception-2015-12-05.pt` at run time into a hard-coded folder (/tmp on
Linux). Offline, `load_inception` looks for it at `path` (a file or a folder) or in that folder,
and otherwise raises `MissingWeightsError` saying where to put it. Any feature network with the
same call convention (float (B, 3, 299, 299) in [0, 255] -> (B, D)) can stand in, which is how
the tests run clean-fid's feature path without the download.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from lgvq.tokenizers.lpips import MissingWeightsError

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = f"https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/{INCEPTION_FILE}"
CLEANFID_DEFAULT_DIR = Path(tempfile.gettempdir())


def find_inception(path: str | os.PathLike | None = None) -> Path:
    candidates = []
    if path:
        p = Path(path)
        candidates.append(p / INCEPTION_FILE if p.is_dir() else p)
    candidates.append(CLEANFID_DEFAULT_DIR / INCEPTION_FILE)
    for c in candidates:
        if c.is_file():
            return c
    raise MissingWeightsError(
        f"FID needs clean-fid's Inception weights, file {INCEPTION_FILE}, not found at "
        f"{', '.join(str(c) for c in candidates)}. Download {INCEPTION_URL} and pass its folder with "
        f"--inception-path DIR (or put it in {CLEANFID_DEFAULT_DIR}).")


def load_inception(path: str | os.PathLike | None, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """clean-fid's InceptionV3W feature extractor (2048-d pool features) from a local file."""
    from cleanfid.inception_torchscript import InceptionV3W

    file = find_inception(path)
    model = InceptionV3W(str(file.parent), download=False, resize_inside=False).to(device).eval()
    return model


def folder_features(folder: str | Path, feature_model: Callable, device: torch.device,
                    batch_size: int = 64) -> np.ndarray:
    """clean-fid's 'clean' feature path: PIL bicubic resize to 299, then the feature network."""
    from cleanfid import fid

    return fid.get_folder_features(str(folder), model=feature_model, num_workers=0, batch_size=batch_size,
                                   device=device, mode="clean", verbose=False)


def fid_between_folders(folder_a: str | Path, folder_b: str | Path, feature_model: Callable,
                        device: torch.device, batch_size: int = 64) -> float:
    from cleanfid import fid

    fa = folder_features(folder_a, feature_model, device, batch_size)
    fb = folder_features(folder_b, feature_model, device, batch_size)
    return float(fid.fid_from_feats(fa, fb))
