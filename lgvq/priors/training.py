"""Stage-two training: a PriorTransformer on a code store, as a task of the shared Trainer.

The step reads token ids and cached caption features from the memory-mapped store; the image
encoder and the text encoder never run inside it. A run directory holds what sampling needs:

    RUN/config.yaml   RUN/model (the prior)   RUN/tokenizer (a copy of the stage-one model)
"""

from __future__ import annotations

import functools
import logging
import re
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lgvq.config import ConfigError
from lgvq.data.code_store import CodeStore, StoreError, store_batches
from lgvq.priors.args import PriorArgs, PriorData
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.model import Condition, PriorTransformer
from lgvq.runs import StoreDir, model_dir
from lgvq.training.trainer import OptimizerSpec, StepContext, TrainingTask, muon_and_adam

log = logging.getLogger(__name__)


def resolve_conditioning(wanted: str, store: CodeStore) -> str:
    has_text = bool(store.text)
    has_labels = store.manifest.num_classes or int(np.max(store.labels, initial=-1)) >= 0
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


def hidden_matrices(prior: nn.Module) -> list[nn.Parameter]:
    """The 2-D weights of the decoder's and the prompt encoder's layers (attention and feed-forward):
    what Muon trains with `train.optimizer: muon`. Embeddings, heads, norms and biases are not among them."""
    layers = ("net.attn_layers.", "prompt_encoder.")
    return [p for n, p in prior.named_parameters() if p.ndim == 2 and n.startswith(layers)]


def condition_from_batch(batch: dict, conditioning: str) -> Condition:
    if conditioning == "class":
        return Condition(labels=batch["label"])
    if conditioning == "text":
        return Condition(text=batch["text"], text_mask=batch["text_mask"], text_ids=batch.get("text_ids"))
    return Condition(batch_size=batch["tokens"].shape[0])


# the prior's parameters that read the condition (trained alone in a frozen-backbone warm phase)
CONDITION_MODULES = ("class_embedding", "text_proj", "null_text", "prompt_encoder", "word_embedding")


def concat_batches(a: dict, b: dict) -> dict:
    """Two store batches as one (tensors stacked, lists joined); keys both have."""
    return {k: torch.cat([a[k], b[k]]) if isinstance(a[k], torch.Tensor) else a[k] + b[k] for k in a if k in b}


def initialise_from(prior: PriorTransformer, source: str | Path, new_class_init: str = "random",
                    old: PriorTransformer | None = None) -> None:
    """Copy a trained prior's weights into `prior` for fine-tuning. The conditioning, token
    vocabulary, sizes and text prefix length must agree (PriorTask keeps the old prefix length). A
    class-conditional prior keeps the rows of the classes the old one trained on and the null row;
    the rows of the others (new classes, or ones its data never held) keep their fresh init
    (`new_class_init="random"`), start at draws from a Gaussian fitted to the trained rows (`"mean"`:
    a typical class embedding), or at the mean of the trained rows whose class names share a word
    with theirs (`"names"`: "purple circle" starts as the average circle; `mean` where none does).
    `old`: the prior at `source`, when the caller has loaded it already."""
    if old is None:
        old = PriorTransformer.from_pretrained(model_dir(source))
    for key in ("conditioning", "vocab_size", "seq_len", "dim", "depth", "heads", "dim_head", "text_width",
                "text_length", "text_layers", "grid_positions", "group_size", "qk_norm", "prompt_word_rows",
                "code_features", "code_width"):
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
    if new and new_class_init in ("mean", "names") and len(trained) > 1:
        mean, std = old_rows[trained].mean(0), old_rows[trained].std(0)
        rows[new] = mean + std * torch.randn(len(new), rows.shape[1])
        names = prior.config.class_names
        if new_class_init == "names" and names:
            for c in new:  # the mean of the trained rows whose names share a word with the new class's
                related = [t for t in trained if set(names[c].lower().split()) & set(names[t].lower().split())]
                if related:
                    rows[c] = old_rows[related].mean(0)
    if new:
        log.info("classes %s are new to the prior: rows %s", new, {
            "mean": "drawn around the trained ones", "names": "from the trained classes whose names they share",
            "random": "freshly initialised"}[new_class_init])
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
        theirs, ours = getattr(old.manifest, key), getattr(store.manifest, key)
        if theirs != ours:
            raise StoreError(f"finetune.replay_store={f.replay_store} holds other codes than store={cfg.store} "
                             f"({key} {theirs} vs {ours}): encode both with one tokenizer")
    features = lambda text: (text.encoder, text.width) if text else (None, None)  # noqa: E731
    if features(old.text) != features(store.text):
        raise StoreError(f"finetune.replay_store={f.replay_store} has other caption features than store={cfg.store}")
    return old


def caption_words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def store_words(store: CodeStore) -> set[str]:
    """Every word of the captions of the store's readable images."""
    rows = {r for image in np.unique(store.images()) for r in store.captions[int(image)]}
    return set().union(*(caption_words(store.texts[r]) for r in rows))


def new_items(cfg: PriorRunConfig, store: CodeStore, init: PriorData | None, conditioning: str) -> np.ndarray | None:
    """Positions (into the store's readable items) of the images new to the prior fine-tuning
    starts from: a class it never trained on, or a caption with a word its captions never had.
    None when `finetune.new_data_fraction` is off (or, left to its default, cannot apply)."""
    share = cfg.finetune.new_share(conditioning)
    cannot_tell = init is None or (conditioning == "text" and init.trained_words is None)
    if share <= 0 or (cfg.finetune.new_data_fraction is None and cannot_tell):  # a default applies where it can
        return None
    if init is None or conditioning == "none":
        raise ConfigError("finetune.new_data_fraction needs init_from (the prior being fine-tuned) and a class- or "
                          "text-conditional prior: new images are those with classes or words it never trained on")
    images = store.images()
    if conditioning == "class":
        trained = set(init.trained_classes or range(init.num_classes))
        labels = np.asarray(store.labels)[images]
        new = np.array([int(c) not in trained for c in labels], dtype=bool)
    else:
        if init.trained_words is None:
            raise ConfigError(f"the prior at {cfg.init_from} does not record the words it trained on (it was trained "
                              f"by an older lgvq): set finetune.new_data_fraction=0 or retrain it")
        known = set(init.trained_words)
        unknown = {r: bool(caption_words(text) - known) for r, text in enumerate(store.texts)}
        new = np.array([any(unknown[r] for r in store.captions[int(i)]) for i in images], dtype=bool)
    positions = np.flatnonzero(new)
    if len(positions) == 0:
        log.info("fine-tuning: no image of %s is new to the prior; batches draw from all of it", cfg.store)
        return None
    log.info("fine-tuning: %d of %d images are new to the prior; %.0f %% of each batch drawn from them",
             len(positions), len(images), 100 * share)
    return positions


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
        # the prior fine-tuning starts from (read once: its config here, its weights in build_modules)
        self.init_prior = PriorTransformer.from_pretrained(model_dir(cfg.init_from)) if cfg.init_from else None
        # what the prior it starts from was trained on (its store's facts)
        self.init: PriorData | None = self.init_prior.args.data if self.init_prior is not None else None
        # one prompt length for every batch, whichever store it comes from: fine-tuning keeps the
        # trained prefix length (a longer caption is truncated to it), else the store's
        self.text_length = (self.init.text_length if self.init and self.conditioning == "text"
                            else self.store.text.length if self.store.text else None)
        self.new_items = new_items(cfg, self.store, self.init, self.conditioning)
        self.store.copy_tokenizer_to(self.run_dir)

    def prior_args(self) -> PriorArgs:
        """The prior's arguments: the run's `model` architecture, and what the store decides (token
        layout, classes, caption features) with the resolved conditioning."""
        s = self.store.manifest
        kwargs = dict(vocab_size=s.vocab_size, seq_len=s.seq_len, conditioning=self.conditioning,
                      token_shape=tuple(s.token_shape), tokens_per_position=s.tokens_per_position)
        stores = [store for store in (self.store, self.replay) if store is not None]
        if self.conditioning == "class":
            n = s.num_classes or int(np.max(self.store.labels)) + 1
            seen = {int(c) for store in stores for c in np.unique(np.asarray(store.labels)[store.images()]) if c >= 0}
            if self.init:  # what the prior it starts from trained on stays trained
                seen |= set(self.init.trained_classes or range(self.init.num_classes))
            kwargs |= dict(num_classes=n, class_names=s.class_names, trained_classes=sorted(seen))
        if self.conditioning == "text":
            t = s.text
            words = set().union(*(store_words(store) for store in stores))
            if self.init and self.init.trained_words is not None:
                words |= set(self.init.trained_words)
            kwargs |= dict(text_width=t.width, text_length=self.text_length,
                           text_encoder=t.encoder, text_pooling=t.pooling, trained_words=sorted(words))
        architecture = self.cfg.model.architecture()
        if architecture.code_features:
            kwargs["code_width"] = self.code_vectors.shape[1]
        return PriorArgs(PriorData(**kwargs), architecture)

    @functools.cached_property
    def code_vectors(self) -> torch.Tensor:
        """(V, D) the store's tokenizer's code vectors (`model.code_features`)."""
        from lgvq.tokenizers.model import run_code_vectors

        return run_code_vectors(self.run_dir)

    def build_modules(self) -> dict[str, nn.Module]:
        prior = PriorTransformer(self.prior_args())
        if prior.code_layers is not None:
            prior.code_layers.set_code_vectors(self.code_vectors)
        if self.cfg.init_from:
            initialise_from(prior, self.cfg.init_from, self.cfg.finetune.new_class_init, old=self.init_prior)
            self.init_prior = None  # its weights are copied; only its config (self.init) is kept
        log.info("prior: %.1fM parameters, %d tokens per image, conditioning %s",
                 sum(p.numel() for p in prior.parameters()) / 1e6, prior.config.seq_len, self.conditioning)
        return {"prior": prior}

    def optimizer_specs(self) -> list[OptimizerSpec]:
        t = self.cfg.train
        if t.optimizer == "muon":
            return muon_and_adam("prior", t, hidden_matrices)
        return [OptimizerSpec("prior", t.lr, tuple(t.betas), t.weight_decay)]

    def train_batches(self, start_batch: int, rank: int, world_size: int):
        """Batches of the store; when fine-tuning with `finetune.replay_fraction` or
        `finetune.new_data_fraction`, each batch holds that many rows of the old store / of the
        store's new images, the rest drawn from the whole store. Every stream starts at the same
        batch number, so a resumed run draws what it would have."""
        t, f = self.cfg.train, self.cfg.finetune
        # (store, the positions it draws from (None: all), rows per batch); the rest comes first
        parts = []
        if self.replay is not None:
            parts.append((self.replay, None, max(1, round(t.batch_size * f.replay_fraction))))
        if self.new_items is not None:
            parts.append((self.store, self.new_items, max(1, round(t.batch_size * f.new_share(self.conditioning)))))
        rest = t.batch_size - sum(rows for _, _, rows in parts)
        if rest < 1:
            raise ConfigError(f"finetune.replay_fraction + finetune.new_data_fraction leave no rows of the batch "
                              f"({t.batch_size}) for the rest of the store; lower them")
        parts.insert(0, (self.store, None, rest))
        streams = [store_batches(len(store) if subset is None else len(subset), rows, t.seed + k, rank, world_size,
                                 start_batch) for k, (store, subset, rows) in enumerate(parts)]
        for drawn in zip(*streams):
            batches = [store.batch(positions if subset is None else subset[positions], rng, self.text_length)
                       for (store, subset, _), (positions, rng) in zip(parts, drawn)]
            yield functools.reduce(concat_batches, batches)

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        tokens = batch["tokens"]
        # through the (possibly DDP-wrapped) module, so that gradients are synchronised
        loss = ctx.modules["prior"](tokens, condition_from_batch(batch, self.conditioning), targets=tokens)
        ctx.backward(loss)
        if step < self.cfg.finetune.freeze_backbone_steps:  # warm phase: only the condition learns
            for name, p in ctx.unwrap("prior").named_parameters():
                if not name.startswith(CONDITION_MODULES):
                    p.grad = None  # the optimizer leaves a parameter without a gradient as it is
        return {"loss": loss.detach()}

    def export(self, model: nn.Module, out_dir: Path) -> None:
        model.save_pretrained(str(out_dir))
