"""Nothing lost, nothing hung: diverged runs keep good checkpoints, damaged checkpoints are
skipped, a failed resume changes nothing, code stores know what they were made from, and a full
disk stops a run with a message and its earlier checkpoints intact."""

import json
import logging
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from lgvq.api import encode_store, train
from lgvq.config import load_config
from lgvq.data.export import export_shapes
from lgvq.data.loader import EpochBatchSampler
from lgvq.errors import ConfigError, DataError, StoreError
from lgvq.tokenizers.config import TokenizerRunConfig
from lgvq.tokenizers.training import TokenizerTask
from lgvq.training import checkpoint as ckpt
from lgvq.training.trainer import Trainer, TrainingDiverged
from tests.conftest import REPO, TINY_TOKENIZER, write_config


def tokenizer_config(tmp_path, name, **train_keys):
    data = yaml.safe_load(yaml.safe_dump(TINY_TOKENIZER))
    data["train"] |= {"output_dir": str(tmp_path / name), "sample_every": 0} | train_keys
    return write_config(tmp_path / f"{name}.yaml", data)


def fit(cfg_path, resume=None):
    cfg = load_config(TokenizerRunConfig, cfg_path)
    return Trainer(TokenizerTask(cfg), cfg.train, cfg.train.output_dir, resume=resume).fit()


def finite(folder) -> bool:
    return all(torch.isfinite(t).all() for f in folder.glob("*.safetensors") for t in load_file(f).values()
               if t.is_floating_point())


# -- 1. a diverged run never writes (or names) a checkpoint with non-finite weights ----------------
def test_divergence_names_a_kept_finite_checkpoint(tmp_path):
    # lr 1e6 warmed up over 1000 steps: step 1 (lr 1e3) leaves finite weights, step 2 does not
    cfg = tokenizer_config(tmp_path, "huge_lr", lr=1e6, warmup_steps=1000, checkpoint_every=1, keep_checkpoints=2,
                           max_steps=20)
    with pytest.raises(TrainingDiverged) as e:
        fit(cfg)
    kept = ckpt.checkpoint_dirs(tmp_path / "huge_lr" / "checkpoints")
    assert kept and all(finite(p) for p in kept), [p.name for p in kept if not finite(p)]
    named = re.search(r"last good checkpoint: (\S+)", str(e.value))
    assert named, str(e.value)
    assert Path(named.group(1)) == kept[-1] and finite(kept[-1])  # the newest kept one, whole and finite
    assert ckpt.resolve_resume(kept[-1].parent, "latest") == kept[-1]


def test_divergence_before_the_first_checkpoint_says_none_is_good(tmp_path):
    cfg = tokenizer_config(tmp_path, "early", lr=1e6, warmup_steps=1000, checkpoint_every=10, max_steps=20)
    with pytest.raises(TrainingDiverged, match="no good checkpoint was written yet") as e:
        fit(cfg)
    assert "train.lr" in str(e.value)
    assert ckpt.checkpoint_dirs(tmp_path / "early" / "checkpoints") == []


# -- 2. a batch size below one is refused instead of spinning forever --------------------------------
@pytest.mark.parametrize("batch_size", [0, -2])
def test_batch_sampler_refuses_empty_batches(batch_size):
    with pytest.raises(DataError, match="batch_size"):
        EpochBatchSampler(num_items=10, batch_size=batch_size, seed=0)


def test_negative_batch_size_on_the_command_line_ends_at_once(tmp_path):
    cfg = tokenizer_config(tmp_path, "neg")
    done = subprocess.run([sys.executable, "-m", "lgvq", "train-tokenizer", "--config", str(cfg),
                           "train.batch_size=-2"], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 2 and "train.batch_size" in done.stderr and "Traceback" not in done.stderr


# -- 3. a code store continues only for the inputs it was made from ----------------------------------
def test_store_refuses_a_folder_that_changed(tmp_path, tiny_tokenizer_dir):
    images = tmp_path / "images"
    export_shapes(images, num=10, num_val=4, image_size=32)
    store = tmp_path / "store"
    encode_store(tiny_tokenizer_dir, store, data=str(images), text_encoder="none", device="cpu")
    before = (store / "train" / "store.json").read_bytes()

    # the folder shrinks: three images and their metadata lines go
    meta = images / "train" / "metadata.jsonl"
    lines = meta.read_text().splitlines()
    for line in lines[7:]:
        (images / "train" / json.loads(line)["file_name"]).unlink()
    meta.write_text("\n".join(lines[:7]) + "\n")
    with pytest.raises(StoreError, match="data files"):
        encode_store(tiny_tokenizer_dir, store, data=str(images), text_encoder="none", device="cpu")
    assert (store / "train" / "store.json").read_bytes() == before  # nothing rewritten

    written = encode_store(tiny_tokenizer_dir, store, data=str(images), text_encoder="none", device="cpu",
                           overwrite=True)
    assert json.loads((written["train"] / "store.json").read_text())["num_images"] == 7


def test_store_refuses_a_retrained_tokenizer(tmp_path, tiny_tokenizer_dir):
    store = tmp_path / "store"
    encode_store(tiny_tokenizer_dir, store, splits=["validation"], text_encoder="none", device="cpu")
    retrained = tmp_path / "retrained"
    shutil.copytree(tiny_tokenizer_dir, retrained)
    weights = next(retrained.glob("*.safetensors"))
    tensors = load_file(weights)
    save_file({k: v + 1 if v.is_floating_point() else v for k, v in tensors.items()}, weights)
    with pytest.raises(StoreError, match="weights"):
        encode_store(retrained, store, splits=["validation"], text_encoder="none", device="cpu")


# -- 4. a resume that cannot start changes nothing ---------------------------------------------------
def test_failed_resume_leaves_the_run_record(tmp_path):
    cfg = tokenizer_config(tmp_path, "run")
    train("tokenizer", [cfg])
    record = (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"model\.quantizer\.codebook_size: 64 -> 32"):
        train("tokenizer", [cfg], ["model.quantizer.codebook_size=32"], resume="latest")
    assert (tmp_path / "run" / "config.yaml").read_bytes() == record
    train("tokenizer", [cfg], ["train.max_steps=8"], resume="latest")  # train.* may change on a resume
    assert yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["train"]["max_steps"] == 8


# -- 5. damaged checkpoints are skipped for the newest intact one, never resumed from silently -------
@pytest.mark.parametrize("damaged", ["random_states_0.pkl", "model.safetensors", "optimizer.bin"])
def test_damaged_latest_checkpoint_falls_back(tmp_path, damaged, caplog):
    straight = tokenizer_config(tmp_path, "straight", keep_checkpoints=3)
    fit(straight)
    root = tmp_path / "straight" / "checkpoints"

    resumed = tmp_path / "resumed" / "checkpoints"
    for name in ("step-0000002", "step-0000004"):
        shutil.copytree(root / name, resumed / name)
    target = resumed / "step-0000004" / damaged
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with caplog.at_level(logging.WARNING):
        assert ckpt.resolve_resume(resumed, "latest") == resumed / "step-0000002"
    assert damaged in caplog.text and "step-0000004" in caplog.text

    fit(tokenizer_config(tmp_path, "resumed", keep_checkpoints=3), resume="latest")
    a = load_file(next((tmp_path / "straight" / "model").glob("*.safetensors")))
    b = load_file(next((tmp_path / "resumed" / "model").glob("*.safetensors")))
    assert all(torch.equal(a[k], b[k]) for k in a)  # bitwise the uninterrupted run


def test_a_named_damaged_checkpoint_is_refused(tmp_path):
    fit(tokenizer_config(tmp_path, "run"))
    latest = tmp_path / "run" / "checkpoints" / "step-0000006"
    (latest / "random_states_0.pkl").unlink()
    with pytest.raises(FileNotFoundError, match="random_states_0.pkl is missing"):
        ckpt.resolve_resume(latest.parent, str(latest))


# -- a full disk: a message, the earlier checkpoints intact, no temporary folder left ------------------
def _file_size_limit(limit: int):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes past the limit then fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_full_disk_during_a_checkpoint(tmp_path):
    cfg = tokenizer_config(tmp_path, "full")
    fit(cfg)  # steps 2, 4, 6 (keeps 4 and 6)
    kept = {p.name: (p / "model.safetensors").read_bytes() for p in ckpt.checkpoint_dirs(tmp_path / "full" / "checkpoints")}
    size = len(next(iter(kept.values())))
    done = subprocess.run([sys.executable, "-m", "lgvq", "train-tokenizer", "--config", str(cfg), "--resume", "latest",
                           "train.max_steps=8"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env=os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                          preexec_fn=_file_size_limit(size // 2))
    assert done.returncode == 2, done.stderr[-2000:]
    assert "disk is full" in done.stderr and "Traceback" not in done.stderr
    root = tmp_path / "full" / "checkpoints"
    assert {p.name: (p / "model.safetensors").read_bytes() for p in ckpt.checkpoint_dirs(root)} == kept
    assert not list(root.glob(".tmp-*"))


# -- a read-only output folder: a message naming it, exit 2, nothing earlier lost ---------------------
def _read_only_for_this_user():
    """Make directory permissions bind in the child even for root: drop the capabilities that let
    root write (and search) anywhere from its bounding set before exec (then they are gone)."""
    if os.geteuid() != 0:
        return None
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def drop():
        for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH
            if libc.prctl(24, cap, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")
    return drop


def _lgvq(*args):
    return subprocess.run([sys.executable, "-m", "lgvq", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          timeout=300, env=os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
                          preexec_fn=_read_only_for_this_user())


def _snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _assert_one_line_refusal(done, *names):
    assert done.returncode == 2, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and all(str(n) in error[0] for n in names), done.stderr[-2000:]


def test_read_only_run_folder_stops_with_a_message_and_keeps_the_checkpoints(tmp_path):
    cfg = tokenizer_config(tmp_path, "ro")
    fit(cfg)  # checkpoints of steps 4 and 6
    root = tmp_path / "ro" / "checkpoints"
    kept = {name: _snapshot(tmp_path / "ro" / name) for name in ("checkpoints", "model")}
    root.chmod(0o555)
    try:
        done = _lgvq("train-tokenizer", "--config", cfg, "--resume", "latest", "train.max_steps=8")
    finally:
        root.chmod(0o755)
    _assert_one_line_refusal(done, "no permission")
    # nothing earlier lost, no temporary folder left (the run record and logs note the resume)
    assert {name: _snapshot(tmp_path / "ro" / name) for name in kept} == kept

    parent = tmp_path / "locked"
    parent.mkdir(mode=0o555)
    done = _lgvq("train-tokenizer", "--config", tokenizer_config(tmp_path, "fresh"), f"train.output_dir={parent}/run")
    _assert_one_line_refusal(done, parent / "run")
    assert list(parent.iterdir()) == []


def test_read_only_store_folder_is_refused_and_an_existing_store_kept(tmp_path, tiny_tokenizer_dir):
    store = tmp_path / "store"
    encode_store(tiny_tokenizer_dir, store, splits=["validation"], text_encoder="none", device="cpu")
    before = _snapshot(store)
    for folder in (store, store / "validation"):
        folder.chmod(0o555)
    try:
        done = _lgvq("encode", "--tokenizer", tiny_tokenizer_dir, "--out", store, "--splits", "validation",
                     "--text-encoder", "none", "--overwrite")
    finally:
        for folder in (store, store / "validation"):
            folder.chmod(0o755)
    _assert_one_line_refusal(done, store)
    assert _snapshot(store) == before

    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = _lgvq("encode", "--tokenizer", tiny_tokenizer_dir, "--out", locked / "codes", "--splits", "validation",
                 "--text-encoder", "none")
    _assert_one_line_refusal(done, locked / "codes")
    assert list(locked.iterdir()) == []
