"""The main job's plan: which stages run, with which command lines, in what order, and which run
side by side. Building it runs nothing and writes nothing (`--dry-run` prints it).

    [vocab] -> tokenizer -> [encode | evaluate-tokenizer, evaluate-alignment]
            -> [prior, evaluate-prior | captioner, evaluate-captioner, vqa, evaluate-vqa]
            -> [evaluate-prior-reranked (the quick preset)] -> report

A step of the plan is one or two lanes; the lanes of a step run side by side, each a list of
stages one after another. `--stop-after tokenizer` ends with the tokenizer's evaluations,
`--stop-after prior` with the prior's (no heads).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from lgvq.errors import ConfigError
from lgvq.mainjob.matrix import DatasetRecipe, check_choices, default_preset, recipe
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

    @property
    def folder(self) -> PipelineDir:
        return PipelineDir(Path(self.options.out))

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
    build = StageBuilder(options, recipe(options.dataset, options.resolved_preset, options.data_dir))
    steps: list[tuple[tuple[Stage, ...], ...]] = []
    if build.vqct:
        steps.append(((build.vocab(),),))
    steps.append(((build.tokenizer(),),))
    evaluations = build.evaluations()
    if options.stop_after == "tokenizer":
        steps.append(((evaluations[0],), tuple(evaluations[1:])))
    else:
        steps.append(((build.encode(),), tuple(evaluations)))
        prior = build.prior()
        if options.stop_after == "prior":
            steps += [((stage,),) for stage in prior]
        else:
            steps.append((prior, build.heads()))
            if build.r.reranked_best_of and build.r.captioner:
                steps.append(((build.reranked_evaluation(),),))
    return Plan(options, tuple(tuple(lane for lane in step if lane) for step in steps))


class StageBuilder:
    """Each stage's command line for one run: the recipe's config files, the run folder's paths
    (lgvq.runs.PipelineDir) and the user's overrides, in the order the commands have always had
    (a study's plan hash is taken over them)."""

    def __init__(self, options: PipelineOptions, r: DatasetRecipe):
        self.options, self.r = options, r
        self.run = PipelineDir(Path(options.out))
        self.vqct, self.aligned = options.tokenizer.startswith("vqct"), options.tokenizer.endswith("_lg")
        n = options.num_processes
        self.launch = ("accelerate", "launch", "--multi_gpu", "--num_processes", str(n), "-m", "lgvq") if n > 1 \
            else ("lgvq",)
        self.model = str(self.run.tokenizer.model)
        self.store = f"store={self.run.codes.root}"

    def trained(self, name: str, verb: str, files, *extra: str) -> Stage:
        configs = tuple(arg for f in files for arg in ("--config", f))
        return Stage(name, (*self.launch, verb, *configs, "--resume", "latest", *extra))

    def vocab(self) -> Stage:
        return Stage("vocab", ("lgvq", "build-vocab", *self.r.vocab_args, "--out", str(self.run.vocab)))

    def tokenizer(self) -> Stage:
        r, tok = self.r, self.options.tokenizer
        files = [*r.tokenizer, *([r.cvq] if tok.startswith("cvq") else []), *([r.vqct] if self.vqct else []),
                 *([r.lgvq] if self.aligned else [])]
        extra = [*r.tokenizer_overrides, *self.options.tokenizer_overrides,
                 *([f"model.quantizer.vqct.vocab={self.run.vocab}"] if self.vqct else [])]
        return self.trained("tokenizer", "train-tokenizer", files, f"train.output_dir={self.run.tokenizer.root}",
                            f"lgvq.text_cache_dir={self.run.text_cache}", *extra)

    def evaluations(self) -> list[Stage]:
        stages = [Stage("evaluate-tokenizer", ("lgvq", "evaluate-tokenizer", "--model", self.model, "--no-fid"))]
        if self.aligned:
            stages.append(Stage("evaluate-alignment", ("lgvq", "evaluate-alignment", "--model", self.model)))
        return stages

    def encode(self) -> Stage:
        return Stage("encode", ("lgvq", "encode", "--tokenizer", self.model, "--out", str(self.run.codes.root),
                                *self.r.encode_args, "--text-cache-dir", str(self.run.text_cache)))

    def prior(self) -> tuple[Stage, Stage]:
        o, root = self.options, self.run.prior.root
        extra = list(o.prior_overrides)
        if self.vqct and o.resolved_preset == "quick":  # several tokens a cell: no 2 x 2 blocks of the quick prior
            extra.insert(0, "model.group_size=1")
        return (self.trained("prior", "train-prior", self.r.prior, self.store, f"train.output_dir={root}", *extra),
                Stage("evaluate-prior", ("lgvq", "evaluate-prior", "--prior", str(root), "--num-prompts",
                                         str(o.num_prompts), "--seeds", o.sample_seeds)))

    def reranked_evaluation(self) -> Stage:
        """The prior's faithfulness again, each image the best of N samples by the captioner (of more
        for the half of the prompts it is least sure of, with `reranked_best_of_hard`)."""
        o = self.options
        return Stage("evaluate-prior-reranked", (
            "lgvq", "evaluate-prior", "--prior", str(self.run.prior.root), "--num-prompts", str(o.num_prompts),
            "--seeds", o.sample_seeds, "--best-of", str(self.r.reranked_best_of),
            *(("--best-of-hard", str(self.r.reranked_best_of_hard), "--hard-share", "0.5")
              if self.r.reranked_best_of_hard else ()),
            "--rerank-with", str(self.run.captioner.root), "--name", "reranked", "--no-fid"))

    def heads(self) -> tuple[Stage, ...]:
        """Each head the dataset has, trained then evaluated, one after another."""
        stages: list[Stage] = []
        for name, verb, files, run, evaluate in (
                ("captioner", "train-captioner", self.r.captioner, self.run.captioner,
                 ("--limit", str(self.options.num_prompts))),
                ("vqa", "train-vqa", self.r.vqa, self.run.vqa, ())):
            if files:
                stages += [self.trained(name, verb, files, self.store, f"train.output_dir={run.root}",
                                        *self.options.head_overrides),
                           Stage(f"evaluate-{name}", ("lgvq", "evaluate-head", "--model", str(run.root), *evaluate))]
        return tuple(stages)
