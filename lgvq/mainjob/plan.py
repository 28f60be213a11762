"""The main job's plan: which stages run, with which command lines, in what order, and which run
side by side. Building it runs nothing and writes nothing (`--dry-run` prints it).

    [vocab] -> tokenizer -> [encode | evaluate-tokenizer, evaluate-alignment]
            -> [prior, evaluate-prior | captioner, evaluate-captioner, vqa, evaluate-vqa] -> report

A step of the plan is one or two lanes; the lanes of a step run side by side, each a list of
stages one after another. `--stop-after tokenizer` ends with the tokenizer's evaluations,
`--stop-after prior` with the prior's (no heads).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from lgvq.errors import ConfigError
from lgvq.mainjob.matrix import check_choices, default_preset, recipe
from lgvq.runs import PipelineDir


@dataclass(frozen=True)
class PipelineOptions:
    """What `scripts/run_pipeline.sh` / `lgvq pipeline` / `lgvq.api.run_pipeline` are asked to do.
    Overrides are `key=value` strings appended to a stage's config (heads: both heads)."""

    out: str = "runs/pipeline"
    dataset: str = "shapes"
    preset: str | None = None  # None: quick on shapes, full on the paper datasets
    tokenizer: str = "vqgan_lg"
    num_processes: int = 1
    num_prompts: int = 200
    sample_seeds: str = "0,1,2"
    stop_after: str = "all"
    tokenizer_overrides: tuple[str, ...] = ()
    prior_overrides: tuple[str, ...] = ()
    head_overrides: tuple[str, ...] = ()
    data_dir: str | None = None  # paper datasets: the converted folder (default data/DATASET)
    sequential: bool = False  # one stage at a time instead of two lanes side by side

    @property
    def resolved_preset(self) -> str:
        return self.preset or default_preset(self.dataset)

    def check(self) -> None:
        check_choices(self.dataset, self.resolved_preset, self.tokenizer, self.stop_after)
        if self.num_processes < 1 or self.num_prompts < 1:
            raise ConfigError(f"--num-processes and --num-prompts must be at least 1 "
                              f"(got {self.num_processes} and {self.num_prompts})")
        seeds = self.sample_seeds.split(",")
        if not all(s.strip().lstrip("-").isdigit() for s in seeds):
            raise ConfigError(f"--sample-seeds must be whole numbers separated by commas (got {self.sample_seeds})")


@dataclass(frozen=True)
class Stage:
    """One stage: its name (OUT/logs/NAME.log, OUT/.stages/NAME.done) and command line, as a user
    would type it (it starts with `lgvq` or `accelerate launch ... -m lgvq`)."""

    name: str
    argv: tuple[str, ...]

    def line(self) -> str:
        """`== NAME: COMMAND`, the dry-run listing's line (arguments joined by spaces, unquoted:
        the listing's text is what a study's plan hash is taken over)."""
        return f"== {self.name}: {' '.join(self.argv)}"

    def shell(self) -> str:
        return shlex.join(self.argv)


@dataclass(frozen=True)
class Plan:
    options: PipelineOptions
    steps: tuple[tuple[tuple[Stage, ...], ...], ...]  # step -> lanes -> stages
    folder: PipelineDir = field(init=False)

    def __post_init__(self):
        object.__setattr__(self, "folder", PipelineDir(Path(self.options.out)))

    @property
    def stages(self) -> list[Stage]:
        """Every stage, in the order of the dry-run listing (a step's first lane, then its second)."""
        return [stage for step in self.steps for lane in step for stage in lane]

    def listing(self) -> str:
        return "".join(stage.line() + "\n" for stage in self.stages)


def plan_pipeline(options: PipelineOptions) -> Plan:
    """The stages `options` run. Raises ConfigError for a choice outside the matrix, and
    InputFileError for a paper dataset that has not been converted yet."""
    options.check()
    preset = options.resolved_preset
    r = recipe(options.dataset, preset, options.data_dir)
    tok = options.tokenizer
    run = PipelineDir(Path(options.out))
    if options.num_processes > 1:
        launch = ("accelerate", "launch", "--multi_gpu", "--num_processes", str(options.num_processes), "-m", "lgvq")
    else:
        launch = ("lgvq",)

    def configs(files) -> tuple[str, ...]:
        return tuple(arg for f in files for arg in ("--config", f))

    tokenizer_configs = list(r.tokenizer)
    tokenizer_extra = [*r.tokenizer_overrides, *options.tokenizer_overrides]
    prior_extra = list(options.prior_overrides)
    if tok.startswith("cvq"):
        tokenizer_configs.append(r.cvq)
    if tok.startswith("vqct"):
        tokenizer_configs.append(r.vqct)
        tokenizer_extra.append(f"model.quantizer.vqct.vocab={run.vocab}")
        if preset == "quick":  # several tokens per grid cell, which the quick prior's 2 x 2 blocks cannot group
            prior_extra.insert(0, "model.group_size=1")
    aligned = tok.endswith("_lg")
    if aligned:
        tokenizer_configs.append(r.lgvq)
    model = f"{run.tokenizer.model}"
    heads = tuple(options.head_overrides)

    def stage(name: str, *argv: str) -> Stage:
        return Stage(name, tuple(argv))

    def trained(name: str, verb: str, files, *extra: str) -> Stage:
        return stage(name, *launch, verb, *configs(files), "--resume", "latest", *extra)

    vocab = stage("vocab", "lgvq", "build-vocab", *r.vocab_args, "--out", f"{run.vocab}")
    tokenizer = trained("tokenizer", "train-tokenizer", tokenizer_configs, f"train.output_dir={run.tokenizer.root}",
                        f"lgvq.text_cache_dir={run.text_cache}", *tokenizer_extra)
    evaluations = [stage("evaluate-tokenizer", "lgvq", "evaluate-tokenizer", "--model", model, "--no-fid")]
    if aligned:
        evaluations.append(stage("evaluate-alignment", "lgvq", "evaluate-alignment", "--model", model))
    encode = stage("encode", "lgvq", "encode", "--tokenizer", model, "--out", f"{run.codes.root}", *r.encode_args,
                   "--text-cache-dir", f"{run.text_cache}")
    store = f"store={run.codes.root}"
    prior = [trained("prior", "train-prior", r.prior, store, f"train.output_dir={run.prior.root}", *prior_extra),
             stage("evaluate-prior", "lgvq", "evaluate-prior", "--prior", f"{run.prior.root}", "--num-prompts",
                   str(options.num_prompts), "--seeds", options.sample_seeds)]
    head_lane = []
    if r.captioner:
        head_lane += [trained("captioner", "train-captioner", r.captioner, store,
                              f"train.output_dir={run.captioner.root}", *heads),
                      stage("evaluate-captioner", "lgvq", "evaluate-head", "--model", f"{run.captioner.root}",
                            "--limit", str(options.num_prompts))]
    if r.vqa:
        head_lane += [trained("vqa", "train-vqa", r.vqa, store, f"train.output_dir={run.vqa.root}", *heads),
                      stage("evaluate-vqa", "lgvq", "evaluate-head", "--model", f"{run.vqa.root}")]

    steps: list[tuple[tuple[Stage, ...], ...]] = []
    if tok.startswith("vqct"):
        steps.append(((vocab,),))
    steps.append(((tokenizer,),))
    if options.stop_after == "tokenizer":
        steps.append(((evaluations[0],), tuple(evaluations[1:])))
    else:
        steps.append(((encode,), tuple(evaluations)))
        if options.stop_after == "prior":
            steps += [((prior[0],),), ((prior[1],),)]
        else:
            steps.append((tuple(prior), tuple(head_lane)))
    return Plan(options, tuple(tuple(lane for lane in step if lane) for step in steps))
