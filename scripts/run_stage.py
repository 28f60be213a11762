"""Run one pipeline stage's command and add its wall time and peak memory to the run's records.

    python scripts/run_stage.py RUN NAME COMMAND...        (what scripts/run_pipeline.sh calls)

RUN/timings.json gets the stage's seconds (an interrupted attempt's seconds count too, so a
resumed stage shows all the time it took) and RUN/peak_memory.json the peak resident memory of
its largest process in MiB (the larger of the attempts). Exits with the command's status.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def _update(path: Path, name: str, value: float, combine) -> None:
    records = json.loads(path.read_text()) if path.is_file() else {}
    records[name] = combine(records[name], value) if name in records else value
    path.write_text(json.dumps(records, indent=2))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: run_stage.py RUN NAME COMMAND...", file=sys.stderr)
        return 2
    run, name, command = Path(argv[0]), argv[1], argv[2:]
    start = time.monotonic()
    child = subprocess.Popen(command)
    try:
        status = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too; let it stop, then record the attempt
        status = child.wait()
    seconds = round(time.monotonic() - start)
    # ru_maxrss of the waited-for children: the largest one's peak, KiB on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = round(peak / (2**20 if sys.platform == "darwin" else 2**10))
    _update(run / "timings.json", name, seconds, lambda a, b: a + b)
    _update(run / "peak_memory.json", name, peak_mb, max)
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
