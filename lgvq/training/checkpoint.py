"""Checkpoint folders: atomic writes, rotation, and finding the one to resume.

    RUN/checkpoints/step-0000500/   accelerate `save_state` (safetensors models, optimizer,
                                     scheduler, RNG) + trainer_state.json (+ ema.safetensors)

A checkpoint is written to `.tmp-step-*` and renamed into place only when complete, so a run
killed mid-save leaves the previous checkpoint intact and no half-written one to resume from.
A checkpoint damaged later (a truncated file, a lost RNG state) is found by `damage` before a
resume, and `latest` falls back to the newest intact one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import torch
from accelerate.utils import load as accelerate_load
from safetensors import SafetensorError
from safetensors.torch import load_file

from lgvq.errors import InputFileError

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def damage(folder: Path, num_processes: int = 1, check_finite: bool = False) -> str | None:
    """What is wrong with a checkpoint folder, or None when every file reads back whole: the
    trainer state, each safetensors file (non-finite values too, with `check_finite`), the
    optimizer / scheduler / scaler files and every process's RNG state (a resume without it would
    silently lose the bitwise-equal continuation)."""
    try:
        read_state(folder)
    except (OSError, ValueError) as e:
        return f"{STATE_FILE} unreadable ({e})"
    for i in range(num_processes):
        if not (folder / f"random_states_{i}.pkl").is_file():
            return f"random_states_{i}.pkl is missing"
    for f in sorted(folder.iterdir()):
        try:
            if f.suffix == ".safetensors":
                tensors = load_file(f)
                if check_finite and not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
                    return f"{f.name} holds non-finite weights"
            elif f.suffix in (".bin", ".pkl"):
                accelerate_load(f, map_location="cpu")  # weights_only, as accelerate loads them
        except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as e:
            return f"{f.name} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'truncated'})"
        except Exception as e:  # pickle errors of a truncated RNG file come in many types
            return f"{f.name} is damaged ({type(e).__name__})"
    return None


def newest_intact(root: Path, num_processes: int = 1, check_finite: bool = False) -> Path | None:
    """The newest checkpoint that reads back whole (see `damage`), warning about each newer one skipped."""
    for path in reversed(checkpoint_dirs(root)):
        problem = damage(path, num_processes, check_finite)
        if problem is None:
            return path
        log.warning("checkpoint %s skipped: %s", path, problem)
    return None


def resolve_resume(root: Path, resume: str | None, num_processes: int = 1) -> Path | None:
    """`latest` -> newest intact checkpoint (None if there is none at all); a path -> that folder,
    which must be intact. Damaged checkpoints are never resumed from."""
    if not resume:
        return None
    if resume == "latest":
        found = checkpoint_dirs(root)
        if not found:
            return None
        path = newest_intact(root, num_processes)
        if path is None:
            raise InputFileError(f"every checkpoint in {root} is damaged (see the warnings above); "
                                 f"delete {root} to start the run again from step 0")
        if path != found[-1]:
            log.warning("resuming from %s, the newest intact checkpoint", path.name)
        return path
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise InputFileError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}); "
                             f"checkpoints of this run: {[p.name for p in checkpoint_dirs(root)] or 'none'}")
    problem = damage(path, num_processes)
    if problem:
        raise InputFileError(f"--resume {resume}: {problem}; resume from another checkpoint "
                             f"({[p.name for p in checkpoint_dirs(root)]}) or with --resume latest")
    return path


def temporary_dir(root: Path, step: int) -> Path:
    return root / f".tmp-step-{step:07d}"


def final_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def write_state(folder: Path, state: dict) -> None:
    (folder / STATE_FILE).write_text(json.dumps(state, indent=2))


def read_state(folder: Path) -> dict:
    return json.loads((folder / STATE_FILE).read_text())


def commit(tmp: Path, final: Path) -> None:
    """Make a fully written checkpoint visible (atomic rename on one filesystem)."""
    for f in tmp.iterdir():  # flush file contents before the rename makes them official
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def prune(root: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints, and stale temporary folders."""
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    if keep > 0:
        for old in checkpoint_dirs(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
