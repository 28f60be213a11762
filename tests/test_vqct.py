"""VQCT's codebook transfer network and split quantizer."""

import pytest
import torch

from lgvq.tokenizers.quantizers.config import QuantizerConfig, VQCTConfig
from lgvq.tokenizers.quantizers.legacy import upgrade_saved_config
from lgvq.tokenizers.quantizers.vqct import CodebookTransfer, VQCTQuantizer

N_ADJ, N_NOUN, WIDTH, D = 5, 7, 12, 6


def graph(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N_ADJ + N_NOUN, WIDTH, generator=g)
    edges = torch.tensor([[0, 5], [0, 6], [1, 5], [2, 9], [0, 5]])  # (0, 5) twice: weight adds up
    return x, edges, torch.ones(len(edges))


def test_gcn_equals_dense_computation():
    x, edges, w = graph()
    torch.manual_seed(0)
    net = CodebookTransfer(x, edges, w, D, mode="gcn").eval()
    n = len(x)
    a = torch.eye(n)
    for (i, j), v in zip(edges.tolist(), w.tolist()):
        a[i, j] += v
        a[j, i] += v
    d = a.sum(1).rsqrt()
    a_hat = d[:, None] * a * d[None]
    l1, l2 = net.layers
    dense = a_hat @ (torch.relu(a_hat @ (x @ l1.weight.t()) + l1.bias) @ l2.weight.t()) + l2.bias
    with torch.no_grad():
        assert torch.allclose(net(), dense, atol=1e-5)
    assert a[0, 5] == 2  # repeated edges count twice


def test_transfer_recomputed_in_training_and_cached_in_eval():
    x, edges, w = graph()
    net = CodebookTransfer(x, edges, w, D).train()
    a, b = net(), net()
    assert not torch.equal(a, b)  # dropout 0.5: a fresh codebook every training step
    net.eval()
    with torch.no_grad():
        assert net() is net()  # cached
    mlp, linear = CodebookTransfer(x, edges, w, D, "mlp"), CodebookTransfer(x, edges, w, D, "linear")
    assert mlp.eval()().shape == linear.eval()().shape == (len(x), D)
    with pytest.raises(ValueError, match="transfer must be"):
        CodebookTransfer(x, edges, w, D, "gat")


def test_eval_cache_follows_new_weights():
    x, edges, w = graph()
    torch.manual_seed(0)
    net = CodebookTransfer(x, edges, w, D).eval()
    torch.manual_seed(1)
    other = CodebookTransfer(x, edges, w, D).eval()
    with torch.no_grad():
        old = net().clone()
        net.load_state_dict(other.state_dict())  # an eval model that has encoded gets new weights
        assert torch.allclose(net(), other())
        assert not torch.allclose(net(), old)
        net.layers[1].bias.add_(1.0)  # an in-place change to a parameter
        assert torch.allclose(net(), other() + 1.0)


def quantizer(top_k=2, eval_codebook="draw", **fields):
    x, edges, w = graph()
    torch.manual_seed(0)
    spec = VQCTConfig(top_k=top_k, eval_codebook=eval_codebook, num_adjectives=N_ADJ, num_words=len(x),
                      word_width=WIDTH, num_edges=len(edges))
    vq = VQCTQuantizer(QuantizerConfig(kind="vqct", vqct=spec, **fields), D)
    vq.set_words({"vectors": x, "edges": edges, "weights": w})
    return vq


def test_eval_codebook_is_one_fixed_dropout_draw_kept_with_the_weights():
    drawn, mean = quantizer(), quantizer(eval_codebook="mean")
    mean.load_state_dict({k: v for k, v in drawn.state_dict().items() if k != "transfer.eval_mask"})
    drawn.eval(), mean.eval()
    with torch.no_grad():
        codes = drawn.transfer()
        t = drawn.transfer
        first, second = t.layers
        hidden = torch.relu(t._propagate(t.word_vectors @ first.weight.t()) + first.bias)
        kept = hidden * t.eval_mask / 0.5  # the units one dropout draw (p = 0.5) keeps, scaled as in training
        assert torch.allclose(codes, t._propagate(kept @ second.weight.t()) + second.bias, atol=1e-5)
        assert 0 < t.eval_mask.float().mean() < 1
        assert not torch.allclose(codes, mean.transfer())  # the official codebook: no dropout at all
        assert torch.equal(drawn.transfer.compute(), codes)  # the same draw every time
        torch.manual_seed(1)  # another draw at build ...
        reloaded = VQCTQuantizer(QuantizerConfig(kind="vqct", vqct=VQCTConfig(
            num_adjectives=N_ADJ, num_words=N_ADJ + N_NOUN, word_width=WIDTH, num_edges=5)), D)
        assert not torch.equal(reloaded.transfer.eval_mask, t.eval_mask)
        reloaded.load_state_dict(drawn.state_dict())  # ... replaced by the saved one
        assert torch.equal(reloaded.eval().transfer(), codes)


def test_vqct_saved_before_the_fixed_draw_decodes_as_it_was_trained():
    saved = {"quantizer_config": {"kind": "vqct", "vqct": {"top_k": 2, "num_words": 12}}}
    assert upgrade_saved_config(saved)["quantizer_config"]["vqct"]["eval_codebook"] == "mean"
    assert "eval_codebook" not in saved["quantizer_config"]["vqct"]  # the caller's dict is left alone
    current = {"quantizer_config": {"kind": "vqct", "vqct": {"eval_codebook": "draw"}}}
    assert upgrade_saved_config(current)["quantizer_config"]["vqct"]["eval_codebook"] == "draw"


def test_ids_layout_and_top_k_mean():
    vq = quantizer(top_k=2).eval()
    z = torch.randn(2, 2 * D, 3, 4)
    out = vq(z)
    assert out.ids.shape == (2, 3, 4, 3) and vq.tokens_per_position == 3
    assert (out.ids[..., :2] < N_ADJ).all() and (out.ids[..., 2] >= N_ADJ).all() and (out.ids < N_ADJ + N_NOUN).all()
    with torch.no_grad():
        codebook = vq.transfer()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2 * D)
    d_adj = torch.cdist(flat[:, :D], codebook[:N_ADJ])
    nearest_two = d_adj.topk(2, largest=False).indices
    assert torch.equal(out.ids.reshape(-1, 3)[:, :2], nearest_two)
    expected_adj = codebook[nearest_two].mean(1)
    assert torch.allclose(out.quantized.permute(0, 2, 3, 1).reshape(-1, 2 * D)[:, :D], expected_adj)


@pytest.mark.parametrize("l2_norm", [False, True])
def test_decode_from_ids_is_exact(l2_norm):
    vq = quantizer(top_k=2, l2_norm=l2_norm).eval()
    z = torch.randn(3, 2 * D, 4, 4)
    with torch.no_grad():
        out = vq(z)
        assert torch.equal(vq.embed(out.ids), out.quantized)


def test_l2_norm_looks_up_by_cosine():
    vq = quantizer(top_k=2, l2_norm=True).eval()
    z = torch.randn(2, 2 * D, 3, 3)
    with torch.no_grad():
        out, codes = vq(z), torch.nn.functional.normalize(vq.transfer(), dim=-1)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2 * D)
    cosine_noun = torch.nn.functional.normalize(flat[:, D:], dim=-1) @ codes[N_ADJ:].t()
    assert torch.equal(out.ids.reshape(-1, 3)[:, 2], cosine_noun.argmax(1) + N_ADJ)
    assert torch.allclose(out.quantized.permute(0, 2, 3, 1).reshape(-1, 2 * D)[:, D:].norm(dim=-1), torch.ones(18))


def test_vq_loss_gradient_reaches_the_graph_network():
    vq = quantizer().train()
    z = torch.randn(2, 2 * D, 3, 3, requires_grad=True)
    out = vq(z)
    out.loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in vq.transfer.parameters())
    assert z.grad is not None and z.grad.abs().sum() > 0  # commitment + straight-through


def test_beta_placement():
    z = torch.randn(2, 2 * D, 3, 3)
    faithful, legacy = quantizer(beta=0.25).eval()(z), quantizer(beta=0.25, legacy_beta=True).eval()(z)
    assert torch.allclose(faithful.loss, faithful.codebook_loss + 0.25 * faithful.commitment_loss)
    assert torch.allclose(legacy.loss, 0.25 * legacy.codebook_loss + legacy.commitment_loss)


def test_vqct_tokenizer_trains_saves_reloads_and_encodes_identically(tmp_path):
    """build-vocab -> a VQCT tokenizer (and VQCT + LG-VQ) through the CLI -> reload -> same ids."""
    from lgvq.cli import main
    from lgvq.tokenizers.model import VQTokenizer
    from tests.conftest import TINY_TOKENIZER, write_config

    vocab = tmp_path / "vocab"
    assert main(["build-vocab", "--out", str(vocab), "--min-count", "3", "data.num_train=40"]) == 0
    cfg = {k: dict(v) if isinstance(v, dict) else v for k, v in TINY_TOKENIZER.items()}
    # written in the flat layout of earlier configs (quantizer fields beside the autoencoder's)
    cfg["model"] = ({k: v for k, v in cfg["model"].items() if k != "quantizer"} | cfg["model"]["quantizer"]
                    | {"quantizer": "vqct", "vqct_vocab": str(vocab), "embed_dim": 8})
    cfg["train"] |= {"output_dir": str(tmp_path / "run"), "max_steps": 3}
    for name, extra in (("vqct", []), ("vqct_lg", ["alignment=lgvq", "lgvq.visual_width=16", "lgvq.max_length=16"])):
        assert main(["train-tokenizer", "--config", str(write_config(tmp_path / f"{name}.yaml", cfg)),
                     f"train.output_dir={tmp_path / name}", *extra]) == 0
        tok = VQTokenizer.from_pretrained(tmp_path / name / "model").eval()
        assert tok.tokens_per_position == 3 and tok.vocab_size >= 10
        images = torch.rand(2, 3, 32, 32) * 2 - 1
        with torch.no_grad():
            ids = tok.encode(images)
            assert ids.shape == (2, 16, 16, 3)
            again = VQTokenizer.from_pretrained(tmp_path / name / "model").eval()
            assert torch.equal(again.encode(images), ids)
            q = tok.quantizer(tok.encode_features(images)).quantized
            assert torch.equal(tok.quantizer.embed(ids), q)
            assert torch.equal(tok.decode(ids), tok(images).reconstruction)
    assert VQTokenizer.from_pretrained(tmp_path / "vqct" / "model").quantizer.l2_norm == cfg["model"]["l2_norm"]
    # saved in the flat layout of earlier versions (quantizer arguments beside the autoencoder's, the
    # VQCT sizes in `vqct`): still loads; a VQCT spec without l2_norm keeps the Euclidean lookup
    new = {k: v for k, v in tok.config.items() if not k.startswith("_")}
    q = new.pop("quantizer_config")
    legacy = new | {"alignment": None, "l2_norm": True, "beta": q["beta"], "usage_window": q["usage_window"],
                    "vqct": {k: v for k, v in q["vqct"].items() if k != "vocab"}}
    old = VQTokenizer.from_config(legacy)
    assert old.quantizer.l2_norm is False and old.tokens_per_position == 3 and old.vocab_size == tok.vocab_size
    # stage two over VQCT's three tokens per position: the store, a prior and a decoded sample
    from lgvq.pipelines import load_pipeline
    from tests.conftest import tiny_prior_config

    store = tmp_path / "codes"
    assert main(["encode", "--tokenizer", str(tmp_path / "vqct" / "model"), "--out", str(store), "--batch-size", "16",
                 "data.num_train=16", "data.num_val=4"]) == 0
    assert main(["train-prior", "--config", str(tiny_prior_config(tmp_path, store, "class")),
                 "train.max_steps=2"]) == 0
    pipe = load_pipeline(tmp_path / "prior", device="cpu")
    assert pipe.prior.config.seq_len == 16 * 16 * 3
    assert pipe(["red circle"], seed=0, batch_size=1)[0].size == (32, 32)
