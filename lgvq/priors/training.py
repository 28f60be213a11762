"""Stage-two training: a PriorTransformer on a code store, as a task of the shared Trainer.

The step reads token ids and cached caption features from the memory-mapped store; the image
encoder and the text encoder never run inside it. A run directory holds what sampling needs:

    RUN/config.yaml   RUN/model (the prior)   RUN/tokenizer (a copy of the stage-one model)
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lgvq.config import ConfigError
from lgvq.data.code_store import CodeStore, StoreError, store_batches
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.model import Condition, PriorTransformer
from lgvq.runs import StoreDir, model_dir
from lgvq.training.trainer import OptimizerSpec, StepContext, TrainingTask

log = logging.getLogger(__name__)


def resolve_conditioning(wanted: str, store: CodeStore) -> str:
    has_text = bool(store.text)
    has_labels = store.manifest.get("num_classes") or int(np.max(store.labels, initial=-1)) >= 0
    if wanted == "auto":
        return "text" if has_text else "class" if has_labels else "none"
    if wanted == "text" and not has_text:
        raise ConfigError(f"model.conditioning=text needs caption features in the store {store.path}; "
                          f"encode captioned data with a text encoder")
    if wanted == "class" and not has_labels:
        raise ConfigError(f"model.conditioning=class needs labels in the store {store.path}")
    if wanted not in ("none", "class", "text"):
        raise ConfigError(f"model.conditioning must be auto, none, class or text, not {wanted!r}")
    return wanted


def condition_from_batch(batch: dict, conditioning: str) -> Condition:
    if conditioning == "class":
        return Condition(labels=batch["label"])
    if conditioning == "text":
        return Condition(text=batch["text"], text_mask=batch["text_mask"])
    return Condition(batch_size=batch["tokens"].shape[0])


def initialise_from(prior: PriorTransformer, source: str | Path) -> None:
    """Copy a trained prior's weights into `prior` for fine-tuning. The conditioning, token
    vocabulary, sizes and text prefix length must agree (PriorTask keeps the old prefix length); a
    different class count keeps the old classes' rows (and the null row), the new rows keep their
    fresh initialisation."""
    old = PriorTransformer.from_pretrained(model_dir(source))
    for key in ("conditioning", "vocab_size", "seq_len", "dim", "depth", "heads", "text_width", "text_length",
                "text_layers", "grid_positions"):
        if old.config[key] != prior.config[key]:
            raise ConfigError(f"cannot fine-tune from {source}: its {key} is {old.config[key]!r}, this run's is "
                              f"{prior.config[key]!r} (same tokenizer and model size needed)")
    state = old.state_dict()
    if prior.config.conditioning == "class":
        new_rows = prior.class_embedding.weight.detach().clone()
        old_rows = state["class_embedding.weight"]
        keep = min(old.config.num_classes, prior.config.num_classes)
        new_rows[:keep] = old_rows[:keep]
        new_rows[-1] = old_rows[-1]  # the null class
        state["class_embedding.weight"] = new_rows
        if old.config.num_classes != prior.config.num_classes:
            log.info("classes: %d -> %d (kept the first %d rows and the null row)", old.config.num_classes,
                     prior.config.num_classes, keep)
    prior.load_state_dict(state)


class PriorTask(TrainingTask):
    main_module = "prior"
    progress_keys = ("loss",)

    def __init__(self, cfg: PriorRunConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        store = StoreDir(Path(cfg.store))
        if not store.split("train").is_dir():
            raise StoreError(f"{store.root} has no train/ split; write the store with "
                             f"`lgvq encode --tokenizer RUN/model --out {store.root}`")
        self.store = CodeStore(store.split("train"))
        self.conditioning = resolve_conditioning(cfg.model.conditioning, self.store)
        # fine-tuning keeps the trained prefix length; a longer caption is truncated to it
        self.text_length = (PriorTransformer.from_pretrained(model_dir(cfg.init_from)).config.text_length
                            if cfg.init_from and self.conditioning == "text" else None)
        self.store.copy_tokenizer_to(self.run_dir)

    def prior_kwargs(self) -> dict:
        """The prior's arguments: the run's `model` config, with what the store decides (token
        layout, classes, caption features) and the resolved conditioning."""
        s = self.store.manifest
        kwargs = asdict(self.cfg.model) | dict(
            vocab_size=s["vocab_size"], seq_len=s["seq_len"], conditioning=self.conditioning,
            token_shape=tuple(s["token_shape"]), tokens_per_position=s["tokens_per_position"])
        if self.conditioning == "class":
            n = s.get("num_classes") or int(np.max(self.store.labels)) + 1
            kwargs |= dict(num_classes=n, class_names=s.get("class_names"))
        if self.conditioning == "text":
            t = s["text"]
            kwargs |= dict(text_width=t["width"], text_length=self.text_length or t["length"],
                           text_encoder=t["encoder"], text_pooling=t["pooling"])
        return kwargs

    def build_modules(self) -> dict[str, nn.Module]:
        prior = PriorTransformer(**self.prior_kwargs())
        if self.cfg.init_from:
            initialise_from(prior, self.cfg.init_from)
        log.info("prior: %.1fM parameters, %d tokens per image, conditioning %s",
                 sum(p.numel() for p in prior.parameters()) / 1e6, prior.config.seq_len, self.conditioning)
        return {"prior": prior}

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        return [OptimizerSpec("prior", t.lr, tuple(t.betas), t.weight_decay)]

    def train_batches(self, start_batch: int, rank: int, world_size: int):
        t = self.cfg.train
        for positions, rng in store_batches(len(self.store), t.batch_size, t.seed, rank, world_size, start_batch):
            yield self.store.batch(positions, rng, self.text_length)

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        # through the (possibly DDP-wrapped) module, so that gradients are synchronised
        loss, _ = ctx.modules["prior"](tokens, condition_from_batch(batch, self.conditioning), targets=tokens)
        ctx.backward(loss)
        return {"loss": loss.detach()}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))
