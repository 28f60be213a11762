"""The demo page's caps, which keep a shared machine serving (here, apart from lgvq.demo, so that
`lgvq demo --help` can state them without importing Gradio)."""

from __future__ import annotations

import os

MAX_IMAGES = 16  # images (or completions) one request may ask for
MAX_PIXELS = 4096 * 4096  # an uploaded image larger than this is refused before it is decoded
MAX_UPLOAD = "10mb"  # largest uploaded file
MAX_QUEUE = 64  # requests waiting at once; more are turned away with a message


def default_concurrency() -> int:
    """Requests that run the models at once: each already uses every core through torch's own
    threads, so more at a time mostly adds memory; one per 8 cores, at most 4."""
    return max(1, min(4, (os.cpu_count() or 1) // 8))
