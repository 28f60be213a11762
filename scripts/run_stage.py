"""Run one pipeline stage's command and add its wall time and peak memory to the run's records.

    python scripts/run_stage.py RUN NAME COMMAND...        (what scripts/run_pipeline.sh calls)

RUN/commands.json gets the stage's command line (what the report shows as "what was run"),
RUN/timings.json the stage's seconds and RUN/peak_memory.json the peak resident memory of
its largest process in MiB (the larger of the attempts). Every attempt's seconds count, so a
resumed stage shows all the time it took: a failed or interrupted (Ctrl-C) attempt is recorded when
it ends, and one killed together with this script (SIGKILL, power loss) through the heartbeat file
RUN/.stages/NAME.running, which holds the seconds so far and is added to the total on the next
attempt (such an attempt's peak memory is lost with it). Exits with the command's status.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

HEARTBEAT_SECONDS = 2


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _update(path: Path, name: str, value, combine) -> None:
    """Read-modify-write one record under a lock: stages side by side update the same files."""
    with open(path.parent / ".stages" / "records.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[name] = combine(records[name], value) if name in records else value
        _write_atomically(path, json.dumps(records, indent=2))


def _add(a: float, b: float) -> float:
    return a + b


def _heartbeat(path: Path, start: float, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        _write_atomically(path, str(round(time.monotonic() - start)))


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: run_stage.py RUN NAME COMMAND...", file=sys.stderr)
        return 2
    run, name, command = Path(argv[0]), argv[1], argv[2:]
    running = run / ".stages" / f"{name}.running"
    running.parent.mkdir(parents=True, exist_ok=True)
    if running.is_file():  # left by an attempt that was killed with this script
        _update(run / "timings.json", name, int(running.read_text()), _add)
        running.unlink()
    _update(run / "commands.json", name, shlex.join(command), lambda old, new: new)
    start = time.monotonic()
    child = subprocess.Popen(command)
    stop = threading.Event()
    heartbeat = threading.Thread(target=_heartbeat, args=(running, start, stop), daemon=True)
    heartbeat.start()
    try:
        status = child.wait()
    except KeyboardInterrupt:  # Ctrl-C reaches the child too; let it stop, then record the attempt
        status = child.wait()
    stop.set()
    heartbeat.join()  # no heartbeat may land after the attempt is recorded
    seconds = round(time.monotonic() - start)
    # ru_maxrss of the waited-for children: the largest one's peak, KiB on Linux (bytes on macOS)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    peak_mb = round(peak / (2**20 if sys.platform == "darwin" else 2**10))
    _update(run / "timings.json", name, seconds, _add)
    _update(run / "peak_memory.json", name, peak_mb, max)
    running.unlink(missing_ok=True)
    return status if status >= 0 else 128 - status  # killed by signal N: 128 + N, as a shell says


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
