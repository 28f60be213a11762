"""The application layer: one typed function per job, shared by the `lgvq` command, the pipeline
script (through the command) and Python users. Each takes plain arguments and returns results.

    from lgvq.api import train, encode_store, evaluate_prior_run, sample_images
    model = train("tokenizer", ["configs/tokenizer/vqgan_shapes.yaml"], ["train.max_steps=200"])
"""

from lgvq.api.encoding import build_vocabulary, encode_store
from lgvq.api.evaluation import evaluate_alignment_run, evaluate_head_run, evaluate_prior_run, evaluate_tokenizer_run
from lgvq.api.generation import complete_image, sample_images
from lgvq.api.heads import answer_question, caption_images, fill_mask, rank
from lgvq.api.pipeline import PipelineOptions, StageFailed, plan_pipeline, run_pipeline
from lgvq.api.training import stage_config, train
from lgvq.images import load_images, save_samples

__all__ = ["PipelineOptions", "StageFailed", "answer_question", "build_vocabulary", "caption_images", "complete_image",
           "encode_store", "evaluate_alignment_run", "evaluate_head_run", "evaluate_prior_run",
           "evaluate_tokenizer_run", "fill_mask", "load_images", "plan_pipeline", "rank", "run_pipeline",
           "sample_images", "save_samples", "stage_config", "train"]
