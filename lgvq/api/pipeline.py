"""The main job (both stages, evaluation, report) for Python users; it lives in lgvq.mainjob,
which imports no torch, so that `lgvq pipeline` can run it from a light process.

    from lgvq.api import PipelineOptions, run_pipeline
    report = run_pipeline(PipelineOptions(out="runs/pipeline", tokenizer="vqgan_lg"))
"""

from lgvq.mainjob import PipelineOptions, StageFailed, plan_pipeline, run_pipeline

__all__ = ["PipelineOptions", "StageFailed", "plan_pipeline", "run_pipeline"]
