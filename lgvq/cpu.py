"""The CPU a run ran on, told without importing torch (the report and `lgvq --help` stay light):
its model name, the cores this process may use, and the vector extensions that set its speed class
here (fp32 FMA width and native bf16, docs/results.md).

    cpu_class(cpu_description())     # '2 cores, AMD EPYC, AVX2 only'
"""

from __future__ import annotations

import os

# the vector extensions that decide a CPU's speed class here
CPU_FEATURES = ("avx2", "avx512f", "avx512_bf16", "amx_bf16")


def cpu_description() -> dict:
    """The CPU a run ran on: model name, cores this process may use, and which of CPU_FEATURES it
    has (from /proc/cpuinfo; empty where that file does not exist), e.g. {"model": "AMD EPYC",
    "cores": 2, "features": ["avx2"]}."""
    model, flags = "unknown", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and model == "unknown":
                    model = value.strip()
                elif key.strip() == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"model": model, "cores": cores, "features": [f for f in CPU_FEATURES if f in flags]}


def cpu_class(cpu: dict) -> str:
    """A one-line name of a cpu_description(): '2 cores, AMD EPYC, AVX2 only' / '... AVX512-BF16'."""
    features = cpu.get("features") or []
    isa = ("AMX" if "amx_bf16" in features else "AVX512-BF16" if "avx512_bf16" in features
           else "AVX512" if "avx512f" in features else "AVX2 only" if "avx2" in features else "no AVX2")
    return f"{cpu.get('cores')} cores, {cpu.get('model')}, {isa}"
