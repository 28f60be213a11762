"""Config schema of a prior run (`lgvq train-prior`)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar, Literal

from lgvq.config import TrainConfig
from lgvq.errors import ConfigError
from lgvq.priors.args import SIZES, PriorArchitecture, SizeName


@dataclass
class PriorModelConfig(PriorArchitecture):
    """The prior's architecture (lgvq/priors/args.py: width, layers, heads, ...), a named size, and
    what it is conditioned on."""

    conditioning: Literal["auto", "none", "class", "text"] = "auto"  # auto: text if the store has caption features,
    #                             else class if it has labels, else none
    size: SizeName | None = None  # tiny | small | base | large: sets dim, depth and heads (args.SIZES)

    def architecture(self) -> PriorArchitecture:
        """The architecture this config asks for, the named size's dim / depth / heads included."""
        arch = PriorArchitecture(**{f.name: getattr(self, f.name) for f in fields(PriorArchitecture)})
        if self.size is None:
            return arch
        default, preset = PriorArchitecture(), SIZES[self.size]
        clash = [k for k, v in preset.items() if getattr(arch, k) not in (v, getattr(default, k))]
        if clash:
            raise ConfigError(f"model.size={self.size} sets {', '.join(f'{k}={preset[k]}' for k in clash)}; "
                              f"drop model.size or the model.{clash[0]} that differs")
        return replace(arch, **preset)


@dataclass
class SampleConfig:
    """Sampling defaults stored with the run (each can be changed per call)."""

    limits: ClassVar[dict[str, str]] = {
        "temperature": ">= 0", "top_k": ">= 0", "top_p": "(0, 1]", "cfg_scale": ">= 0", "batch_size": ">= 1",
        "best_of": ">= 1", "best_of_hard": ">= 0", "hard_share": "[0, 1]"}

    temperature: float = 1.0
    top_k: int = 0  # 0: no top-k filter
    top_p: float = 1.0  # 1: no nucleus filter
    cfg_scale: float = 3.0  # classifier-free guidance; 1 = none
    batch_size: int = 50
    # samples drawn per image asked for, keeping the one with the highest conditional minus null
    # log-likelihood under the prior (re-ranking; lgvq/priors/sampling.py); 1: no re-ranking
    best_of: int = 1
    # a captioner run (trained on the same code store) whose likelihood of the prompt ranks those
    # samples instead of the prior's own score (text priors; lgvq/priors/rerank.py)
    rerank_with: str | None = None
    # > best_of: the share `hard_share` of each batch's images whose best of best_of scores lowest
    # (those the judge is least sure of) get this many samples in all; 0: best_of for every image
    best_of_hard: int = 0
    hard_share: float = 0.5
    # decode over preallocated keys and values (lgvq/priors/static_cache.py; false: x-transformers'
    # growing cache): the same tokens; compile_step on CUDA compiles the step as a CUDA graph
    static_cache: bool = True
    compile_step: bool = False


@dataclass
class FinetuneConfig:
    """Fine-tuning a trained prior (`init_from`) on new data: what makes the new parts learn and
    the old ones stay (docs/results.md#fine-tuning-a-colour-the-prior-never-saw measures each)."""

    limits: ClassVar[dict[str, str]] = {"replay_fraction": "[0, 1)", "new_data_fraction": "[0, 1)",
                                        "freeze_backbone_steps": ">= 0"}

    # classes the old prior never trained on (new ones, or ones absent from its store): `random` keeps
    # the fresh init; `mean` starts each at a draw from a Gaussian fitted to the trained rows (a typical
    # class embedding); `names` at the mean of the trained rows whose class names share a word with its
    # name ("purple circle": the average circle; `mean` where none does). On shapes neither beat
    # `random` over several training seeds: what the new classes lack is images (new_data_fraction)
    new_class_init: Literal["mean", "names", "random"] = "random"
    freeze_backbone_steps: int = 0  # the first steps train only the condition (class rows, prompt reader)
    replay_store: str | None = None  # the old data's code store, mixed into every batch
    replay_fraction: float = 0.0  # share of each batch drawn from replay_store
    # share of each batch drawn from the store's images that are new to the init_from prior (classes it
    # never trained on; captions with words its captions never had); 0: the store as it comes. None:
    # 0.25 for class priors, 0.75 for text priors, as measured on shapes (a class prior at 0.5 lost
    # more of its old classes; a new word has no parameters of its own, only images teach it)
    new_data_fraction: float | None = None

    def new_share(self, conditioning: str) -> float:
        if self.new_data_fraction is not None:
            return self.new_data_fraction
        return {"text": 0.75, "class": 0.25}.get(conditioning, 0.0)


@dataclass
class PriorRunConfig:
    name: str = "prior"
    store: str = "runs/codes"  # a code store written by `lgvq encode` (with train/ and validation/)
    init_from: str | None = None  # a prior run (or its model folder) to continue from (fine-tuning)
    model: PriorModelConfig = field(default_factory=PriorModelConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        output_dir="runs/prior", lr=3e-4, betas=[0.9, 0.95], weight_decay=0.0, warmup_steps=100, batch_size=32,
        sample_every=0, checkpoint_every=500))
