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
from lgvq.errors import ConfigError, UsageError
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
          store: str | None = None, init_from: str | None = None) -> Path | None:
    """Train a stage to `train.max_steps` and export its model; returns RUN/model (None on the other
    processes of a multi-process run, which do not export). A run folder that already holds
    checkpoints is only continued with `resume` ('latest' or a checkpoint)."""
    cfg = stage_config(stage, configs, overrides, store, init_from)
    run = RunDir(Path(cfg.train.output_dir))
    if not resume and ckpt.checkpoint_dirs(run.checkpoints):
        raise UsageError(f"{run.root} already holds checkpoints of a run; continue it with --resume latest, "
                         f"or choose another folder with train.output_dir=DIR")
    if resume and run.config.is_file():
        check_same_run(run.config, cfg)
    task = STAGES[stage][1](cfg, run.root)
    # the record is written once the run has started (models built, checkpoint restored): a resume
    # that fails leaves RUN/config.yaml as it was
    trainer = Trainer(task, cfg.train, run.root, resume=resume, tracker_config=flat_config(cfg),
                      on_start=lambda: save_config(cfg, run.config))
    out = trainer.fit()
    return out if trainer.accelerator.is_main_process else None


# sections a resumed run may change (a lower lr after a divergence, more steps, sampling options)
RESUMABLE_CHANGES = ("train", "sample")


def check_same_run(saved: Path, cfg) -> None:
    """Refuse to resume a run with another model or data than it was started with, naming the keys."""
    old = flat_config_of(OmegaConf.to_container(OmegaConf.structured(load_config(type(cfg), saved))))
    new = flat_config_of(OmegaConf.to_container(OmegaConf.structured(cfg)))
    changed = sorted(k for k in old.keys() | new.keys()
                     if k.split(".")[0] not in RESUMABLE_CHANGES and old.get(k) != new.get(k))
    if changed:
        shown = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:5])
        raise ConfigError(f"--resume: this config differs from the run's {saved} in {len(changed)} key(s) ({shown}); "
                          f"resume with --config {saved}, or start a new run in another train.output_dir")


def flat_config_of(tree: dict, prefix: str = "") -> dict:
    """Dotted keys -> values of a nested config dict."""
    flat = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            flat |= flat_config_of(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def flat_config(cfg) -> dict:
    """Scalars only, dotted keys, for TensorBoard's hparams."""
    flat = flat_config_of(OmegaConf.to_container(OmegaConf.structured(cfg)))
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in flat.items()}
