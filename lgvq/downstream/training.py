"""Training the captioning and VQA heads on a code store (tasks of the shared Trainer).

The heads read the codes of a frozen tokenizer from the store; the image encoder never runs in
their step. A head run folder: RUN/config.yaml, RUN/model (the head), RUN/tokenizer (a copy of
the stage-one model, so `lgvq caption` / `lgvq answer` can read images).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from torch import nn

from lgvq.config import ConfigError, TrainConfig
from lgvq.data.code_store import CodeStore, StoreError, store_batches
from lgvq.downstream.captioning import CaptionHead
from lgvq.downstream.text_vocab import TextVocab
from lgvq.downstream.vqa import VQAHead
from lgvq.runs import StoreDir, model_dir
from lgvq.training.trainer import OptimizerSpec, StepContext, TrainingTask

log = logging.getLogger(__name__)


@dataclass
class HeadModelConfig:
    """A captioning or VQA head: its width and depth, and how it reads the codes."""

    limits: ClassVar[dict[str, str]] = {
        "dim": ">= 1", "depth": ">= 1", "heads": ">= 1", "code_encoder_depth": ">= 0", "code_conv_layers": ">= 0",
        "dropout": "[0, 1)", "max_length": ">= 2"}
    dim: int = 192
    depth: int = 3
    heads: int = 4
    code_encoder_depth: int = 1  # a small transformer over the code vectors first (0 = none)
    code_conv_layers: int = 0  # residual 3 x 3 convolutions over the token grid before that (0 = none)
    dropout: float = 0.1
    variant: Literal["cross_attention", "prefix"] = "cross_attention"  # captioning; prefix: ClipCap-style
    max_length: int = 32  # caption / question tokens
    pooling: Literal["last", "mean"] = "last"  # VQA: last (the paper) | mean
    causal: bool = True  # VQA: GPT-style decoder over [codes; question] (the paper); false: bidirectional


@dataclass
class HeadRunConfig:
    limits: ClassVar[dict[str, str]] = {"questions_per_image": ">= 1"}
    name: str = "head"
    store: str = "runs/codes"
    text_tokenizer: str = "minilm"  # whose word pieces the heads read and write
    init_from: str | None = None  # a trained head of the same kind to continue from (fine-tuning)
    # VQA fine-tuning: answers the old head does not know are added to its classifier (their rows
    # drawn around the trained ones) instead of stopping the run
    extend_answers: bool = False
    # VQA: up to this many of an image's questions per training step, read in one sequence with the
    # image's codes (lgvq/downstream/vqa.py): on shapes, 5-6 questions an image cost 1.6x a step of one
    questions_per_image: int = 1
    model: HeadModelConfig = field(default_factory=HeadModelConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="runs/head", max_steps=1500, batch_size=32, lr=5e-4, betas=[0.9, 0.98], warmup_steps=100,
        sample_every=0, checkpoint_every=500))


class HeadTask(TrainingTask):
    """Shared parts of the two head tasks."""

    main_module = "head"
    progress_keys = ("loss", "accuracy")
    head_class: type = nn.Module

    def __init__(self, cfg: HeadRunConfig, run_dir: str | Path):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        store = StoreDir(Path(cfg.store))
        if not store.split("train").is_dir():
            raise StoreError(f"{store.root} has no train/ split; write it with "
                             f"`lgvq encode --tokenizer RUN/model --out {store.root}`")
        self.store = CodeStore(store.split("train"))
        self.init = self.head_class.from_pretrained(model_dir(cfg.init_from)) if cfg.init_from else None
        self.store.copy_tokenizer_to(self.run_dir)

    def common_kwargs(self) -> dict:
        m = self.cfg.model
        return {"code_vocab_size": self.store.manifest.vocab_size, "token_count": self.store.manifest.seq_len,
                "tokenizer_name": self.cfg.text_tokenizer, "dim": m.dim, "depth": m.depth, "heads": m.heads,
                "code_encoder_depth": m.code_encoder_depth, "dropout": m.dropout,
                "code_conv_layers": m.code_conv_layers, "token_shape": list(self.store.manifest.token_shape)}

    @functools.cached_property
    def code_vectors(self) -> torch.Tensor:
        """(V, D) the tokenizer's code vectors, which the head reads (frozen)."""
        from lgvq.tokenizers.model import run_code_vectors

        return run_code_vectors(self.run_dir)

    def finish_build(self, head: nn.Module) -> dict[str, nn.Module]:
        vectors = self.code_vectors
        if self.init is not None:
            self.check_compatible(self.init)
            head.load_state_dict(self.initial_state(head), strict=True)
        head.set_code_vectors(vectors)
        log.info("%s: %.1fM parameters", type(head).__name__, sum(p.numel() for p in head.parameters()) / 1e6)
        return {"head": head}

    def initial_state(self, head: nn.Module) -> dict[str, torch.Tensor]:
        """The state a fine-tuned head starts from: the old head's."""
        return self.init.state_dict()

    def check_compatible(self, old: nn.Module) -> None:
        for key in ("code_vocab_size", "token_count", "tokenizer_name", "dim", "depth", "heads", "code_encoder_depth",
                    "code_conv_layers"):
            theirs = old.config.get(key, 0)  # heads saved before code_conv_layers had none
            if theirs != self.common_kwargs()[key]:
                raise ConfigError(f"cannot fine-tune from {self.cfg.init_from}: its {key} is {theirs!r}, "
                                  f"this run's is {self.common_kwargs()[key]!r}")

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        return [OptimizerSpec("head", t.lr, tuple(t.betas), t.weight_decay)]

    def train_batches(self, start_batch: int, rank: int, world_size: int):
        t = self.cfg.train
        for positions, rng in store_batches(len(self.store), t.batch_size, t.seed, rank, world_size, start_batch):
            yield self.make_batch(positions, rng)

    def make_batch(self, positions: list[int], rng: np.random.Generator) -> dict:
        raise NotImplementedError

    def export(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))


class CaptionTask(HeadTask):
    head_class = CaptionHead
    progress_keys = ("loss",)

    def build_modules(self) -> dict[str, nn.Module]:
        m = self.cfg.model
        if self.init is not None:
            token_ids = self.init.config.token_ids  # keep the old indices; unseen pieces map to [UNK]
        else:
            token_ids = TextVocab.from_texts(self.cfg.text_tokenizer, self.store.texts).token_ids
        head = CaptionHead(**self.common_kwargs(), code_dim=self.code_vectors.shape[1], token_ids=token_ids,
                           variant=m.variant, max_length=m.max_length)
        return self.finish_build(head)

    def make_batch(self, positions: list[int], rng: np.random.Generator) -> dict:
        batch = self.store.batch(positions, rng)
        if any(not c for c in batch["caption"]):
            raise StoreError(f"{self.store.path} has images without captions; captioning needs captioned data")
        return {"codes": batch["tokens"], "caption": batch["caption"], "index": batch["index"]}

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        inputs, targets = ctx.unwrap("head").teacher_forcing(batch["caption"], batch["codes"].device)
        loss, _ = ctx.modules["head"](batch["codes"], inputs, targets)  # through DDP when wrapped
        ctx.backward(loss)
        return {"loss": loss.detach()}


class VQATask(HeadTask):
    head_class = VQAHead

    def answers(self) -> list[str]:
        found = sorted({q["answer"] for qa in self.store.qa for q in qa})
        if not found:
            raise StoreError(f"{self.store.path} holds no question-answer pairs; VQA needs data with a `qa` field "
                             f"(the shapes data has one; for folders add \"qa\": [{{\"question\", \"answer\", \"type\"}}])")
        if self.init is not None:
            old = list(self.init.config.answers)
            unknown = sorted(set(found) - set(old))
            if unknown and not self.cfg.extend_answers:
                raise ConfigError(f"cannot fine-tune from {self.cfg.init_from}: the new data has answers its "
                                  f"classifier does not know: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}. "
                                  f"Add them to the classifier with extend_answers=true, or train a new head "
                                  f"(no --init-from)")
            return old + unknown  # the old answers keep their indices
        return found

    def initial_state(self, head: nn.Module) -> dict[str, torch.Tensor]:
        """The old head's state; with new answers, the classifier keeps the old answers' rows and
        the new ones start at draws from a Gaussian fitted to them."""
        state = self.init.state_dict()
        old_n = len(self.init.config.answers)
        for key in ("classifier.1.weight", "classifier.1.bias"):
            fresh = head.state_dict()[key].clone()
            trained = state[key]
            fresh[:old_n] = trained
            if len(fresh) > old_n:
                noise = torch.randn((len(fresh) - old_n, *trained.shape[1:]))
                fresh[old_n:] = trained.mean(0) + trained.std(0) * noise
            state[key] = fresh
        return state

    def build_modules(self) -> dict[str, nn.Module]:
        m = self.cfg.model
        questions = [q["question"] for qa in self.store.qa for q in qa]
        token_ids = (self.init.config.token_ids if self.init is not None
                     else TextVocab.from_texts(self.cfg.text_tokenizer, questions).token_ids)
        head = VQAHead(**self.common_kwargs(), code_dim=self.code_vectors.shape[1], token_ids=token_ids,
                       answers=self.answers(), max_question_length=m.max_length, pooling=m.pooling,
                       causal=m.causal)
        return self.finish_build(head)

    def make_batch(self, positions: list[int], rng: np.random.Generator) -> dict:
        """The batch's images that have questions, each with its questions drawn at random: one, or
        up to `questions_per_image` of them (lists per image)."""
        batch = self.store.batch(positions)
        k = self.cfg.questions_per_image
        keep, chosen = [], []
        for row, image in enumerate(batch["index"].tolist()):
            options = self.store.qa[image]
            if options:
                # one question an image draws as it always has, so such runs reproduce
                picks = [rng.integers(len(options))] if k == 1 else rng.choice(len(options), min(k, len(options)),
                                                                                 replace=False)
                keep.append(row)
                chosen.append([options[int(i)] for i in picks])
        return {"codes": batch["tokens"][keep], "question": [[q["question"] for q in qs] for qs in chosen],
                "answer": [[q["answer"] for q in qs] for qs in chosen], "index": batch["index"][keep]}

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        head = ctx.unwrap("head")
        device = batch["codes"].device
        ids, mask = head.encode_question_sets(batch["question"])  # (B, Q, T); one question an image: Q = 1
        target = torch.full(ids.shape[:2], -100, dtype=torch.long)  # padding slots are ignored
        for i, answers in enumerate(batch["answer"]):
            target[i, :len(answers)] = head.answer_targets(answers)
        target = target.to(device)
        loss, logits = ctx.modules["head"](batch["codes"], ids.to(device), mask.to(device), target)
        ctx.backward(loss)
        real = target != -100
        return {"loss": loss.detach(), "accuracy": (logits.argmax(-1) == target)[real].float().mean()}
