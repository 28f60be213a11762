"""Fine-tuning that learns the new data: held-out words, new class rows, replay, a frozen warm
phase, and a VQA classifier extended with new answers."""

import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

from lgvq.api import train
from lgvq.cli import main
from lgvq.config import DataConfig, load_config
from lgvq.data.code_store import store_batches
from lgvq.data.datasets import build_dataset
from lgvq.downstream.training import HeadRunConfig, VQATask
from lgvq.errors import ConfigError
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.model import PriorTransformer
from lgvq.priors.training import PriorTask, initialise_from
from tests.conftest import SHAPES_DATA, TINY_HEAD, TINY_PRIOR, write_config


@pytest.fixture(scope="module")
def no_purple_store(tiny_tokenizer_dir, tmp_path_factory):
    """The tiny shapes data without any image whose captions mention purple."""
    out = tmp_path_factory.mktemp("no_purple") / "codes"
    overrides = [f"data.{k}={v}" for k, v in SHAPES_DATA.items()] + ["data.exclude_words=[purple]"]
    assert main(["encode", "--tokenizer", str(tiny_tokenizer_dir), "--out", str(out), "--data", "shapes",
                 "--batch-size", "16", *overrides]) == 0
    return out


def test_excluded_words_leave_no_image_that_mentions_them():
    full = build_dataset(DataConfig(num_train=200, image_size=32), "train")
    held_out = build_dataset(DataConfig(num_train=200, image_size=32, exclude_words=["purple"]), "train")
    assert 0 < len(held_out) < len(full)
    assert not any("purple" in c for captions in held_out.item_captions() for c in captions)
    kept = [captions for captions in full.item_captions() if not any("purple" in c for c in captions)]
    assert held_out.item_captions() == kept
    assert held_out[0]["index"] == 0 and held_out.class_names() == full.class_names()


def prior_config(tmp_path, store, name, conditioning="class", **extra):
    data = yaml.safe_load(yaml.safe_dump(TINY_PRIOR))
    data["store"], data["model"]["conditioning"] = str(store), conditioning
    data["train"]["output_dir"] = str(tmp_path / name)
    for key, value in extra.items():
        section, field = key.split("__")
        data.setdefault(section, {})[field] = value
    return write_config(tmp_path / f"{name}.yaml", data)


def test_classes_the_old_prior_never_saw_start_around_the_trained_rows(tmp_path, tiny_store, no_purple_store):
    old_run = tmp_path / "old"
    train("prior", [prior_config(tmp_path, no_purple_store, "old")])
    old = PriorTransformer.from_pretrained(old_run / "model")
    purple = [i for i, name in enumerate(old.config.class_names) if name.startswith("purple")]
    assert purple and not set(purple) & set(old.config.trained_classes)

    cfg = load_config(PriorRunConfig, prior_config(tmp_path, tiny_store, "new"))
    assert cfg.finetune.new_class_init == "random"  # the documented default
    task = PriorTask(cfg, tmp_path / "new")
    torch.manual_seed(0)
    fresh = PriorTransformer(task.prior_args())
    untouched = fresh.class_embedding.weight.detach().clone()
    initialise_from(fresh, old_run, "mean")
    rows, old_rows = fresh.class_embedding.weight.detach(), old.class_embedding.weight.detach()
    trained = old.config.trained_classes
    assert torch.equal(rows[trained], old_rows[trained]) and torch.equal(rows[-1], old_rows[-1])
    assert not torch.equal(rows[purple], untouched[purple])
    # the new rows lie among the trained ones: each within 3 (per-dimension) standard deviations on average
    z = (rows[purple] - old_rows[trained].mean(0)) / old_rows[trained].std(0)
    assert z.abs().mean() < 3

    torch.manual_seed(0)
    kept_fresh = PriorTransformer(task.prior_args())
    initialise_from(kept_fresh, old_run, "random")
    assert torch.equal(kept_fresh.class_embedding.weight.detach()[purple], untouched[purple])

    # "names": a purple circle starts as the mean of the trained circles
    by_name = PriorTransformer(task.prior_args())
    initialise_from(by_name, old_run, "names")
    names = old.config.class_names
    for c in purple:
        shape = names[c].split()[-1]
        same_shape = [t for t in trained if names[t].endswith(shape)]
        assert same_shape and torch.allclose(by_name.class_embedding.weight.detach()[c], old_rows[same_shape].mean(0))


def test_replay_mixes_the_old_store_into_each_batch_in_the_stated_ratio(tmp_path, tiny_store, no_purple_store):
    cfg = load_config(PriorRunConfig, prior_config(tmp_path, tiny_store, "mix", finetune__replay_store=str(no_purple_store),
                                                   finetune__replay_fraction=0.25))
    task = PriorTask(cfg, tmp_path / "mix")
    batch = next(task.train_batches(0, 0, 1))
    assert batch["tokens"].shape[0] == cfg.train.batch_size == 8
    new_positions, _ = next(store_batches(len(task.store), 6, cfg.train.seed, 0, 1, 0))
    old_positions, _ = next(store_batches(len(task.replay), 2, cfg.train.seed + 1, 0, 1, 0))
    assert torch.equal(batch["tokens"][:6], task.store.batch(new_positions)["tokens"])
    assert torch.equal(batch["tokens"][6:], task.replay.batch(old_positions)["tokens"])
    assert batch["text"].shape[:2] == batch["text_mask"].shape and batch["text"].shape[0] == 8


@pytest.mark.parametrize("conditioning", ["class", "text"])
def test_new_data_fraction_fills_its_share_of_each_batch_with_images_new_to_the_prior(
        tmp_path, tiny_store, no_purple_store, conditioning):
    train("prior", [prior_config(tmp_path, no_purple_store, "old", conditioning)])
    old = PriorTransformer.from_pretrained(tmp_path / "old" / "model")
    if conditioning == "text":  # the prior records the words of its captions
        assert {"circle", "square", "triangle", "red"} <= set(old.config.trained_words)
        assert "purple" not in old.config.trained_words

    cfg = load_config(PriorRunConfig, prior_config(tmp_path, tiny_store, "focus", conditioning,
                                                   finetune__new_data_fraction=0.25),
                      [f"init_from={tmp_path / 'old'}"])
    task = PriorTask(cfg, tmp_path / "focus")
    store = task.store

    def new_to_the_prior(image: int) -> bool:  # a class or a word the old prior never trained on
        if conditioning == "class":
            return int(store.labels[image]) not in old.config.trained_classes
        words = {w for r in store.captions[image] for w in re.findall(r"\w+", store.texts[r].lower())}
        return bool(words - set(old.config.trained_words))

    new_images = {int(store.images()[i]) for i in task.new_items}
    assert new_images == {int(i) for i in store.images() if new_to_the_prior(int(i))}
    purple = {int(i) for i in store.images() if any("purple" in store.texts[r] for r in store.captions[int(i)])}
    if conditioning == "class":
        purple = {int(i) for i in store.images() if old.config.class_names[int(store.labels[i])].startswith("purple")}
    assert purple and purple <= new_images
    batches = task.train_batches(0, 0, 1)
    for _ in range(3):
        batch = next(batches)
        assert batch["tokens"].shape[0] == 8
        # the last round(8 x 0.25) = 2 rows come from the new images; the rest from all of the store
        assert {int(i) for i in batch["index"][6:]} <= new_images
    # left to its default, a quarter of each batch (class priors) or three quarters (text priors) is new
    default = load_config(PriorRunConfig, prior_config(tmp_path, tiny_store, "default", conditioning),
                          [f"init_from={tmp_path / 'old'}"])
    default_task = PriorTask(default, tmp_path / "default")
    new_rows = {"class": 2, "text": 6}[conditioning]  # of 8
    assert default.finetune.new_share(conditioning) == new_rows / 8
    batch = next(default_task.train_batches(0, 0, 1))
    assert {int(i) for i in batch["index"][8 - new_rows:]} <= new_images
    # what the old prior trained on stays recorded as trained in the fine-tuned one
    data = task.prior_args().data
    recorded = data.trained_words if conditioning == "text" else data.trained_classes
    assert set(old.config.trained_words if conditioning == "text" else old.config.trained_classes) <= set(recorded)


def test_new_data_fraction_needs_a_prior_to_be_new_to(tmp_path, tiny_store):
    cfg = load_config(PriorRunConfig, prior_config(tmp_path, tiny_store, "alone", finetune__new_data_fraction=0.5))
    with pytest.raises(ConfigError, match="needs init_from"):
        PriorTask(cfg, tmp_path / "alone")


def test_a_frozen_warm_phase_trains_only_the_condition(tmp_path, tiny_store, no_purple_store):
    train("prior", [prior_config(tmp_path, no_purple_store, "base")])
    cfg = prior_config(tmp_path, tiny_store, "warm", finetune__freeze_backbone_steps=4)
    train("prior", [cfg], init_from=str(tmp_path / "base"))
    before = load_file(next((tmp_path / "base" / "model").glob("*.safetensors")))
    after = load_file(next((tmp_path / "warm" / "model").glob("*.safetensors")))
    assert not torch.equal(before["class_embedding.weight"], after["class_embedding.weight"])
    backbone = [k for k in before if not k.startswith("class_embedding")]
    assert backbone and all(torch.equal(before[k], after[k]) for k in backbone)


def test_vqa_fine_tuning_extends_the_classifier_with_new_answers(tmp_path, tiny_store, no_purple_store):
    data = yaml.safe_load(yaml.safe_dump(TINY_HEAD))
    data["store"], data["train"]["output_dir"] = str(no_purple_store), str(tmp_path / "vqa_old")
    train("vqa", [write_config(tmp_path / "old.yaml", data)])
    data["store"], data["train"]["output_dir"] = str(tiny_store), str(tmp_path / "vqa_new")
    new_cfg = write_config(tmp_path / "new.yaml", data)
    with pytest.raises(ConfigError, match="extend_answers=true"):
        train("vqa", [new_cfg], init_from=str(tmp_path / "vqa_old"))

    cfg = load_config(HeadRunConfig, new_cfg, ["extend_answers=true", f"init_from={tmp_path / 'vqa_old'}"])
    task = VQATask(cfg, tmp_path / "vqa_new")
    head = task.build_modules()["head"]
    old = task.init
    n = len(old.config.answers)
    assert head.config.answers[:n] == old.config.answers and "purple" in head.config.answers[n:]
    assert torch.equal(head.classifier[1].weight[:n], old.classifier[1].weight)
    assert torch.equal(head.classifier[1].bias[:n], old.classifier[1].bias)


@pytest.mark.slow
def test_the_finetune_benchmark_runs_at_toy_size(tmp_path, tiny_tokenizer_dir):
    import json
    import subprocess
    import sys

    import yaml

    from tests.conftest import REPO

    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "finetune.py"), "--tokenizer",
                           str(tiny_tokenizer_dir), "--out", str(tmp_path), "--smoke", "--pretrain-steps", "2", "--finetune-steps", "2",
                           "--num-prompts", "8", "--images-per-class", "1", "--seeds", "0",
                           "--conditioning", "class", "--train-seeds", "0,1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads((tmp_path / "finetune.json").read_text())["runs"]
    names = ("pretrain", "finetune plain", "finetune focus25", "finetune focus75", "scratch")
    assert set(runs) == {f"class / {n}{seed}" for n in names for seed in ("", " seed1")}
    assert all(0 <= r["new"] <= 1 and 0 <= r["old"] <= 1 for r in runs.values())
    # each training seed fine-tunes its own pretrained prior, and the table pairs them
    config = yaml.safe_load((tmp_path / "class" / "finetune_focus25_seed1" / "config.yaml").read_text())
    assert config["init_from"].endswith("pretrain_seed1")
    row = next(line for line in done.stdout.splitlines() if line.startswith("| class / finetune focus25 |"))
    changes = [runs[f"class / finetune focus25{s}"]["old"] - runs[f"class / pretrain{s}"]["old"] for s in ("", " seed1")]
    assert f"| {sum(changes) / 2 * 100:+.1f} (" in row and row.startswith("| class / finetune focus25 | 2 | 2 |")
    # the old classes' worst seed beside the mean: its rate and its change
    worst = min(runs[f"class / finetune focus25{s}"]["old"] for s in ("", " seed1"))
    assert f"| {worst:.1%} |" in row and f"| {min(changes) * 100:+.1f} | " in row
    # four classes held out by default: purple (three) and the orange triangle; pretraining never sees them
    from lgvq.data.code_store import CodeStore

    old = CodeStore(tmp_path / "codes_old" / "train")
    captions = [old.texts[row] for rows in old.captions for row in rows]
    assert captions and not any("purple" in c or "orange triangle" in c for c in captions)
