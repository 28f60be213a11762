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


# the prior's parameters that read the condition (trained alone in a frozen-backbone warm phase)
CONDITION_MODULES = ("class_embedding", "text_proj", "null_text", "prompt_encoder")


def concat_batches(a: dict, b: dict) -> dict:
    """Two store batches as one (tensors stacked, lists joined); keys both have."""
    return {k: torch.cat([a[k], b[k]]) if isinstance(a[k], torch.Tensor) else a[k] + b[k] for k in a if k in b}


def initialise_from(prior: PriorTransformer, source: str | Path, new_class_init: str = "random") -> None:
    """Copy a trained prior's weights into `prior` for fine-tuning. The conditioning, token
    vocabulary, sizes and text prefix length must agree (PriorTask keeps the old prefix length). A
    class-conditional prior keeps the rows of the classes the old one trained on and the null row;
    the rows of the others (new classes, or ones its data never held) keep their fresh init, or with
    `new_class_init="mean"` start at draws from a Gaussian fitted to the trained rows (a typical class
    embedding instead of a random vector)."""
    old = PriorTransformer.from_pretrained(model_dir(source))
    for key in ("conditioning", "vocab_size", "seq_len", "dim", "depth", "heads", "text_width", "text_length",
                "text_layers", "grid_positions"):
        if old.config[key] != prior.config[key]:
            raise ConfigError(f"cannot fine-tune from {source}: its {key} is {old.config[key]!r}, this run's is "
                              f"{prior.config[key]!r} (same tokenizer and model size needed)")
    state = old.state_dict()
    if prior.config.conditioning == "class":
        state["class_embedding.weight"] = class_rows_for(old, prior, new_class_init)
    prior.load_state_dict(state)


def class_rows_for(old: PriorTransformer, prior: PriorTransformer, new_class_init: str) -> torch.Tensor:
    """`prior`'s class table (num_classes + 1, dim) for fine-tuning from `old` (see initialise_from)."""
    rows = prior.class_embedding.weight.detach().clone()
    old_rows = old.class_embedding.weight.detach()
    trained = [c for c in (old.config.trained_classes or range(old.config.num_classes))
               if c < min(old.config.num_classes, prior.config.num_classes)]
    rows[trained] = old_rows[trained]
    rows[-1] = old_rows[-1]  # the null class
    new = [c for c in range(prior.config.num_classes) if c not in set(trained)]
    if new and new_class_init == "mean" and len(trained) > 1:
        mean, std = old_rows[trained].mean(0), old_rows[trained].std(0)
        rows[new] = mean + std * torch.randn(len(new), rows.shape[1])
    if new:
        log.info("classes %s are new to the prior: rows %s", new,
                 "drawn around the trained ones" if new_class_init == "mean" else "freshly initialised")
    return rows


def replay_store(cfg: PriorRunConfig, store: CodeStore) -> CodeStore | None:
    """The old data's training split to mix into fine-tuning batches (`finetune.replay_store`),
    checked to hold the same kind of codes and caption features as `store`."""
    f = cfg.finetune
    if not f.replay_store or f.replay_fraction <= 0:
        return None
    split = StoreDir(Path(f.replay_store)).split("train")
    if not split.is_dir():
        raise StoreError(f"finetune.replay_store={f.replay_store} has no train/ split")
    old = CodeStore(split)
    for key in ("vocab_size", "seq_len", "tokens_per_position"):
        if old.manifest[key] != store.manifest[key]:
            raise StoreError(f"finetune.replay_store={f.replay_store} holds other codes than store={cfg.store} "
                             f"({key} {old.manifest[key]} vs {store.manifest[key]}): encode both with one tokenizer")
    old_text, new_text = old.manifest.get("text") or {}, store.manifest.get("text") or {}
    if old_text.get("encoder") != new_text.get("encoder") or old_text.get("width") != new_text.get("width"):
        raise StoreError(f"finetune.replay_store={f.replay_store} has other caption features than store={cfg.store}")
    return old


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
        self.replay = replay_store(cfg, self.store)
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
            seen = {int(c) for store in (self.store, self.replay) if store is not None
                    for c in np.unique(np.asarray(store.labels)[store.images()]) if c >= 0}
            kwargs |= dict(num_classes=n, class_names=s.get("class_names"), trained_classes=sorted(seen))
        if self.conditioning == "text":
            t = s["text"]
            kwargs |= dict(text_width=t["width"], text_length=self.text_length or t["length"],
                           text_encoder=t["encoder"], text_pooling=t["pooling"])
        return kwargs

    def build_modules(self) -> dict[str, nn.Module]:
        prior = PriorTransformer(**self.prior_kwargs())
        if self.cfg.init_from:
            initialise_from(prior, self.cfg.init_from, self.cfg.finetune.new_class_init)
        log.info("prior: %.1fM parameters, %d tokens per image, conditioning %s",
                 sum(p.numel() for p in prior.parameters()) / 1e6, prior.config.seq_len, self.conditioning)
        return {"prior": prior}

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        return [OptimizerSpec("prior", t.lr, tuple(t.betas), t.weight_decay)]

    def train_batches(self, start_batch: int, rank: int, world_size: int):
        t, f = self.cfg.train, self.cfg.finetune
        if self.replay is None:
            for positions, rng in store_batches(len(self.store), t.batch_size, t.seed, rank, world_size, start_batch):
                yield self.store.batch(positions, rng, self.text_length)
            return
        # each batch: round(batch_size x replay_fraction) rows of the old data, the rest new; both
        # streams start at the same batch number, so a resumed run draws what it would have
        old_rows = max(1, round(t.batch_size * f.replay_fraction))
        length = self.prior_kwargs().get("text_length")  # one prompt length for both stores
        new = store_batches(len(self.store), t.batch_size - old_rows, t.seed, rank, world_size, start_batch)
        old = store_batches(len(self.replay), old_rows, t.seed + 1, rank, world_size, start_batch)
        for (positions, rng), (old_positions, old_rng) in zip(new, old):
            yield concat_batches(self.store.batch(positions, rng, length),
                                 self.replay.batch(old_positions, old_rng, length))

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        # through the (possibly DDP-wrapped) module, so that gradients are synchronised
        loss, _ = ctx.modules["prior"](tokens, condition_from_batch(batch, self.conditioning), targets=tokens)
        ctx.backward(loss)
        if step < self.cfg.finetune.freeze_backbone_steps:  # warm phase: only the condition learns
            for name, p in ctx.unwrap("prior").named_parameters():
                if not name.startswith(CONDITION_MODULES):
                    p.grad = None  # the optimizer leaves a parameter without a gradient as it is
        return {"loss": loss.detach()}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))
