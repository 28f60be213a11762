"""The one training loop every stage uses.

A stage describes itself as a `TrainingTask` (its models, optimizers, loss step, exports); the
`Trainer` does the rest with `accelerate`: devices and processes, mixed precision, gradient
accumulation, clipping, warmup + cosine schedules, EMA, TensorBoard logs, a progress bar,
periodic previews, atomic rotating checkpoints, resume, and a stop on a non-finite loss.

Checkpoints are written only from finite weights, so every checkpoint in the rotation is one a
diverged run can go back to; a resume skips damaged checkpoints for the newest intact one; a
checkpoint that cannot be written (disk full, no permission) stops the run with a message and
leaves the previous checkpoints as they were.

Reproducibility: batch k of the data stream is fixed by the config (lgvq.data.loader), the RNGs
travel in the checkpoint, so on CPU a run killed and resumed ends bitwise equal to one that
never stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from torch import nn
from tqdm.auto import tqdm

from lgvq.config import ConfigError, TrainConfig
from lgvq.devices import resolve_mixed_precision
from lgvq.errors import OutputWriteError, TrainingDiverged, describe_write_error, write_errno
from lgvq.runs import RunDir
from lgvq.training import checkpoint as ckpt
from lgvq.training.ema import build_ema, load_ema, save_ema
from lgvq.training.optim import build_optimizer
from lgvq.training.schedule import build_scheduler

log = logging.getLogger(__name__)


@dataclass
class OptimizerSpec:
    """One optimizer over one named module, or over the part of it that `select` picks."""

    module: str
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    kind: str = "adam"  # adam | muon (lgvq/training/optim.py)
    select: Callable[[nn.Module], list[nn.Parameter]] | None = None  # None: all the module's parameters

    @property
    def name(self) -> str:
        return self.module if self.kind == "adam" else f"{self.module}/{self.kind}"


def muon_and_adam(module: str, train: TrainConfig,
                  matrices: Callable[[nn.Module], list[nn.Parameter]]) -> list[OptimizerSpec]:
    """`train.optimizer: muon`: Muon for the weights `matrices` picks (at `train.muon_lr`, else
    `train.lr`), Adam for every other parameter of the module."""

    def the_rest(m: nn.Module) -> list[nn.Parameter]:
        chosen = {id(p) for p in matrices(m)}
        return [p for p in m.parameters() if id(p) not in chosen]

    return [OptimizerSpec(module, train.muon_lr or train.lr, weight_decay=train.weight_decay, kind="muon",
                          select=matrices),
            OptimizerSpec(module, train.lr, tuple(train.betas), train.weight_decay, select=the_rest)]


class StepContext:
    """Handed to `TrainingTask.training_step`: backward with accumulation scaling, and the
    prepared (possibly DDP-wrapped) and plain modules."""

    def __init__(self, trainer: Trainer):
        self._trainer = trainer
        self.losses: list[torch.Tensor] = []

    @property
    def modules(self) -> dict[str, nn.Module]:
        return self._trainer.modules

    def unwrap(self, name: str) -> nn.Module:
        return self._trainer.accelerator.unwrap_model(self._trainer.modules[name])

    def backward(self, loss: torch.Tensor) -> None:
        self.losses.append(loss.detach())
        self._trainer.accelerator.backward(loss / self._trainer.cfg.grad_accum)


class TrainingTask:
    """What a stage plugs into the Trainer. Subclasses override the methods below."""

    #: module whose weights are exported (and averaged by EMA)
    main_module: str = "model"
    #: logged values shown in the progress bar
    progress_keys: tuple[str, ...] = ("total",)

    def build_modules(self) -> dict[str, nn.Module]:
        """Trainable modules by name, built after the seed is set."""
        raise NotImplementedError

    def optimizer_specs(self) -> list[OptimizerSpec]:
        raise NotImplementedError

    def train_batches(self, start_batch: int, rank: int, world_size: int) -> Iterator[dict]:
        """Infinite stream of training batches beginning at batch `start_batch` of this process."""
        raise NotImplementedError

    def training_step(self, batch: dict, step: int, ctx: StepContext) -> dict[str, torch.Tensor]:
        """Forward one micro-batch, call `ctx.backward` on each loss, return scalars to log."""
        raise NotImplementedError

    def progress_metrics(self, modules: dict[str, nn.Module]) -> dict[str, float]:
        """Extra numbers for the progress bar and logs (e.g. codebook usage)."""
        return {}

    def preview(self, model: nn.Module, step: int, out_dir: Path) -> None:
        """Write a preview image (e.g. a reconstruction grid) for `step`."""

    def export(self, model: nn.Module, out_dir: Path) -> None:
        """Save the trained main module (save_pretrained)."""
        raise NotImplementedError


def check_process_group(num_processes: int) -> None:
    """torchrun-style launchers on a machine without GPUs leave every rank alone in a process
    group of one unless accelerate is told to use the CPU; each would then write the same run."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and num_processes != launched:
        raise RuntimeError(
            f"launched as {launched} processes, but accelerate set up {num_processes} "
            f"(no GPU here). For several CPU processes run: ACCELERATE_USE_CPU=true accelerate launch "
            f"--multi_gpu --num_processes {launched} -m lgvq ...")


def _move_batch(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


class Trainer:
    def __init__(self, task: TrainingTask, cfg: TrainConfig, run_dir: str | Path, resume: str | None = None,
                 tracker_config: dict | None = None, on_start: Callable[[], None] | None = None):
        """`on_start`: called once the models are built and the checkpoint restored, before the
        first step (the run's record is written there, so a resume that fails changes nothing)."""
        self.task, self.cfg = task, cfg
        self.on_start = on_start
        self.run_dir = Path(run_dir)
        self.run = RunDir(self.run_dir)
        self.ckpt_root = self.run.checkpoints
        self.resume = resume
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        self.accelerator = Accelerator(
            mixed_precision=resolve_mixed_precision(cfg.mixed_precision), log_with="tensorboard",
            step_scheduler_with_optimizer=False,
            project_config=ProjectConfiguration(project_dir=str(self.run_dir),
                                                logging_dir=str(self.run.logs)))
        self.tracker_config = tracker_config or {}
        self.step = 0
        check_process_group(self.accelerator.num_processes)

    # -- setup -------------------------------------------------------------------------------
    def setup(self) -> None:
        """Build the modules, optimizers and schedulers and prepare them (`fit` starts with it)."""
        acc, cfg = self.accelerator, self.cfg
        set_seed(cfg.seed)
        modules = self.task.build_modules()
        self.specs = specs = self.task.optimizer_specs()
        if cfg.optimizer != "adam" and not any(s.kind == cfg.optimizer for s in specs):
            raise ConfigError(f"train.optimizer={cfg.optimizer}: this stage ({', '.join(modules)}) has no "
                              f"weight matrices for it (priors and tokenizers have); use train.optimizer=adam")
        optimizers = [build_optimizer(s.select(modules[s.module]) if s.select else modules[s.module].parameters(),
                                      s.kind, s.lr, s.betas, s.weight_decay) for s in specs]
        schedulers = [build_scheduler(o, cfg.warmup_steps, cfg.max_steps, cfg.schedule, cfg.min_lr_ratio)
                      for o in optimizers]
        names = list(modules)
        prepared = acc.prepare(*[modules[n] for n in names], *optimizers, *schedulers)
        if not isinstance(prepared, (list, tuple)):
            prepared = [prepared]
        self.modules = self.prepared_modules = dict(zip(names, prepared[:len(names)]))
        self.optimizers = list(prepared[len(names):len(names) + len(optimizers)])
        self.schedulers = list(prepared[len(names) + len(optimizers):])
        if cfg.compile:
            # compiled after prepare(): accelerate keeps the plain modules, so checkpoints keep their
            # parameter names and a run resumes with or without compile
            self.modules = {n: torch.compile(m) for n, m in self.modules.items()}
        self.opt_params = [[p for g in o.param_groups for p in g["params"]] for o in self.optimizers]
        main = acc.unwrap_model(self.modules[self.task.main_module])
        self.ema = build_ema(main, cfg.ema_decay) if cfg.ema_decay > 0 else None
        if self.ema is not None:
            self.ema.to(acc.device)

    def _restore(self) -> None:
        path = ckpt.resolve_resume(self.ckpt_root, self.resume, self.accelerator.num_processes)
        if path is None:
            if self.resume and self.accelerator.is_main_process:
                log.debug("no checkpoint in %s; starting from step 0", self.ckpt_root)
            return
        self.accelerator.load_state(str(path))
        state = ckpt.read_state(path)
        self.step = int(state["step"])
        if self.ema is not None:
            load_ema(self.ema, path)
            self.ema.to(self.accelerator.device)
        if self.accelerator.is_main_process:
            log.info("resumed from %s at step %d", path, self.step)

    # -- checkpoints ---------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        self._check_weights_finite()
        tmp, final = ckpt.temporary_dir(self.ckpt_root, self.step), ckpt.final_dir(self.ckpt_root, self.step)
        try:
            if acc.is_main_process:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            acc.save_state(str(tmp))
            acc.wait_for_everyone()
            if acc.is_main_process:
                if self.ema is not None:
                    save_ema(self.ema, tmp)
                ckpt.write_state(tmp, {"step": self.step, "max_steps": self.cfg.max_steps})
                ckpt.commit(tmp, final)
                ckpt.prune(self.ckpt_root, self.cfg.keep_checkpoints)
        except Exception as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if write_errno(e) is None:
                raise  # not a failed write: a bug
            raise OutputWriteError(f"could not write the checkpoint of step {self.step} to {tmp} "
                                   f"({describe_write_error(e)}); the earlier checkpoints are intact: "
                                   f"{[p.name for p in ckpt.checkpoint_dirs(self.ckpt_root)] or 'none'}. Free "
                                   f"space (or fix the permission) and continue with --resume latest") from e
        acc.wait_for_everyone()
        return final

    def _check_weights_finite(self) -> None:
        """A checkpoint is written only from finite weights: one step with a finite loss can still
        leave non-finite weights (a huge learning rate), and writing them would rotate a good
        checkpoint out for a useless one."""
        bad = [f"{name}.{param}" for name, module in self.modules.items()
               for param, p in self.accelerator.unwrap_model(module).named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise TrainingDiverged(f"non-finite weights after step {self.step} ({len(bad)} tensors, e.g. {bad[0]}); "
                                   f"this step's checkpoint was not written; {self._last_good_hint()}")

    def last_checkpoint(self) -> Path | None:
        """The newest checkpoint that reads back whole with finite weights."""
        return ckpt.newest_intact(self.ckpt_root, self.accelerator.num_processes, check_finite=True)

    def _last_good_hint(self) -> str:
        last = self.last_checkpoint()
        if last is None:
            return "no good checkpoint was written yet: start again with a lower train.lr or more train.warmup_steps"
        return (f"last good checkpoint: {last} (resume with --resume {last} after lowering train.lr "
                f"or raising train.warmup_steps)")

    # -- the loop ------------------------------------------------------------------------------
    def _optimizer_step(self) -> dict[str, float]:
        """Unscale (fp16), clip, step every optimizer, one scaler update (the torch recipe for
        several optimizers; accelerate's per-optimizer update would unscale twice)."""
        scaler = self.accelerator.scaler
        raw = [o.optimizer for o in self.optimizers]
        if scaler is not None:
            for o in raw:
                scaler.unscale_(o)
        norms = {}
        for i, params in enumerate(self.opt_params):  # each optimizer's own (with Muon: its matrices apart)
            if self.cfg.grad_clip > 0:
                norms[f"grad_norm/{self.specs[i].name}"] = float(
                    torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip))
        for o in raw:
            if scaler is not None:
                scaler.step(o)
            else:
                o.step()
        if scaler is not None:
            scaler.update()
        for s in self.schedulers:
            s.step()
        for o in self.optimizers:
            o.zero_grad(set_to_none=True)
        return norms

    def _check_finite(self, ctx: StepContext, logs: dict) -> None:
        bad = torch.tensor(float(any(not torch.isfinite(loss).all() for loss in ctx.losses)),
                           device=self.accelerator.device)
        if float(self.accelerator.reduce(bad, "max")) > 0:
            terms = {k: round(float(v), 4) for k, v in logs.items()}
            raise TrainingDiverged(f"non-finite loss at step {self.step + 1} ({terms}); {self._last_good_hint()}")

    def fit(self) -> Path:
        """Train to `max_steps` (from a checkpoint if resuming); returns the exported model folder."""
        acc, cfg = self.accelerator, self.cfg
        self.setup()
        self._restore()
        if acc.is_main_process:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if self.on_start is not None:
                self.on_start()
        acc.init_trackers("train", config=self.tracker_config)
        batches = self.task.train_batches(self.step * cfg.grad_accum, acc.process_index, acc.num_processes)
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not acc.is_main_process, dynamic_ncols=True,
                   desc=f"train {self.run_dir.name}")
        for m in self.modules.values():
            m.train()
        running: dict[str, float] = defaultdict(float)
        skipped = 0
        try:
            while self.step < cfg.max_steps:
                logs, unreadable = self.train_step(batches)
                skipped += unreadable
                for k, v in logs.items():
                    running[k] += v
                bar.update(1)
                if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                    self._log(running, skipped, bar)
                    running.clear()
                if cfg.sample_every and (self.step % cfg.sample_every == 0 or self.step == cfg.max_steps):
                    self._preview()
                if self.step % cfg.checkpoint_every == 0 or self.step == cfg.max_steps:
                    self.save_checkpoint()
        finally:
            bar.close()
        if skipped and acc.is_main_process:
            log.warning("skipped %d unreadable images during training", skipped)
        out = self.export()
        acc.end_training()
        return out

    def train_step(self, batches: Iterator[dict]) -> tuple[dict[str, float], int]:
        """One optimisation step as `fit` takes it (after `setup`): train.grad_accum batches from
        `batches`, forward and backward under the run's precision, the finite-loss check, clipping,
        every optimizer and scheduler, EMA. Returns the logged values and how many unreadable
        images the batches skipped."""
        acc, cfg = self.accelerator, self.cfg
        ctx = StepContext(self)
        logs: dict[str, torch.Tensor] = {}
        skipped = 0
        for micro in range(cfg.grad_accum):
            batch = next(batches)
            skipped += batch.get("skipped", 0)
            while len(batch["index"]) == 0:  # every image of the batch was unreadable
                batch = next(batches)
                skipped += batch.get("skipped", 0)
            batch = _move_batch(batch, acc.device)
            sync = micro == cfg.grad_accum - 1
            with contextlib.ExitStack() as stack:
                if not sync and acc.num_processes > 1:
                    for m in self.prepared_modules.values():
                        stack.enter_context(acc.no_sync(m))
                with acc.autocast():
                    logs = self.task.training_step(batch, self.step, ctx)
        self._check_finite(ctx, logs)
        logs = {k: float(v) for k, v in logs.items()} | self._optimizer_step()
        if self.ema is not None:
            self.ema.step(acc.unwrap_model(self.modules[self.task.main_module]).parameters())
        self.step += 1
        return logs, skipped

    def _log(self, running: dict[str, float], skipped: int, bar: tqdm) -> None:
        n = self.cfg.log_every if self.step % self.cfg.log_every == 0 else (self.step % self.cfg.log_every) or 1
        values = {k: v / n for k, v in running.items()}
        values |= self.task.progress_metrics(self.modules)
        values["lr"] = self.schedulers[0].get_last_lr()[0]
        values["skipped_images"] = float(skipped)
        self.accelerator.log(values, step=self.step)
        shown = {k: f"{v:.4g}" for k, v in values.items() if k in self.task.progress_keys}
        bar.set_postfix(shown, refresh=False)

    def _preview(self) -> None:
        if not self.accelerator.is_main_process:
            return
        model = self.accelerator.unwrap_model(self.modules[self.task.main_module])
        was_training = model.training
        model.eval()
        with torch.no_grad():
            self.task.preview(model, self.step, self.run.samples)
        model.train(was_training)

    def export(self) -> Path:
        """Write the final main module to RUN/model (EMA weights when EMA is on), atomically."""
        acc = self.accelerator
        out = self.run.model
        acc.wait_for_everyone()
        if acc.is_main_process:
            model = acc.unwrap_model(self.modules[self.task.main_module])
            tmp = self.run.model_staging
            shutil.rmtree(tmp, ignore_errors=True)
            if self.ema is not None:
                backup = [p.detach().clone() for p in model.parameters()]
                self.ema.copy_to(model.parameters())
                self.task.export(model, tmp)
                for p, b in zip(model.parameters(), backup):
                    p.data.copy_(b)
            else:
                self.task.export(model, tmp)
            if out.exists():
                shutil.rmtree(out)
            tmp.replace(out)
        acc.wait_for_everyone()
        return out
