"""Run one stage's command and add its wall time and peak memory to the pipeline folder's records.

PIPELINE/commands.json gets the stage's command line (the report's "what was run"),
PIPELINE/timings.json its seconds and PIPELINE/peak_memory.json the peak resident memory of its
largest process in MiB (the larger of the attempts). Every attempt's seconds count, so a resumed
stage shows all the time it took: a failed or interrupted (Ctrl-C) attempt is recorded when it
ends, and one killed together with the pipeline (SIGKILL, power loss) through the heartbeat file
.stages/NAME.running, which holds the seconds so far and is added to the total on the next attempt
(such an attempt's peak memory is lost with it). Stages side by side update the same files, under a
lock.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from lgvq.runs import PipelineDir

HEARTBEAT_SECONDS = 2


def _write_atomically(path: Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _update(folder: PipelineDir, path: Path, name: str, value, combine) -> None:
    """Read-modify-write one record under a lock."""
    with open(folder.stage_marks / "records.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        records = json.loads(path.read_text()) if path.is_file() else {}
        records[name] = combine(records[name], value) if name in records else value
        _write_atomically(path, json.dumps(records, indent=2))


def _add(a: float, b: float) -> float:
    return a + b


def _replace(old, new):
    return new


def _heartbeat(path: Path, start: float, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_SECONDS):
        _write_atomically(path, str(round(time.monotonic() - start)))


def _copy(source: IO[bytes], targets: Sequence[IO[bytes]]) -> None:
    """Everything the command writes, to each target as it comes (progress bars included)."""
    while chunk := source.read1(65536):
        for target in targets:
            target.write(chunk)
            target.flush()


def _wait(child: subprocess.Popen) -> tuple[int, int]:
    """(exit status, peak resident memory in MiB of the child and the processes it waited for).
    Ctrl-C reaches the child too: let it stop, then record the attempt."""
    while True:
        try:
            _, status, usage = os.wait4(child.pid, 0)
            break
        except KeyboardInterrupt:
            continue
    child.returncode = os.waitstatus_to_exitcode(status)
    # ru_maxrss: KiB on Linux, bytes on macOS
    return child.returncode, round(usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10))


def run_recorded(folder: PipelineDir, name: str, command: Sequence[str], shown: str, log: Path,
                 echo: IO[bytes] | None = None, env: dict[str, str] | None = None) -> int:
    """Run `command` as stage `name` of `folder`, its output to `log` (and to `echo` as well, when
    given), and record it; `shown` is the command line the records keep. Returns the command's
    exit status (killed by signal N: 128 + N, as a shell says)."""
    folder.stage_marks.mkdir(parents=True, exist_ok=True)
    running = folder.stage_marks / f"{name}.running"
    if running.is_file():  # left by an attempt that was killed with its pipeline
        _update(folder, folder.timings, name, int(running.read_text() or 0), _add)
        running.unlink()
    _update(folder, folder.commands, name, shown, _replace)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as log_file:
        start = time.monotonic()
        child = subprocess.Popen(list(command), stdout=subprocess.PIPE if echo else log_file,
                                 stderr=subprocess.STDOUT, env=env)
        stop = threading.Event()
        threads = [threading.Thread(target=_heartbeat, args=(running, start, stop), daemon=True)]
        if echo:
            threads.append(threading.Thread(target=_copy, args=(child.stdout, (echo, log_file)), daemon=True))
        for thread in threads:
            thread.start()
        status, peak_mb = _wait(child)
        stop.set()
        for thread in threads:  # no heartbeat may land after the attempt is recorded
            thread.join()
    seconds = round(time.monotonic() - start)
    _update(folder, folder.timings, name, seconds, _add)
    _update(folder, folder.peak_memory, name, peak_mb, max)
    running.unlink(missing_ok=True)
    return status if status >= 0 else 128 - status
