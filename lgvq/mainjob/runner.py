"""Carry out a plan: each stage once (a finished stage is skipped on the next run: its
.stages/NAME.done mark; an interrupted training stage resumes from its last checkpoint with
`--resume latest`), two lanes side by side where the plan has them, each stage's output in
logs/NAME.log, its time and memory in the records, then the report.

Lanes side by side each get half the CPU cores as their threads (two torch processes with default
threads on the same cores slow each other down many times over); the first lane's output is shown,
the second's goes to its logs only. A failed stage stops its lane; the other lane goes on to its
end, and the pipeline then stops with StageFailed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from lgvq.errors import ConfigError, LgvqError
from lgvq.mainjob.plan import Plan, Stage
from lgvq.mainjob.records import run_recorded
from lgvq.runs import PipelineDir

logger = logging.getLogger(__name__)
Echo = Callable[[str], None]  # where progress lines go (and, for errors, a second one)


class StageFailed(LgvqError):
    """A stage's command exited with an error; its log says why (the pipeline resumes on the next run)."""


def executable(argv: tuple[str, ...]) -> list[str]:
    """A stage's command as run: `lgvq` through this Python, so it needs no `lgvq` on PATH."""
    return [sys.executable, "-m", "lgvq", *argv[1:]] if argv[0] == "lgvq" else list(argv)


def log_tail(path: Path, lines: int = 20) -> str:
    text = path.read_text(errors="replace") if path.is_file() else ""
    return "\n".join(text.replace("\r", "\n").splitlines()[-lines:])


class Runner:
    """Runs a plan's steps in order; `failed` names the stages that failed."""

    def __init__(self, plan: Plan, echo: Echo, echo_error: Echo, lane_threads: int | None):
        self.plan, self.folder, self.lane_threads = plan, plan.folder, lane_threads
        self.echo, self.echo_error = echo, echo_error
        self.failed: list[str] = []

    def stage(self, stage: Stage, shown: bool, env: dict[str, str] | None) -> bool:
        """Run one stage unless it is done already; False if it failed."""
        done = self.folder.stage_marks / f"{stage.name}.done"
        if done.is_file():
            self.echo(f"== {stage.name}: done already, skipped")
            return True
        log = self.folder.logs / f"{stage.name}.log"
        self.echo(f"== {stage.name}: started {time.strftime('%H:%M:%S')} (log: {log})")
        status = run_recorded(self.folder, stage.name, executable(stage.argv), stage.shell(), log,
                              echo=getattr(sys.stdout, "buffer", None) if shown else None, env=env)
        if status != 0:
            self.failed.append(stage.name)
            self.echo_error(f"== {stage.name}: FAILED (exit {status}); the end of {log}:\n{log_tail(log)}")
            return False
        done.touch()
        self.echo(f"== {stage.name}: finished {time.strftime('%H:%M:%S')}")
        return True

    def lane(self, stages: tuple[Stage, ...], shown: bool, env: dict[str, str] | None) -> None:
        for stage in stages:
            if not self.stage(stage, shown, env):
                return

    def step(self, lanes: tuple[tuple[Stage, ...], ...]) -> None:
        if len(lanes) == 1 or self.lane_threads is None:
            for lane in lanes:
                self.lane(lane, True, None)
                if self.failed:
                    return
            return
        threads = str(self.lane_threads)
        env = os.environ | {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
        second = threading.Thread(target=self.lane, args=(lanes[1], False, env))
        second.start()
        try:
            self.lane(lanes[0], True, env)
        finally:
            second.join()

    def run(self) -> None:
        for step in self.plan.steps:
            self.step(step)
            if self.failed:
                which = f"stage{'s' if len(self.failed) > 1 else ''} {', '.join(self.failed)}"
                raise StageFailed(f"{which} failed (logs in {self.folder.logs}); "
                                  f"fix the cause and run the same command again: finished stages are skipped")


def lane_threads(plan: Plan) -> int | None:
    """Threads per lane when two lanes run side by side; None: one stage at a time."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    o = plan.options
    if o.num_processes > 1 or cores < 2 or o.sequential:
        return None
    return cores // 2


def describe(plan: Plan, plan_hash: str) -> None:
    """pipeline.json: what this run is, for the report's "what was run" and result.json."""
    from lgvq.cpu import cpu_description

    o = plan.options
    description = {"preset": o.resolved_preset, "dataset": o.dataset, "tokenizer": o.tokenizer,
                   "num_prompts": o.num_prompts, "sample_seeds": o.sample_seeds,
                   "overrides": {"tokenizer": " ".join(o.tokenizer_overrides), "prior": " ".join(o.prior_overrides),
                                 "heads": " ".join(o.head_overrides)},
                   "plan_hash": plan_hash, "cpu": cpu_description()}
    plan.folder.description.write_text(json.dumps(description, indent=2))


def require_cuda(plan: Plan) -> None:
    """ConfigError before anything runs when the preset is sized for a GPU and torch sees none
    (asked of a child process: this one imports no torch)."""
    if plan.options.resolved_preset != "gpu":
        return
    probe = "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
    if subprocess.run([sys.executable, "-c", probe], capture_output=True, check=False).returncode != 0:
        raise ConfigError("--preset gpu is sized for one CUDA GPU, and torch sees none here; on the CPU run "
                          "--preset quick (about 15 minutes on 2 cores) or --preset full")


def record_wall(folder: PipelineDir, seconds: float) -> None:
    """Add this invocation's wall time to wall.json (a failed invocation's too)."""
    runs = json.loads(folder.wall_time.read_text()) if folder.wall_time.is_file() else []
    folder.wall_time.write_text(json.dumps([*runs, round(seconds)]))


def execute(plan: Plan, echo: Echo | None = None, echo_error: Echo | None = None) -> Path:
    """Run the plan's stages, then write the report; returns report.md's path. Progress lines go
    to `echo`, a failed stage's end of log to `echo_error` (default: this module's logger). Raises
    StageFailed (after the other lane has ended and the wall time is recorded) if a stage fails."""
    from lgvq.report import build_report
    from lgvq.run_result import plan_hash

    echo, echo_error = echo or logger.info, echo_error or logger.error
    require_cuda(plan)
    start = time.monotonic()
    folder = plan.folder
    folder.stage_marks.mkdir(parents=True, exist_ok=True)
    folder.logs.mkdir(parents=True, exist_ok=True)
    describe(plan, plan_hash(plan.listing(), str(folder.root)))
    try:
        Runner(plan, echo, echo_error, lane_threads(plan)).run()
    finally:
        record_wall(folder, time.monotonic() - start)
    return build_report(folder.root)
