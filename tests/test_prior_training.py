"""Prior training from the code store, fine-tuning, pipelines and the stage-two CLI verbs."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from lgvq.cli import main
from lgvq.config import load_config
from lgvq.pipelines import (
    ClassConditionalPipeline,
    PromptError,
    TextToImagePipeline,
    UnconditionalPipeline,
    load_pipeline,
)
from lgvq.priors.config import PriorRunConfig
from lgvq.priors.model import Condition, PriorTransformer, prior_args
from lgvq.priors.sampling import generate
from lgvq.priors.training import PriorTask, initialise_from
from lgvq.tokenizers.model import VQTokenizer
from lgvq.training.trainer import Trainer
from tests.conftest import tiny_prior_config


@pytest.fixture(scope="module")
def text_run(tiny_store, tmp_path_factory):
    """A tiny text-to-image prior run trained through the CLI."""
    tmp = tmp_path_factory.mktemp("t2i")
    assert main(["train-prior", "--config", str(tiny_prior_config(tmp, tiny_store, "text"))]) == 0
    return tmp / "prior"


def test_run_folder_holds_everything_sampling_needs(text_run):
    assert (text_run / "model" / "config.json").is_file()
    assert (text_run / "tokenizer" / "config.json").is_file()
    config = json.loads((text_run / "model" / "config.json").read_text())
    assert config["conditioning"] == "text" and config["text_encoder"] == "minilm"


def test_training_step_never_runs_the_image_encoder(tiny_store, tmp_path, monkeypatch):
    def forbidden(*a, **k):
        raise AssertionError("the image encoder ran during prior training")

    monkeypatch.setattr(VQTokenizer, "encode", forbidden)
    monkeypatch.setattr(VQTokenizer, "encode_features", forbidden)
    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "class"))
    Trainer(PriorTask(cfg, tmp_path / "prior"), cfg.train, tmp_path / "prior").fit()


@pytest.mark.parametrize("group_size", [1, 2])
def test_prior_learns_the_store(tiny_store, tmp_path, group_size):
    """A few dozen steps bring the loss well below the uniform-guess entropy ln(64), with one code
    per position or 2 x 2 codes per position; completing an image with the trained prior keeps whole
    rows of its blocks."""
    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "class"),
                      ["train.max_steps=60", "train.log_every=60", "train.checkpoint_every=1000",
                       f"model.group_size={group_size}"])
    task = PriorTask(cfg, tmp_path / "prior")
    trainer = Trainer(task, cfg.train, tmp_path / "prior")
    trainer.fit()
    prior = PriorTransformer.from_pretrained(tmp_path / "prior" / "model")
    from lgvq.data.code_store import CodeStore
    from lgvq.evaluation.prior_eval import validation_nll

    nll = validation_nll(prior, CodeStore(tiny_store / "train"))
    assert nll["nll"] < 0.8 * np.log(64)
    assert prior.config.group_size == group_size
    # completion keeps whole rows of the prior's blocks: 0.75 of 4 token rows is 2 rows at g = 2
    pipe = load_pipeline(tmp_path / "prior", device="cpu")
    kept, generate = [], pipe._generate
    pipe._generate = lambda cond, seed, prompt_tokens, **kw: kept.append(prompt_tokens) or generate(
        cond, seed, prompt_tokens, **kw)
    source = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    images = pipe.complete(Image.fromarray(source), keep_top=0.75, num_images=2, seed=0,
                           condition=Condition(labels=torch.tensor([1, 2])))
    assert len(images) == 2 and kept[0].shape == (2, 4 * (3 if group_size == 1 else 2))


def test_compiled_run_checkpoints_plain_names_and_resumes_uncompiled(tiny_store, tmp_path, monkeypatch):
    """train.compile runs the step through torch.compile (here with its eager backend, which traces
    the graph but generates no code, to stay fast); the checkpoints keep the plain parameter names,
    so the run resumes without compile."""
    compiled, real_compile = [], torch.compile
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or real_compile(m, backend="eager"))
    run = tmp_path / "prior"
    config = tiny_prior_config(tmp_path, tiny_store, "class")
    cfg = load_config(PriorRunConfig, config, ["train.compile=true", "train.max_steps=4", "train.checkpoint_every=4"])
    Trainer(PriorTask(cfg, run), cfg.train, run).fit()
    assert [type(m).__name__ for m in compiled] == ["PriorTransformer"]
    with safe_open(run / "checkpoints" / "step-0000004" / "model.safetensors", "pt") as f:
        names = set(f.keys())
    assert "start" in names and not any("_orig_mod" in n for n in names)
    cfg = load_config(PriorRunConfig, config, ["train.max_steps=6", "train.checkpoint_every=6"])
    trainer = Trainer(PriorTask(cfg, run), cfg.train, run, resume="latest")
    trainer.fit()
    assert trainer.step == 6 and len(compiled) == 1


def test_fine_tuning_keeps_old_class_rows(tiny_store, tmp_path):
    old = PriorTransformer(prior_args(vocab_size=64, seq_len=16, conditioning="class", num_classes=24, dim=32,
                                      depth=2, heads=2, ff_mult=2))
    old.save_pretrained(tmp_path / "old" / "model")
    new = PriorTransformer(prior_args(vocab_size=64, seq_len=16, conditioning="class", num_classes=30, dim=32,
                                      depth=2, heads=2, ff_mult=2))
    fresh = new.class_embedding.weight.detach().clone()
    initialise_from(new, tmp_path / "old")
    w_old, w_new = old.class_embedding.weight, new.class_embedding.weight
    assert torch.equal(w_new[:24], w_old[:24]) and torch.equal(w_new[-1], w_old[-1])  # classes and null row
    assert torch.equal(w_new[24:30], fresh[24:30])  # new classes keep their initialisation
    assert torch.equal(new.net.token_emb.emb.weight, old.net.token_emb.emb.weight)


def test_fine_tuning_refuses_another_vocabulary(tmp_path):
    from lgvq.config import ConfigError

    PriorTransformer(prior_args(vocab_size=64, seq_len=16, dim=32, depth=2, heads=2)).save_pretrained(tmp_path / "m")
    with pytest.raises(ConfigError, match="vocab_size"):
        other = PriorTransformer(prior_args(vocab_size=80, seq_len=16, dim=32, depth=2, heads=2))
        initialise_from(other, tmp_path / "m")


def test_fine_tune_through_cli(text_run, tiny_store, tmp_path):
    cfg = tiny_prior_config(tmp_path, tiny_store, "text", name="tuned")
    assert main(["train-prior", "--config", str(cfg), "--init-from", str(text_run), "--data", str(tiny_store),
                 "train.max_steps=2"]) == 0
    assert (tmp_path / "tuned" / "model" / "config.json").is_file()


def test_text_pipeline_returns_pil_images(text_run):
    pipe = TextToImagePipeline.from_pretrained(text_run, device="cpu")
    images = pipe(["a small red circle", "a large blue square"], num_images=2, seed=0)
    assert len(images) == 4 and all(isinstance(im, Image.Image) and im.size == (32, 32) for im in images)
    again = pipe(["a small red circle", "a large blue square"], num_images=2, seed=0)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, again))


def test_best_of_keeps_the_sample_the_prior_rates_most_conditional(text_run):
    """best_of=3 draws three samples per image and keeps, for each, the one with the highest
    conditional minus null log-likelihood; best_of=1 is plain sampling."""
    pipe = TextToImagePipeline.from_pretrained(text_run, device="cpu")
    prompts = ["a small red circle", "a large blue square"]
    cond = pipe.text_condition([p for p in prompts for _ in range(3)])
    tokens, scores = generate(pipe.prior, cond, cfg_scale=pipe.defaults["cfg_scale"],
                              generator=torch.Generator().manual_seed(5), return_scores=True)
    best = scores.view(2, 3).argmax(1)
    expected = pipe.decode(tokens.view(2, 3, -1)[torch.arange(2), best])
    chosen = pipe(prompts, seed=5, best_of=3)
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(chosen, expected))
    plain = pipe(prompts, seed=5)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(plain, pipe.decode(generate(pipe.prior, pipe.text_condition(prompts),
                                                           cfg_scale=pipe.defaults["cfg_scale"],
                                                           generator=torch.Generator().manual_seed(5)))))
    with pytest.raises(PromptError, match="best_of"):
        pipe(prompts, best_of=0)


def test_pipeline_errors_are_clear(text_run):
    pipe = load_pipeline(text_run, device="cpu")
    assert isinstance(pipe, TextToImagePipeline)
    with pytest.raises(PromptError, match="empty prompt"):
        pipe("   ")
    with pytest.raises(PromptError, match="at most"):
        pipe("a small red circle " * 10)
    with pytest.raises(PromptError, match="text-conditional"):
        ClassConditionalPipeline.from_pretrained(text_run)
    with pytest.raises(PromptError, match="conditional"):
        UnconditionalPipeline.from_pretrained(text_run)


def test_class_pipeline_by_id_and_name(tiny_store, tmp_path):
    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "class"), ["train.max_steps=1"])
    Trainer(PriorTask(cfg, tmp_path / "prior"), cfg.train, tmp_path / "prior").fit()
    pipe = load_pipeline(tmp_path / "prior", device="cpu")
    assert isinstance(pipe, ClassConditionalPipeline)
    assert len(pipe([0, "blue square"], num_images=2, seed=1)) == 4
    with pytest.raises(PromptError, match="out of range"):
        pipe(24)
    with pytest.raises(PromptError, match="unknown class name"):
        pipe("mauve circle")


def test_sample_complete_and_evaluate_cli(text_run, tmp_path, capsys):
    out = tmp_path / "samples"
    assert main(["sample", "--prior", str(text_run), "--prompt", "a small red circle", "--num-images", "3",
                 "--cfg", "2", "--seed", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*.png")) == ["0000.png", "0001.png", "0002.png", "grid.png"]
    assert main(["sample", "--prior", str(text_run), "--class", "3", "--out", str(out)]) == 2
    assert "sample it with a prompt" in capsys.readouterr().err
    assert main(["sample", "--prior", str(text_run), "--prompt", "", "--out", str(out)]) == 2
    assert "empty prompt" in capsys.readouterr().err
    assert main(["complete", "--prior", str(text_run), "--image", str(out / "0000.png"), "--keep-top", "0.5",
                 "--prompt", "a small red circle", "--num-images", "2", "--out", str(tmp_path / "done")]) == 0
    assert len(list((tmp_path / "done").glob("000*.png"))) == 2
    assert main(["evaluate-prior", "--prior", str(text_run), "--num-prompts", "6", "--no-fid"]) == 0
    res = json.loads((text_run / "eval" / "prior.json").read_text())
    assert res["faithfulness"]["count_one_object"] + res["faithfulness"]["count_two_objects"] == 6
    assert res["validation"]["perplexity"] > 1


def test_evaluate_prior_over_several_sampling_seeds(text_run, capsys):
    assert main(["evaluate-prior", "--prior", str(text_run), "--num-prompts", "4", "--no-fid", "--seeds", "3,5"]) == 0
    res = json.loads((text_run / "eval" / "prior.json").read_text())
    assert res["seeds"] == [3, 5] and set(res["faithfulness_per_seed"]) == {"3", "5"}
    per_seed = [res["faithfulness_per_seed"][s]["overall"] for s in ("3", "5")]
    assert res["faithfulness"]["overall"] == pytest.approx(sum(per_seed) / 2)
    assert (text_run / "eval" / "samples" / "scores.jsonl").is_file()  # seed 3's images
    assert (text_run / "eval" / "samples_seed5" / "scores.jsonl").is_file()
    assert "seed 5, one object / two objects" in capsys.readouterr().out
    assert main(["evaluate-prior", "--prior", str(text_run), "--no-fid", "--seeds", "1,x"]) == 2
    assert "--seeds takes whole numbers" in capsys.readouterr().err


def test_completion_keeps_the_top_rows(text_run):
    pipe = load_pipeline(text_run, device="cpu")
    decoded = []
    plain_decode = pipe.decode
    pipe.decode = lambda tokens: decoded.append(tokens) or plain_decode(tokens)
    source = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    with torch.no_grad():
        source_ids = pipe.tokenizer.encode(torch.from_numpy(source).permute(2, 0, 1)[None].float() / 127.5 - 1)
    cond = pipe.text_condition(["a large green square"] * 3)
    images = pipe.complete(Image.fromarray(source), keep_top=0.5, num_images=3, condition=cond, seed=4)
    assert len(images) == 3
    tokens = decoded[-1]  # (3, 16): 2 of the 4 token rows kept, 2 sampled
    assert torch.equal(tokens[:, :8], source_ids.reshape(1, -1)[:, :8].expand(3, -1))


def test_word_piece_rows_learn_the_captions_words_and_sampling_reads_a_prompts_ids(tiny_store, tmp_path):
    """model.prompt_word_rows: training moves the rows of the word pieces in the store's captions
    (ids hashed into the rows) and no others; the pipeline passes a prompt's ids to them."""
    from lgvq.data.code_store import CodeStore

    rows = 1024
    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "text"),
                      ["train.max_steps=4", "train.checkpoint_every=1000", f"model.prompt_word_rows={rows}"])
    Trainer(PriorTask(cfg, tmp_path / "prior"), cfg.train, tmp_path / "prior").fit()
    prior = PriorTransformer.from_pretrained(tmp_path / "prior" / "model")
    moved = set(torch.nonzero(prior.word_embedding.weight.abs().sum(1)).flatten().tolist())
    seen = set((np.unique(CodeStore(tiny_store / "train").text_ids) % rows).tolist())
    assert moved and moved <= seen
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "prior", device="cpu")
    cond = pipe.text_condition(["a small red circle"])
    assert torch.equal(cond.text_ids, pipe.text_encoder.tokenize(["a small red circle"])[0])
    assert len(pipe("a small red circle", num_images=2, seed=0)) == 2


@pytest.mark.parametrize("group_size", [1, 2])
def test_code_features_read_the_stores_tokenizer_and_travel_with_the_prior(tiny_store, tmp_path, group_size):
    """model.code_features: the prior holds its store's tokenizer's code vectors (saved with its
    weights, so the run stands alone), learns with them, and the pipeline samples from it."""
    from lgvq.data.code_store import CodeStore
    from lgvq.evaluation.prior_eval import validation_nll

    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "text"),
                      ["train.max_steps=60", "train.checkpoint_every=1000", "model.code_features=true",
                       f"model.group_size={group_size}"])
    Trainer(PriorTask(cfg, tmp_path / "prior"), cfg.train, tmp_path / "prior").fit()
    prior = PriorTransformer.from_pretrained(tmp_path / "prior" / "model")
    vectors = VQTokenizer.from_pretrained(tiny_store / "tokenizer").code_vectors()
    assert prior.config.code_width == vectors.shape[1]
    assert torch.equal(prior.code_layers.code_vectors, vectors)
    assert validation_nll(prior, CodeStore(tiny_store / "train"))["nll"] < 0.8 * np.log(64)
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "prior", device="cpu")
    assert len(pipe("a small red circle", num_images=2, seed=0)) == 2


def test_code_features_need_code_vectors():
    from lgvq.config import ConfigError

    with pytest.raises(ConfigError, match="code_features needs the tokenizer's code vectors"):
        PriorTransformer(prior_args(vocab_size=64, seq_len=16, dim=32, depth=1, code_features=True))


def test_muon_trains_the_hidden_matrices_and_adam_the_rest(tiny_store, tmp_path):
    """train.optimizer=muon: the decoder's 2-D layer weights go to torch's Muon, every other parameter
    to Adam, each exactly once; the prior learns."""
    from lgvq.data.code_store import CodeStore
    from lgvq.evaluation.prior_eval import validation_nll
    from lgvq.priors.training import hidden_matrices

    cfg = load_config(PriorRunConfig, tiny_prior_config(tmp_path, tiny_store, "class"),
                      ["train.max_steps=60", "train.checkpoint_every=1000", "train.optimizer=muon"])
    trainer = Trainer(PriorTask(cfg, tmp_path / "prior"), cfg.train, tmp_path / "prior")
    trainer.fit()
    muon, adam = (o.optimizer for o in trainer.optimizers)
    assert isinstance(muon, torch.optim.Muon) and isinstance(adam, torch.optim.Adam)
    prior = trainer.modules["prior"]
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adam = {id(p) for g in adam.param_groups for p in g["params"]}
    assert in_muon == {id(p) for p in hidden_matrices(prior)} and not in_muon & in_adam
    assert in_muon | in_adam == {id(p) for p in prior.parameters()}
    trained = PriorTransformer.from_pretrained(tmp_path / "prior" / "model")
    assert validation_nll(trained, CodeStore(tiny_store / "train"))["nll"] < 0.8 * np.log(64)


def test_muon_is_refused_where_a_stage_has_no_muon_weights(tiny_store, tmp_path):
    from lgvq.config import ConfigError
    from lgvq.downstream.training import CaptionTask, HeadRunConfig
    from tests.conftest import tiny_head_config

    cfg = load_config(HeadRunConfig, tiny_head_config(tmp_path, tiny_store, "cap"),
                      ["train.max_steps=1", "train.optimizer=muon"])
    with pytest.raises(ConfigError, match="train.optimizer=muon"):
        Trainer(CaptionTask(cfg, tmp_path / "cap"), cfg.train, tmp_path / "cap").fit()
