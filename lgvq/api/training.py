"""Training any stage from config files: what `lgvq train-*` and the pipeline script run.

    model_dir = train("tokenizer", ["configs/tokenizer/vqgan_shapes.yaml"], ["train.max_steps=200"])
    model_dir = train("prior", ["configs/prior/shapes_t2i.yaml"], resume="latest", store="runs/codes")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from omegaconf import OmegaConf

from lgvq.config import load_config, save_config
from lgvq.downstream.training import CaptionTask, HeadRunConfig, VQATask
from lgvq.errors import UsageError
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.training import PriorTask
from lgvq.runs import RunDir
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.training import TokenizerTask
from lgvq.training import checkpoint as ckpt
from lgvq.training.trainer import Trainer

Stage = Literal["tokenizer", "prior", "captioner", "vqa"]
# stage -> (config schema, task factory taking (config, run folder))
STAGES = {
    "tokenizer": (TokenizerRunConfig, lambda cfg, run: TokenizerTask(cfg)),
    "prior": (PriorRunConfig, PriorTask),
    "captioner": (HeadRunConfig, CaptionTask),
    "vqa": (HeadRunConfig, VQATask),
}


def stage_config(stage: Stage, configs: Sequence[str | Path], overrides: Sequence[str] = (),
                 store: str | None = None, init_from: str | None = None):
    """The resolved, typed config of a stage: YAML files in order, then `key=value` overrides;
    `store` / `init_from` (stage two) as the overrides of those keys."""
    if stage not in STAGES:
        raise UsageError(f"unknown stage {stage!r}; one of {', '.join(STAGES)}")
    extra = ([f"store={store}"] if store else []) + ([f"init_from={init_from}"] if init_from else [])
    if extra and stage == "tokenizer":
        raise UsageError("--data / --init-from are for stage-two runs (prior, captioner, vqa)")
    return load_config(STAGES[stage][0], list(configs), [*overrides, *extra])


def train(stage: Stage, configs: Sequence[str | Path], overrides: Sequence[str] = (), resume: str | None = None,
          store: str | None = None, init_from: str | None = None) -> Path:
    """Train a stage to `train.max_steps` and export its model; returns RUN/model. A run folder
    that already holds checkpoints is only continued with `resume` ('latest' or a checkpoint)."""
    cfg = stage_config(stage, configs, overrides, store, init_from)
    run = RunDir(Path(cfg.train.output_dir))
    if not resume and ckpt.checkpoint_dirs(run.checkpoints):
        raise UsageError(f"{run.root} already holds checkpoints of a run; continue it with --resume latest, "
                         f"or choose another folder with train.output_dir=DIR")
    run.root.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run.config)
    task = STAGES[stage][1](cfg, run.root)
    trainer = Trainer(task, cfg.train, run.root, resume=resume, tracker_config=flat_config(cfg))
    out = trainer.fit()
    if trainer.accelerator.is_main_process:
        print(f"{stage} saved to {out}")
    return out


def flat_config(cfg) -> dict:
    """Scalars only, dotted keys, for TensorBoard's hparams."""
    flat = {}

    def walk(node, prefix=""):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, f"{prefix}{k}.")
            else:
                flat[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)

    walk(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return flat
