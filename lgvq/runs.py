"""Every folder lgvq writes, laid out in one place. Code asks these types for a path; nothing
else spells the names below (the inside of a checkpoint belongs to lgvq.training.checkpoint, the
inside of a store split to lgvq.data.code_store).

    RUN (a training run, `train.output_dir`)          STORE (`lgvq encode --out`)
      config.yaml      the resolved config               train/, validation/   one split each
      model/           the trained model                 tokenizer/            the stage-one model
      tokenizer/       stage two: the stage-one model
      checkpoints/     step-NNNNNNN/ (resumable)       PIPELINE (`scripts/run_pipeline.sh --out`)
      logs/            TensorBoard                       tokenizer/ prior/ captioner/ vqa/   RUNs
      samples/         preview grids                     codes/                              a STORE
      eval/            NAME.json, samples*/, NAME/       vocab/ text_cache/ logs/ plots/ .stages/
                                                         pipeline.json commands.json timings.json
                                                         peak_memory.json wall.json report.md
                                                         report.json result.json
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lgvq.errors import UsageError

MODEL_CONFIG = "config.json"  # what marks a saved model folder (save_pretrained)


@dataclass(frozen=True)
class RunDir:
    """A training run's folder."""

    root: Path

    @classmethod
    def of(cls, path: str | Path) -> RunDir:
        """The run of a run folder or of its model folder (RUN/model)."""
        path = Path(path)
        if path.name == "model" and (path / MODEL_CONFIG).is_file() and not (path / "model").is_dir():
            return cls(path.parent)
        return cls(path)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def model_staging(self) -> Path:
        """Where the model is written before it is renamed to `model` in one step."""
        return self.root / ".tmp-model"

    @property
    def tokenizer(self) -> Path:
        """Stage-two runs: the stage-one model their codes came from."""
        return self.root / "tokenizer"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def samples(self) -> Path:
        return self.root / "samples"

    @property
    def eval_dir(self) -> Path:
        return self.root / "eval"

    def eval_file(self, name: str) -> Path:
        """eval/NAME.json: an evaluation's results."""
        return self.eval_dir / f"{check_evaluation_name(name)}.json"

    def eval_samples(self, seed: int | None = None, name: str | None = None) -> Path:
        """Generated images of an evaluation: eval/samples (the first seed) or eval/samples_seedN;
        those of a named evaluation other than the run's own in eval/NAME/."""
        folder = self.eval_dir / check_evaluation_name(name) if name else self.eval_dir
        return folder / ("samples" if seed is None else f"samples_seed{seed}")


def check_evaluation_name(name: str) -> str:
    """An evaluation's name is a plain file name (it names eval/NAME.json and eval/NAME/)."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise UsageError(f"evaluation name {name!r}: use letters, digits, _ and - (it names RUN/eval/NAME.json)")
    return name


def model_dir(path: str | Path) -> Path:
    """A run folder (RUN) or its model folder (RUN/model) -> the model folder."""
    path = Path(path)
    return path / "model" if (path / "model" / MODEL_CONFIG).is_file() else path


@dataclass(frozen=True)
class StoreDir:
    """A code store's folder: one subfolder per split, and a copy of its tokenizer."""

    root: Path

    def split(self, name: str) -> Path:
        return self.root / name

    @property
    def tokenizer(self) -> Path:
        return self.root / "tokenizer"


@dataclass(frozen=True)
class PipelineDir:
    """The folder of one main-job run (`scripts/run_pipeline.sh`, `lgvq pipeline`, lgvq.mainjob)."""

    root: Path

    @property
    def tokenizer(self) -> RunDir:
        return RunDir(self.root / "tokenizer")

    @property
    def codes(self) -> StoreDir:
        return StoreDir(self.root / "codes")

    @property
    def prior(self) -> RunDir:
        return RunDir(self.root / "prior")

    @property
    def captioner(self) -> RunDir:
        return RunDir(self.root / "captioner")

    @property
    def vqa(self) -> RunDir:
        return RunDir(self.root / "vqa")

    @property
    def vocab(self) -> Path:
        """VQCT's word list (lgvq build-vocab)."""
        return self.root / "vocab"

    @property
    def text_cache(self) -> Path:
        """The captions' text features, computed once by the tokenizer stage and reused by encode."""
        return self.root / "text_cache"

    @property
    def logs(self) -> Path:
        """NAME.log: each stage's output."""
        return self.root / "logs"

    @property
    def stage_marks(self) -> Path:
        """.stages/: NAME.done for each finished stage, NAME.running while one runs (its seconds so far)."""
        return self.root / ".stages"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    @property
    def description(self) -> Path:
        """pipeline.json: dataset, tokenizer kind, prompt count, sampling seeds, overrides per stage."""
        return self.root / "pipeline.json"

    @property
    def commands(self) -> Path:
        """commands.json: each stage's command line."""
        return self.root / "commands.json"

    @property
    def timings(self) -> Path:
        return self.root / "timings.json"

    @property
    def peak_memory(self) -> Path:
        return self.root / "peak_memory.json"

    @property
    def wall_time(self) -> Path:
        """wall.json: the seconds of each invocation of the pipeline that ran stages."""
        return self.root / "wall.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def result_json(self) -> Path:
        """result.json: the run's headline numbers and identity (lgvq.run_result), small enough to keep."""
        return self.root / "result.json"
