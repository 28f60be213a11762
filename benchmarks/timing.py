"""The benchmarks' one timer: wall seconds of a call (the GPU synchronised around it), a median
over repeats, and several callables timed side by side, in turns, so that a shared machine's
noise hits each alike.

    seconds = median_time(step, device, warmup=2, repeats=10)
    medians = side_by_side({"plain": plain, "lgvq": aligned}, rounds=20, warmup=3, inputs=lambda i: (next(batches),))
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def timed(fn: Callable, device: torch.device | str | None = None, *args) -> float:
    """Wall seconds of fn(*args), with the GPU's queued work included."""
    synchronize(device)
    start = time.perf_counter()
    fn(*args)
    synchronize(device)
    return time.perf_counter() - start


def median_time(fn: Callable, device: torch.device | str | None = None, warmup: int = 1, repeats: int = 5) -> float:
    for _ in range(warmup):
        fn()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def side_by_side(fns: dict[str, Callable], rounds: int, warmup: int = 1, device: torch.device | str | None = None,
                 inputs: Callable[[int], tuple] = lambda i: ()) -> dict[str, float]:
    """Median seconds of each callable over `rounds` timed rounds (after `warmup` untimed ones):
    each round calls all of them in turn, in reverse order every other round, with the same
    arguments `inputs(round)` (made outside the timing)."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(warmup + rounds):
        args = inputs(i)
        order = list(fns) if i % 2 == 0 else list(reversed(fns))
        for name in order:
            t = timed(fns[name], device, *args)
            if i >= warmup:
                times[name].append(t)
    return {name: statistics.median(t) for name, t in times.items()}
