"""Checkpoint folders: atomic writes, rotation, and finding the one to resume.

    RUN/checkpoints/step-0000500/   accelerate `save_state` (safetensors models, optimizer,
                                     scheduler, RNG) + trainer_state.json (+ ema.safetensors)

A checkpoint is written to `.tmp-step-*` and renamed into place only when complete, so a run
killed mid-save leaves the previous checkpoint intact and no half-written one to resume from.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from lgvq.errors import InputFileError

STEP_DIR = re.compile(r"^step-(\d+)$")
STATE_FILE = "trainer_state.json"


def checkpoint_dirs(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_DIR.match(p.name)) and p.is_dir()
             and (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def resolve_resume(root: Path, resume: str | None) -> Path | None:
    """`latest` -> newest complete checkpoint (None if there is none); a path -> that folder."""
    if not resume:
        return None
    if resume == "latest":
        found = checkpoint_dirs(root)
        return found[-1] if found else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        raise InputFileError(f"--resume {resume}: not a complete checkpoint folder (no {STATE_FILE}); "
                                f"checkpoints of this run: {[p.name for p in checkpoint_dirs(root)] or 'none'}")
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
