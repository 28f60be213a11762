"""The shared training loop: resume after SIGKILL, divergence stop, checkpoints, two processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lgvq.config import load_config
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.training import TokenizerTask
from lgvq.training import checkpoint as ckpt
from lgvq.training.trainer import Trainer, TrainingDiverged
from tests.conftest import REPO, TINY_TOKENIZER, write_config

ENV = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}


def lgvq(*args, script=None, env=None):
    cmd = [sys.executable, str(script) if script else "-m", *([] if script else ["lgvq"]), *args]
    return subprocess.run(cmd, cwd=REPO, env=ENV | (env or {}), capture_output=True, text=True, timeout=600)


def config(tmp_path, name, **train):
    data = yaml.safe_load(yaml.safe_dump(TINY_TOKENIZER))
    data["train"] |= {"output_dir": str(tmp_path / name), "ema_decay": 0.9} | train
    return write_config(tmp_path / f"{name}.yaml", data)


def weights(run: Path) -> dict[str, torch.Tensor]:
    files = sorted((run / "model").glob("*.safetensors"))
    assert files, f"no exported model in {run}"
    return load_file(str(files[0]))


@pytest.mark.slow
def test_sigkill_then_resume_is_bitwise_equal(tmp_path):
    straight = lgvq("train-tokenizer", "--config", str(config(tmp_path, "straight")))
    assert straight.returncode == 0, straight.stderr
    cfg = config(tmp_path, "killed")
    killed = lgvq("train-tokenizer", "--config", str(cfg), script=Path(__file__).with_name("kill_during_training.py"),
                  env={"LGVQ_TEST_KILL_AT": "5"})
    assert killed.returncode == -9, killed.stderr
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path / "killed" / "checkpoints")] == ["step-0000002",
                                                                                          "step-0000004"]
    again = lgvq("train-tokenizer", "--config", str(cfg))
    assert again.returncode == 2 and "--resume latest" in again.stderr  # refuses to overwrite the run
    resumed = lgvq("train-tokenizer", "--config", str(cfg), "--resume", "latest")
    assert resumed.returncode == 0, resumed.stderr
    a, b = weights(tmp_path / "straight"), weights(tmp_path / "killed")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    run = tmp_path / "killed"
    assert (run / "config.yaml").is_file() and any((run / "logs").rglob("events.out.tfevents*"))
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == ["step-0000003.png", "step-0000006.png"]


class NaNAtBatch(TokenizerTask):
    """Feeds one batch of NaN pixels at batch `bad`, as a broken data source would."""

    bad = 3

    def train_batches(self, start_batch, rank, world_size):
        for i, batch in enumerate(super().train_batches(start_batch, rank, world_size), start=start_batch):
            if i == self.bad:
                batch["image"] = torch.full_like(batch["image"], float("nan"))
            yield batch


def test_nan_loss_stops_with_last_good_checkpoint(tmp_path):
    cfg = load_config(TokenizerRunConfig, config(tmp_path, "nan"))
    trainer = Trainer(NaNAtBatch(cfg), cfg.train, tmp_path / "nan")
    with pytest.raises(TrainingDiverged) as e:
        trainer.fit()
    msg = str(e.value)
    assert "step 4" in msg and "step-0000002" in msg and "--resume" in msg
    assert not (tmp_path / "nan" / "model").exists()


def test_checkpoints_atomic_and_rotated(tmp_path):
    cfg = load_config(TokenizerRunConfig, config(tmp_path, "rot", checkpoint_every=1, keep_checkpoints=2))
    root = tmp_path / "rot" / "checkpoints"
    (root / ".tmp-step-0000009").mkdir(parents=True)  # a save that was cut off
    (root / ".tmp-step-0000009" / "model.safetensors").write_bytes(b"partial")
    assert ckpt.resolve_resume(root, "latest") is None  # never resumed from
    Trainer(TokenizerTask(cfg), cfg.train, tmp_path / "rot").fit()
    assert [p.name for p in ckpt.checkpoint_dirs(root)] == ["step-0000005", "step-0000006"]
    assert not list(root.glob(".tmp-*"))
    state = ckpt.read_state(root / "step-0000006")
    assert state["step"] == 6
    assert (root / "step-0000006" / "ema.safetensors").is_file()
    assert not list((root / "step-0000006").glob("custom_checkpoint*"))  # nothing pickled by us


def test_resume_from_missing_path_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        ckpt.resolve_resume(tmp_path, str(tmp_path / "nowhere"))


@pytest.mark.slow
def test_two_process_cpu_run(tmp_path):
    cfg = config(tmp_path, "ddp", max_steps=3, checkpoint_every=3)
    # accelerate's `--cpu --num_processes N` starts N processes only through MPI; its torchrun
    # launcher with ACCELERATE_USE_CPU gives a real two-process gloo group on any machine
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "lgvq", "train-tokenizer", "--config", str(cfg)]
    done = subprocess.run(cmd, cwd=REPO, env=ENV | {"ACCELERATE_USE_CPU": "true"}, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("tokenizer saved") == 1  # only the main process exports
    step = tmp_path / "ddp" / "checkpoints" / "step-0000003"
    assert (step / "random_states_0.pkl").is_file() and (step / "random_states_1.pkl").is_file()
    assert weights(tmp_path / "ddp")


def test_ranks_left_alone_are_refused(monkeypatch):
    from lgvq.training.trainer import check_process_group

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=true"):
        check_process_group(1)  # what accelerate reports for a rank left alone
    check_process_group(2)


def tokenizer_weights_after(tmp_path, name, **train):
    data = yaml.safe_load(yaml.safe_dump(TINY_TOKENIZER))
    data["loss"]["disc_weight"] = 0.0  # no BatchNorm discriminator: batch splits are then exact
    data["model"]["quantizer"]["dead_code_restart"] = False
    data["train"] |= {"output_dir": str(tmp_path / name), "max_steps": 2, "sample_every": 0,
                      "checkpoint_every": 100, "grad_clip": 0.0} | train
    cfg = load_config(TokenizerRunConfig, write_config(tmp_path / f"{name}.yaml", data))
    Trainer(TokenizerTask(cfg), cfg.train, tmp_path / name).fit()
    return weights(tmp_path / name)


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    full = tokenizer_weights_after(tmp_path, "full", batch_size=8, grad_accum=1)
    accumulated = tokenizer_weights_after(tmp_path, "accum", batch_size=4, grad_accum=2)
    for k in full:
        if "usage" not in k:  # the usage window counts forward passes (micro-batches)
            assert torch.allclose(full[k], accumulated[k], atol=1e-5), k


def test_bf16_mixed_precision_trains_on_cpu(tmp_path):
    w = tokenizer_weights_after(tmp_path, "bf16", mixed_precision="bf16")
    assert all(torch.isfinite(t).all() for t in w.values())


def test_warmup_then_cosine_schedule():
    from lgvq.training.schedule import lr_factor

    f = [lr_factor(s, warmup_steps=10, max_steps=110, schedule="cosine", min_lr_ratio=0.1) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))
    assert lr_factor(50, 10, 110, "constant", 0.1) == 1.0
    # linear: a straight line from the peak after warmup to min_lr_ratio at the end
    f = [lr_factor(s, warmup_steps=10, max_steps=110, schedule="linear", min_lr_ratio=0.1) for s in range(111)]
    assert f[9] == pytest.approx(1.0) and f[60] == pytest.approx(0.55) and f[110] == pytest.approx(0.1)
    assert f[35] == pytest.approx(0.775) and f[85] == pytest.approx(0.325)  # cosine: 0.87 and 0.23


def test_fused_adam_takes_the_same_steps_as_torch_default():
    from lgvq.training.optim import build_adam

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.GELU(), torch.nn.Linear(16, 1))
    reference = [p.detach().clone().requires_grad_() for p in model.parameters()]
    fused = build_adam(model.parameters(), lr=1e-2, betas=(0.5, 0.9), weight_decay=0.01)
    plain = torch.optim.Adam(reference, lr=1e-2, betas=(0.5, 0.9), weight_decay=0.01, foreach=False)
    assert fused.defaults["fused"]
    x = torch.randn(32, 8)
    for _ in range(5):
        for params, opt in ((list(model.parameters()), fused), (reference, plain)):
            h = torch.nn.functional.gelu(x @ params[0].t() + params[1])
            ((h @ params[2].t() + params[3]) ** 2).mean().backward()
            opt.step()
            opt.zero_grad()
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(model.parameters(), reference))


def test_matrix_muon_is_torchs_muon_on_matrices_and_reads_filters_as_matrices():
    """MatrixMuon: on a 2-D weight the same steps as torch.optim.Muon; a convolution's filters
    (out, in, kh, kw) take the steps torch's Muon takes on the matrix (out, in * kh * kw)."""
    from lgvq.training.optim import MatrixMuon

    torch.manual_seed(0)
    start = torch.randn(8, 12)
    matrix, filters, reference = (torch.nn.Parameter(start.clone().view(shape))
                                  for shape in ((8, 12), (8, 3, 2, 2), (8, 12)))
    options = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    optimizers = [MatrixMuon([matrix], ns_dtype=torch.bfloat16, **options),
                  MatrixMuon([filters], ns_dtype=torch.bfloat16, **options), torch.optim.Muon([reference], **options)]
    for _ in range(3):
        grad = torch.randn(8, 12)
        for p, opt in zip((matrix, filters, reference), optimizers):
            p.grad = grad.clone().view(p.shape)
            opt.step()
    assert not torch.equal(reference, start)
    assert torch.equal(matrix, reference) and torch.equal(filters.view(8, 12), reference)
    with pytest.raises(ValueError, match="rank 2 or more"):
        MatrixMuon([torch.nn.Parameter(torch.zeros(4))], lr=0.01)


@pytest.mark.parametrize("nesterov", [True, False])
def test_matrix_muon_iterates_in_fp32_where_bf16_is_emulated(monkeypatch, nesterov):
    """Without native bf16 (an AVX2-only CPU) MatrixMuon runs Newton-Schulz in fp32: no bf16
    matmul, and steps within bf16's rounding of torch's."""
    import lgvq.training.optim as optim

    monkeypatch.setattr(optim, "native_bf16", lambda device: False)
    torch.manual_seed(0)
    start = torch.randn(16, 24)
    ours, reference = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    options = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw", nesterov=nesterov)
    opt, reference_opt = optim.MatrixMuon([ours], **options), torch.optim.Muon([reference], **options)
    assert opt.iteration_dtype(ours.device) == torch.float32
    grads = [torch.randn(16, 24) for _ in range(3)]
    dtypes, real_addmm = [], torch.addmm
    with monkeypatch.context() as patch:
        patch.setattr(torch, "addmm", lambda *a, **k: dtypes.append(a[1].dtype) or real_addmm(*a, **k))
        for grad in grads:
            ours.grad = grad.clone()
            opt.step()
    for grad in grads:
        reference.grad = grad.clone()
        reference_opt.step()
    assert set(dtypes) == {torch.float32}
    assert not torch.equal(reference, start)
    step = 0.02 * 0.2 * 24 ** 0.5  # one update's size (match_rms_adamw)
    assert torch.allclose(ours, reference, atol=0.1 * step) and not torch.equal(ours, reference)


def test_tokenizer_muon_trains_the_autoencoder_matrices_and_adam_the_rest(tmp_path):
    """train.optimizer=muon on a tokenizer: the autoencoder's weights of rank 2 or more (convolution
    filters too) go to Muon at train.muon_lr, the codebook and every other parameter to Adam at
    train.lr, each exactly once; every Muon weight is trained."""
    from lgvq.tokenizers.training import autoencoder_matrices
    from lgvq.training.optim import MatrixMuon

    cfg = load_config(TokenizerRunConfig, config(tmp_path, "muon", max_steps=4, checkpoint_every=100),
                      ["train.optimizer=muon", "train.muon_lr=0.02"])
    start = {}

    def keep_start():
        start.update({id(p): p.detach().clone() for p in trainer.modules["tokenizer"].parameters()})

    trainer = Trainer(TokenizerTask(cfg), cfg.train, tmp_path / "muon", on_start=keep_start)
    trainer.fit()
    tokenizer = trainer.modules["tokenizer"]
    muon, adam = (o.optimizer for o in trainer.optimizers[:2])  # then the discriminator's Adam
    assert isinstance(muon, MatrixMuon) and isinstance(adam, torch.optim.Adam)
    assert muon.param_groups[0]["initial_lr"] == 0.02 and adam.param_groups[0]["initial_lr"] == cfg.train.lr
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adam = {id(p) for g in adam.param_groups for p in g["params"]}
    assert in_muon == {id(p) for p in autoencoder_matrices(tokenizer)} and not in_muon & in_adam
    assert in_muon | in_adam == {id(p) for p in tokenizer.parameters()}
    assert any(p.ndim == 4 for p in autoencoder_matrices(tokenizer))
    assert id(tokenizer.quantizer.codebook.weight) in in_adam
    assert all(not torch.equal(p, start[id(p)]) for p in autoencoder_matrices(tokenizer))


def test_auto_mixed_precision_trains(tmp_path):
    w = tokenizer_weights_after(tmp_path, "auto", mixed_precision="auto")
    assert all(torch.isfinite(t).all() for t in w.values())
