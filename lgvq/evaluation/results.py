"""Writing an evaluation's results: JSON beside the run (RUN/eval/NAME.json)."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_results(results: dict, path: str | Path) -> Path:
    """Write `results` as indented JSON, atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(results, indent=2))
    os.replace(partial, path)
    return path
