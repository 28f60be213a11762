"""Re-ranking a text prior's samples by a captioner's likelihood of the prompt (lgvq/priors/rerank.py):
the pipeline keeps the sample the captioner rates best, evaluate-prior reports it under its own name,
and a captioner that cannot read the prior's codes, or a prior without prompts, is refused."""

import json

import numpy as np
import pytest
import torch

from lgvq.api import evaluate_prior_run
from lgvq.api.heads import load_head
from lgvq.cli import main
from lgvq.downstream.captioning import CaptionHead
from lgvq.errors import ConfigError, PromptError, UsageError, WrongModelKindError
from lgvq.pipelines import TextToImagePipeline, load_pipeline
from lgvq.priors.rerank import CaptionReranker
from lgvq.priors.sampling import generate
from tests.conftest import tiny_head_config, tiny_prior_config


@pytest.fixture(scope="module")
def runs(tiny_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rerank")
    assert main(["train-prior", "--config", str(tiny_prior_config(tmp, tiny_store, "text"))]) == 0
    assert main(["train-captioner", "--config", str(tiny_head_config(tmp, tiny_store, "cap"))]) == 0
    return tmp / "prior", tmp / "cap"


def test_the_captioner_keeps_the_sample_that_makes_the_prompt_most_likely(runs):
    prior, cap = runs
    pipe = TextToImagePipeline.from_pretrained(prior, device="cpu")
    prompts = ["a small red circle", "a large blue square to the left of a small green triangle"]
    cond = pipe.text_condition([p for p in prompts for _ in range(3)])
    tokens, _ = generate(pipe.prior, cond, cfg_scale=pipe.defaults["cfg_scale"],
                         temperature=pipe.defaults["temperature"], generator=torch.Generator().manual_seed(5),
                         return_scores=True)
    head = load_head(cap, CaptionHead)[0]
    with torch.no_grad():  # the head's own mean cross-entropy, one sample at a time: lowest wins
        losses = torch.tensor([[float(head.loss(tokens[3 * i + j][None], [prompts[i]])) for j in range(3)]
                               for i in range(2)])
    expected = pipe.decode(tokens.view(2, 3, -1)[torch.arange(2), losses.argmin(1)])
    chosen = pipe(prompts, seed=5, best_of=3, rerank_with=str(cap))
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(chosen, expected))
    # with one sample per image there is nothing to rank: plain sampling, the captioner unused
    plain = pipe(prompts, seed=5)
    assert all(np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(plain, pipe(prompts, seed=5, rerank_with=str(cap))))


def test_best_of_hard_draws_more_for_the_images_the_captioner_is_least_sure_of(runs, monkeypatch):
    """best_of_hard=6, hard_share=0.5: the half of the images whose best of 2 the captioner rates
    lowest get 4 more samples and keep the best of all 6; the other half keep their best of 2."""
    prior, cap = runs
    pipe = TextToImagePipeline.from_pretrained(prior, device="cpu")
    prompts = ["a small red circle", "a large blue square", "a small green triangle above a large red circle",
               "a large white square to the left of a small blue circle"]
    drawn, kept = [], []  # rows each draw samples; the ids each call keeps (what it decodes)
    monkeypatch.setattr("lgvq.pipelines.generate", lambda prior_, cond, **kw: drawn.append(cond.size())
                        or generate(prior_, cond, **kw))
    decode = pipe.decode
    monkeypatch.setattr(pipe, "decode", lambda tokens: kept.append(tokens.clone()) or decode(tokens))
    pipe(prompts, seed=5, best_of=2, rerank_with=str(cap))
    pipe(prompts, seed=5, best_of=2, best_of_hard=6, hard_share=0.5, rerank_with=str(cap))
    pipe(prompts, seed=5, best_of=2, best_of_hard=6, hard_share=0, rerank_with=str(cap))
    assert drawn == [8, 8, 2 * 4, 8]  # 4 prompts x 2; then 2 prompts x 4 more; hard_share 0 draws no more
    best_of_2, best_of_hard, none_hard = kept
    judge = CaptionReranker.from_run(cap)
    before, after = judge(best_of_2, prompts), judge(best_of_hard, prompts)
    least_sure, rest = before.argsort()[:2], before.argsort()[2:]
    assert torch.equal(best_of_hard[rest], best_of_2[rest]) and torch.equal(none_hard, best_of_2)
    assert (after[least_sure] >= before[least_sure] - 1e-4).all()
    for bad, match in (({"best_of": 2, "best_of_hard": 2}, "best_of_hard"),
                       ({"best_of_hard": 4}, "needs best_of above 1"),
                       ({"best_of": 2, "best_of_hard": 4, "hard_share": 1.5}, "hard_share")):
        with pytest.raises(PromptError, match=match):
            pipe(prompts[0], **bad)


def test_a_captioner_of_other_codes_or_a_prompt_free_request_is_refused(runs, tmp_path, monkeypatch):
    prior, cap = runs
    pipe = load_pipeline(prior, device="cpu")
    seq_len, vocab = pipe.prior.config.seq_len, pipe.prior.config.vocab_size
    CaptionHead(code_vocab_size=vocab, token_count=seq_len * 4, dim=32, depth=1, heads=2).save_pretrained(
        tmp_path / "other")
    drawn = []
    monkeypatch.setattr("lgvq.pipelines.generate", lambda *a, **k: drawn.append(1))
    with pytest.raises(ConfigError, match="captioner trained on the prior's tokenizer"):
        pipe("a small red circle", best_of=2, rerank_with=str(tmp_path / "other"))
    assert not drawn  # refused before a single token is drawn
    monkeypatch.undo()
    with pytest.raises(WrongModelKindError, match="not a captioning head"):  # a prior's folder given as the judge
        pipe("a small red circle", best_of=2, rerank_with=str(prior))
    image = pipe("a small red circle", seed=0)[0]
    with pytest.raises(PromptError, match="needs each image's prompt"):  # completion is given a condition
        pipe.complete(image, keep_top=0.5, condition=pipe.text_condition(["a small red circle"]), best_of=2,
                      rerank_with=str(cap))


def test_evaluate_prior_writes_a_reranked_evaluation_beside_the_runs_own(runs, capsys):
    prior, cap = runs
    args = ["evaluate-prior", "--prior", str(prior), "--num-prompts", "4", "--no-fid", "--limit", "4"]
    assert main(args) == 0
    assert main([*args, "--best-of", "2", "--best-of-hard", "3", "--rerank-with", str(cap), "--name", "reranked"]) == 0
    own, reranked = (json.loads((prior / "eval" / f"{name}.json").read_text()) for name in ("prior", "reranked"))
    assert reranked["sampling"]["best_of"] == 2 and reranked["sampling"]["rerank_with"] == str(cap)
    assert reranked["sampling"]["best_of_hard"] == 3 and reranked["sampling"]["hard_share"] == 0.5
    assert own["sampling"]["best_of"] == 1 and "overall" in reranked["faithfulness"]
    assert len(list((prior / "eval" / "reranked" / "samples").glob("*.png"))) == 4  # the run's own images stay
    assert len(list((prior / "eval" / "samples").glob("*.png"))) == 4
    with pytest.raises(SystemExit):
        main([*args, "--name", "../elsewhere"])
    assert "letters, digits, _ and -" in capsys.readouterr().err
    with pytest.raises(UsageError, match="letters, digits, _ and -"):  # from Python too
        evaluate_prior_run(prior, name="../elsewhere", fid=False)
