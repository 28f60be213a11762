"""Captioning and VQA heads on the code store: vocabulary, training step, save/load, inference,
metrics and the errors users meet."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lgvq.cli import main
from lgvq.data.code_store import CodeStore
from lgvq.downstream.captioning import CaptionHead
from lgvq.downstream.text_vocab import TextVocab
from lgvq.downstream.vqa import VQAHead
from lgvq.evaluation.head_eval import caption_metrics
from tests.conftest import tiny_head_config


def test_text_vocab_round_trip_and_unknown_pieces():
    vocab = TextVocab.from_texts("minilm", ["a small red circle", "a large blue square"])
    ids, mask = vocab.encode(["a small red circle"], max_length=10)
    assert ids[0, 0] == vocab.bos and ids[0, mask[0].sum() - 1] == vocab.eos
    assert vocab.decode(ids[0, 1:].tolist()) == "a small red circle"
    unknown, _ = vocab.encode(["a purple circle"], max_length=10, add_bos_eos=False)
    assert vocab.unk in unknown[0].tolist()
    assert len(vocab) < 20  # only the pieces the texts use, plus specials


@pytest.fixture(scope="module")
def caption_run(tiny_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cap")
    assert main(["train-captioner", "--config", str(tiny_head_config(tmp, tiny_store, "cap"))]) == 0
    return tmp / "cap"


@pytest.fixture(scope="module")
def vqa_run(tiny_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vqa")
    assert main(["train-vqa", "--config", str(tiny_head_config(tmp, tiny_store, "vqa"))]) == 0
    return tmp / "vqa"


@pytest.mark.parametrize("per_position", [1, 3])  # VQCT: 3 tokens per grid cell
def test_conv_code_reader_sees_only_the_neighbourhood(per_position):
    """One convolution layer over the token grid: changing the code at one cell changes the
    features of that cell and its 8 neighbours only, every token of a cell alike."""
    from lgvq.downstream.code_reader import CodeReader

    torch.manual_seed(0)
    h, w = 6, 5
    reader = CodeReader(torch.randn(50, 8), h * w * per_position, 16, conv_layers=1, token_shape=(h, w)).eval()
    ids = torch.randint(0, 50, (1, h * w * per_position))
    changed = ids.clone()
    cell = 2 * w + 3  # row 2, column 3
    changed[0, cell * per_position] = (ids[0, cell * per_position] + 1) % 50
    with torch.no_grad():
        diff = (reader(ids) - reader(changed)).abs().sum(-1)[0].reshape(h, w, per_position) > 1e-6
    expected = torch.zeros(h, w, per_position, dtype=torch.bool)
    expected[1:4, 2:5] = True
    assert torch.equal(diff, expected)
    with pytest.raises(ValueError, match="token grid"):
        CodeReader(torch.randn(50, 8), 31, 16, conv_layers=1, token_shape=(h, w))


def test_vqa_head_with_conv_reader_trains_and_reloads(tiny_store, tmp_path):
    cfg = tiny_head_config(tmp_path, tiny_store, "vqa_conv")
    assert main(["train-vqa", "--config", str(cfg), "model.code_conv_layers=2"]) == 0
    head = VQAHead.from_pretrained(tmp_path / "vqa_conv" / "model")
    assert head.config.code_conv_layers == 2 and len(head.codes.conv) == 2


@pytest.mark.parametrize("causal,pooling", [(True, "last"), (True, "mean"), (False, "last")])
def test_vqa_head_reads_several_questions_as_separate_passes_would(causal, pooling):
    torch.manual_seed(0)
    head = VQAHead(code_vocab_size=50, code_dim=8, token_count=16, token_ids=list(range(1000, 1100)),
                   answers=["a", "b", "c"], dim=32, depth=2, heads=2, code_conv_layers=1, token_shape=(4, 4),
                   pooling=pooling, causal=causal).eval()
    codes = torch.randint(0, 50, (3, 16))
    questions = [["what colour is the circle?", "how many objects are there?"], ["is it red?"],
                 ["what shape is it?", "where?", "is the square to the left of the circle?"]]
    ids, mask = head.encode_question_sets(questions)
    assert ids.shape[:2] == (3, 3) and not mask[1, 1:].any()  # padding slots
    with torch.no_grad():
        together = head(codes, ids, mask)
        for i, asked in enumerate(questions):
            for j, question in enumerate(asked):
                alone = head(codes[i:i + 1], *head.encode_questions([question]))
                assert torch.allclose(together[i, j], alone[0], atol=1e-5)
    answers = head.answer(codes, questions)
    assert [len(a) for a in answers] == [2, 1, 3]
    assert answers[2][2] == head.answer(codes[2:], [questions[2][2]])[0]
    targets = torch.tensor([[0, 1, -100], [2, -100, -100], [0, 0, 1]])
    loss, _ = head(codes, ids, mask, targets)
    real = targets != -100
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(together[real], targets[real]))


def test_vqa_training_with_several_questions_per_image(tiny_store, tmp_path):
    from lgvq.api.training import stage_config
    from lgvq.downstream.training import VQATask

    cfg = tiny_head_config(tmp_path, tiny_store, "vqa_multi")
    task = VQATask(stage_config("vqa", [cfg], ["questions_per_image=4"]), tmp_path / "task")
    batch = task.make_batch(list(range(6)), np.random.default_rng(0))
    for image, asked, answers in zip(batch["index"].tolist(), batch["question"], batch["answer"]):
        known = {q["question"]: q["answer"] for q in task.store.qa[image]}
        assert 1 <= len(asked) == len(set(asked)) <= 4 and [known[q] for q in asked] == answers
    assert main(["train-vqa", "--config", str(cfg), "questions_per_image=4"]) == 0
    head = VQAHead.from_pretrained(tmp_path / "vqa_multi" / "model")
    assert head.config.answers
    assert main(["train-vqa", "--config", str(cfg), "questions_per_image=0"]) == 2


def test_caption_head_learns_the_store(tiny_store, tmp_path):
    cfg = tiny_head_config(tmp_path, tiny_store, "cap_long")
    assert main(["train-captioner", "--config", str(cfg), "train.max_steps=80", "train.checkpoint_every=100",
                 "train.log_every=80"]) == 0
    head = CaptionHead.from_pretrained(tmp_path / "cap_long" / "model")
    store = CodeStore(tiny_store / "train")
    batch = store.batch(list(range(16)))
    with torch.no_grad():
        loss = float(head.eval().loss(batch["tokens"], batch["caption"]))
    assert loss < 0.6 * np.log(len(head.vocab))  # well below guessing among its word pieces


def test_caption_head_saves_loads_and_decodes(caption_run, tiny_store):
    head = CaptionHead.from_pretrained(caption_run / "model").eval()
    codes = CodeStore(tiny_store / "validation").batch([0, 1, 2])["tokens"]
    greedy = head.generate(codes)
    assert len(greedy) == 3 and all(isinstance(t, str) for t in greedy)
    beams = head.generate(codes, beams=3)
    assert beams == head.generate(codes, beams=3)  # deterministic
    prefix = CaptionHead(**{k: v for k, v in head.config.items() if not k.startswith("_")} | {"variant": "prefix"})
    prefix.set_code_vectors(head.codes.code_vectors)
    assert prefix(codes, torch.zeros(3, 4, dtype=torch.long)).shape == (3, 4, len(head.vocab))


def test_caption_and_answer_cli_on_image_files(caption_run, vqa_run, tmp_path, capsys):
    from lgvq.data.shapes import make_sample

    path = tmp_path / "img.png"
    Image.fromarray(make_sample(0, "validation", 0, 32).image).save(path)
    assert main(["caption", "--model", str(caption_run), str(path), "--beams", "2"]) == 0
    assert str(path) in capsys.readouterr().out
    assert main(["answer", "--model", str(vqa_run), "--image", str(path), "--question",
                 "what colour is the circle?"]) == 0
    answers = json.loads((vqa_run / "model" / "config.json").read_text())["answers"]
    assert capsys.readouterr().out.strip() in answers
    assert main(["answer", "--model", str(vqa_run), "--image", str(path), "--question", "  "]) == 2
    assert "empty question" in capsys.readouterr().err
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    assert main(["answer", "--model", str(vqa_run), "--image", str(broken), "--question", "what shape?"]) == 2
    assert "cannot read image" in capsys.readouterr().err


def test_evaluate_heads(caption_run, vqa_run, capsys):
    assert main(["evaluate-head", "--model", str(vqa_run)]) == 0
    res = json.loads((vqa_run / "eval" / "head.json").read_text())
    assert set(res["per_type"]) == {"colour", "shape", "count", "size", "relation", "yes/no"}
    assert 0 <= res["accuracy"] <= 1
    assert main(["evaluate-head", "--model", str(caption_run), "--limit", "6", "--beams", "2"]) == 0
    res = json.loads((caption_run / "eval" / "head.json").read_text())
    assert {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr-D"} <= set(res) and res["images"] == 6


def test_caption_metrics_reward_matching_captions():
    refs = [["a small red circle", "a red circle"], ["a large blue square above a small red circle"]]
    perfect = caption_metrics(["a small red circle", "a large blue square above a small red circle"], refs)
    wrong = caption_metrics(["a large green triangle", "a small white circle"], refs)
    assert perfect["BLEU-4"] > 0.9 and perfect["CIDEr-D"] > wrong["CIDEr-D"]
    assert wrong["BLEU-1"] < perfect["BLEU-1"]


def test_fine_tuning_vqa_with_unknown_answers_is_refused(tiny_store, vqa_run, tmp_path, capsys):
    old = VQAHead.from_pretrained(vqa_run / "model")
    config = {k: v for k, v in old.config.items() if not k.startswith("_")} | {"answers": ["red", "blue"]}
    VQAHead(**config).save_pretrained(tmp_path / "narrow" / "model")
    cfg = tiny_head_config(tmp_path, tiny_store, "tuned")
    assert main(["train-vqa", "--config", str(cfg), "--init-from", str(tmp_path / "narrow")]) == 2
    err = capsys.readouterr().err
    assert "answers its classifier does not know" in err and "'circle'" in err


def test_fine_tuning_vqa_keeps_weights(tiny_store, vqa_run, tmp_path):
    cfg = tiny_head_config(tmp_path, tiny_store, "tuned")
    assert main(["train-vqa", "--config", str(cfg), "--init-from", str(vqa_run), "train.max_steps=1",
                 "train.lr=1e-12"]) == 0
    old = VQAHead.from_pretrained(vqa_run / "model").state_dict()
    new = VQAHead.from_pretrained(tmp_path / "tuned" / "model").state_dict()
    assert all(torch.allclose(old[k].float(), new[k].float(), atol=1e-6) for k in old)


@pytest.fixture(scope="module")
def aligned_tokenizer():
    from dataclasses import asdict

    from lgvq.alignment.lgvq import LGVQConfig
    from lgvq.tokenizers.model import VQTokenizer
    from tests.conftest import TINY_TOKENIZER_MODEL

    torch.manual_seed(0)
    cfg = LGVQConfig(max_length=16, visual_width=16)
    spec = {"method": "lgvq", "config": asdict(cfg), "text_width": 384, "sentence_width": 384, "vocab_size": 30522}
    return VQTokenizer(**TINY_TOKENIZER_MODEL, alignment=spec)


def test_retrieval_and_fill_mask(aligned_tokenizer, tmp_path, capsys):
    from lgvq.downstream.retrieval import AlignedTokenizer, NotAlignedError

    aligned = AlignedTokenizer(aligned_tokenizer)
    images = torch.rand(3, 3, 32, 32) * 2 - 1
    sim = aligned.similarity(images, ["a red circle", "a blue square"])
    assert sim.shape == (3, 2) and sim.abs().max() <= 1 + 1e-5
    filled = aligned.fill_mask(images[0], "a small [MASK] _", top_k=2)
    assert len(filled) == 2 and all(len(options) == 2 for options in filled)
    with pytest.raises(ValueError, match="no \\[MASK\\]"):
        aligned.fill_mask(images[0], "a small red circle")
    with pytest.raises(NotAlignedError):
        AlignedTokenizer(aligned_tokenizer.without_alignment())
    # the CLI verbs on saved files
    aligned_tokenizer.save_pretrained(tmp_path / "tok")
    for i in range(2):
        pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
    imgs = [str(tmp_path / "0.png"), str(tmp_path / "1.png")]
    assert main(["retrieve", "--model", str(tmp_path / "tok"), "--images", *imgs, "--texts", "a red circle",
                 "a blue square", "--direction", "t2i", "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("a red circle\t")
    assert main(["fill-mask", "--model", str(tmp_path / "tok"), "--image", imgs[0], "--caption",
                 "a [MASK] circle"]) == 0
    assert capsys.readouterr().out.startswith("mask 1: ")
