"""The main job in Python: both stages on one dataset, evaluation and a report, as
`scripts/run_pipeline.sh`, `lgvq pipeline` and `lgvq.api.run_pipeline` run it.

    matrix.py   the config files per dataset, preset and tokenizer kind
    plan.py     options -> the stages' command lines, in order and in lanes (`--dry-run`)
    runner.py   runs a plan: skip finished stages, lanes side by side, logs, the report
    records.py  one stage's command, its time and peak memory added to the folder's records

This package imports no torch: the process that runs the stages stays light.
"""

from __future__ import annotations

from pathlib import Path

from lgvq.mainjob.plan import PipelineOptions, Plan, Stage, plan_pipeline
from lgvq.mainjob.runner import Echo, StageFailed, execute


def run_pipeline(options: PipelineOptions | None = None, *, echo: Echo | None = None,
                 echo_error: Echo | None = None, **fields) -> Path:
    """Run the main job (`options`, or PipelineOptions(**fields)); returns the report's path.
    Running it again skips finished stages and resumes an interrupted training stage."""
    return execute(plan_pipeline(options or PipelineOptions(**fields)), echo, echo_error)


__all__ = ["PipelineOptions", "Plan", "Stage", "StageFailed", "plan_pipeline", "run_pipeline"]
