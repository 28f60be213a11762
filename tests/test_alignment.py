"""LG-VQ: each loss against its equation, the closed MTP leak, gradients, the text cache, export."""

import math

import pytest
import torch

from lgvq.alignment.lgvq import LGVQAlignment, LGVQConfig, exact_word_mask
from lgvq.alignment.losses import gsa_loss, mtp_loss, ras_loss
from lgvq.text.cache import TextFeatureCache
from lgvq.text.encoder import FrozenTextEncoder
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.quantizers.config import quantizer_dict


@pytest.fixture(scope="module")
def minilm():
    return FrozenTextEncoder("minilm", max_length=16)


def test_gsa_matches_equation_5():
    torch.manual_seed(0)
    cls, eot = torch.randn(4, 6), torch.randn(4, 6)
    cos = lambda a, b: float((a @ b) / (a.norm() * b.norm()))
    direct = -sum(math.log(math.exp(cos(cls[i], eot[i])) / sum(math.exp(cos(cls[i], eot[j])) for j in range(4)))
                  for i in range(4)) / 4
    assert float(gsa_loss(cls, eot)) == pytest.approx(direct, rel=1e-5)
    sym = gsa_loss(cls, eot, symmetric=True)
    assert float(sym) == pytest.approx(0.5 * (direct + float(gsa_loss(eot, cls))), rel=1e-5)


def test_ras_matches_equation_8_and_official_padding_mean():
    torch.manual_seed(0)
    w, z = torch.randn(2, 4, 5), torch.randn(2, 4, 5)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    cos = lambda a, b: float((a @ b) / (a.norm() * b.norm()))
    terms = [(cos(w[b, i], w[b, j]) - cos(z[b, i], z[b, j])) ** 2
             for b in range(2) for i in range(4) for j in range(4) if mask[b, i] and mask[b, j]]
    assert float(ras_loss(w, z, mask)) == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    assert float(ras_loss(w, z, mask, mean_over_padding=True)) == pytest.approx(sum(terms) / (2 * 4 * 4), rel=1e-5)
    wg, zg = w.clone().requires_grad_(True), z.clone().requires_grad_(True)
    ras_loss(wg, zg, mask).backward()
    assert wg.grad is None and zg.grad.abs().sum() > 0  # the word-word target is detached


def test_mtp_is_label_smoothed_cross_entropy():
    torch.manual_seed(0)
    logits, target = torch.randn(3, 7), torch.tensor([1, 4, 6])
    logp = logits.log_softmax(-1)
    direct = -(0.9 * logp[range(3), target] + 0.1 * logp.mean(-1)).mean()
    assert float(mtp_loss(logits, target, 0.1)) == pytest.approx(float(direct), rel=1e-5)
    assert float(mtp_loss(logits[:0], target[:0])) == 0.0


def alignment_for(encoder, context="embeddings", code_dim=8, tokens=4):
    torch.manual_seed(0)
    cfg = LGVQConfig(mtp_text_context=context, max_length=encoder.max_length, visual_width=16)
    return LGVQAlignment(cfg, code_dim, tokens, encoder.width, encoder.sentence_width, encoder.vocab_size)


def predictor_input(model, encoder, caption, masked_word):
    feats = encoder.encode([caption])
    words = encoder.tokenizer.convert_ids_to_tokens(feats.input_ids[0])
    masked = torch.tensor([[w == masked_word for w in words]])
    assert masked.sum() == 1

    def encode_ids(ids, mask, m):
        return encoder(ids.masked_fill(m, encoder.tokenizer.mask_token_id), mask).tokens

    return model.masked_text_input(feats, masked, encoder.token_embedding_matrix(), encode_ids)


@pytest.mark.parametrize("context", ["embeddings", "masked"])
def test_mtp_leak_closed_changing_a_masked_word_changes_nothing_the_predictor_sees(minilm, context):
    model = alignment_for(minilm, context)
    a = predictor_input(model, minilm, "a small red circle above a blue square", "red")
    b = predictor_input(model, minilm, "a small green circle above a blue square", "green")
    assert torch.equal(a, b)


def test_official_unmasked_context_leaks(minilm):
    model = alignment_for(minilm, "unmasked")
    a = predictor_input(model, minilm, "a small red circle above a blue square", "red")
    b = predictor_input(model, minilm, "a small green circle above a blue square", "green")
    assert not torch.allclose(a, b)  # the other tokens' contextual features saw the masked word


def test_exact_word_mask_counts():
    maskable = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0]], dtype=torch.bool)
    m = exact_word_mask(maskable, 2, torch.Generator().manual_seed(0))
    assert m.sum(1).tolist() == [2, 1] and not (m & ~maskable).any()


def test_alignment_gradients_reach_the_encoder_and_not_the_frozen_text_model(minilm):
    torch.manual_seed(0)
    cfg = LGVQConfig(max_length=minilm.max_length, visual_width=16, gsa_weight=1, mtp_weight=1, ras_weight=1)
    spec = {"method": "lgvq", "config": vars(cfg), "text_width": minilm.width,
            "sentence_width": minilm.sentence_width, "vocab_size": minilm.vocab_size}
    tok = VQTokenizer(resolution=16, ch=16, ch_mult=(1, 2), attn_resolutions=(), z_channels=8, embed_dim=8,
                      norm_groups=8, quantizer_config=quantizer_dict(codebook_size=16), alignment=spec).train()
    captions = ["a small red circle", "a large blue square above a small red triangle"]
    feats = TextFeatureCache(minilm)(captions)
    special = torch.tensor(sorted(minilm.special_token_ids()))
    maskable = feats.mask & ~torch.isin(feats.input_ids, special)
    out = tok(torch.rand(2, 3, 16, 16) * 2 - 1, {"text": feats, "token_embeddings": minilm.token_embedding_matrix(),
                                                  "maskable": maskable})
    assert {"gsa", "mtp", "ras", "align"} <= set(out.losses)
    out.losses["align"].backward()
    assert tok.encoder.conv_in.weight.grad.abs().sum() > 0
    assert tok.aligner.visual.cls.grad is not None and tok.aligner.code_proj.linear.weight.grad is not None
    assert all(p.grad is None for p in minilm.parameters())


def test_visual_encoder_run_by_hand_matches_torch_encoder_layers():
    from einops import rearrange

    from lgvq.alignment.modules import VisualTokenEncoder

    torch.manual_seed(0)
    enc = VisualTokenEncoder(code_dim=16, num_tokens=9, width=32, out_dim=24, layers=2, heads=2).train()
    quantized = torch.randn(3, 16, 3, 3)
    x = enc.input(rearrange(quantized, "b c h w -> b (h w) c"))
    x = torch.cat([enc.cls.expand(3, 1, -1), x], dim=1) + enc.pos
    official = enc.ln_post(enc.transformer(enc.ln_pre(x)))  # torch's own encoder
    assert torch.allclose(enc.hidden(quantized), official, atol=1e-5)


def test_predictor_cross_attention_dropout_drops_the_value_bias_too():
    """With every attention weight dropped, torch's layer adds nothing from the values, bias
    included: the factored form must carry the bias through the weights' sum, not add it as is."""
    from lgvq.alignment.modules import MaskedTextPredictor

    torch.manual_seed(0)
    pred = MaskedTextPredictor(dim=24, max_length=6, vocab_size=50, layers=2, heads=2, dropout=0.0).train()
    for layer in pred.decoder.layers:
        layer.multihead_attn.dropout = 1.0
        torch.nn.init.normal_(layer.multihead_attn.in_proj_bias)
    text, visual = torch.randn(3, 6, 24), torch.randn(3, 10, 24)
    mask = torch.ones(3, 6, dtype=torch.bool)
    assert torch.allclose(pred(text, mask, visual), pred.decoder(text, visual), atol=1e-5)


def test_predictor_keeps_torch_decoder_layers_and_factored_keys_are_exact():
    from lgvq.alignment.modules import MaskedTextPredictor

    torch.manual_seed(0)
    pred = MaskedTextPredictor(dim=24, max_length=6, vocab_size=50, layers=2, heads=2).eval()
    text, visual_hidden = torch.randn(3, 6, 24), torch.randn(3, 10, 8)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 2 + [0] * 4], dtype=torch.bool)
    proj = torch.randn(24, 8)  # Z_vt = H P^T, as VisualTokenEncoder's bias-free projection
    visual = visual_hidden @ proj.t()
    official = pred.decoder(text, visual, tgt_key_padding_mask=~mask)  # torch's own decoder
    ours = pred(text, mask, visual)
    factored = pred(text, mask, visual, visual_factors=(visual_hidden, proj))
    real = mask[..., None]  # padded rows differ only by torch's fast-path conventions
    assert torch.allclose((ours * real), (official * real), atol=1e-5)
    assert torch.allclose(factored, ours, atol=1e-5)


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_alignment_precision_keeps_losses_and_gradients(minilm, precision):
    torch.manual_seed(0)
    exact = alignment_for(minilm, "embeddings")
    exact.cfg.precision = "fp32"
    model = alignment_for(minilm, "embeddings")
    model.load_state_dict(exact.state_dict())
    model.cfg.precision = precision
    captions = ["a small red circle", "a large blue square above a small red triangle"]
    feats = TextFeatureCache(minilm)(captions)
    maskable = feats.mask & ~torch.isin(feats.input_ids, torch.tensor(sorted(minilm.special_token_ids())))
    quantized = torch.randn(2, 8, 2, 2, requires_grad=True)  # alignment_for: 4 tokens of width 8
    outs = []
    for m in (exact.eval(), model.eval()):  # no dropout: the two runs see the same noise
        torch.manual_seed(1)  # the same mask ratio and masked words
        out = m(quantized, feats, minilm.token_embedding_matrix(), maskable)
        assert all(v.dtype == torch.float32 for v in out.values())
        (grad,) = torch.autograd.grad(out["align"], quantized)
        outs.append((out, grad))
    (a, ga), (b, gb) = outs
    for name in ("gsa", "mtp", "ras"):
        assert math.isclose(float(a[name].detach()), float(b[name].detach()), rel_tol=0.02, abs_tol=1e-3), name
    assert torch.nn.functional.cosine_similarity(ga.flatten(), gb.flatten(), dim=0) > 0.98
    assert torch.equal(ga, gb) == (precision == "fp32")  # bf16 really ran in bf16


def test_training_losses_equal_the_equations_on_the_whole_visual_tokens(minilm):
    """The training step projects only [CLS] of Z_vt with autograd and gives the predictor Z_vt's
    factors; losses and gradients must equal those of the pieces on the whole Z_vt."""
    from lgvq.alignment.lgvq import random_word_mask, sample_mask_ratio

    model = alignment_for(minilm).eval()  # eval: no dropout, so both paths see the same noise
    model.cfg.precision = "fp32"
    model.cfg.gsa_weight = model.cfg.mtp_weight = model.cfg.ras_weight = 1.0
    captions = ["a small red circle", "a large blue square above a small red triangle"]
    feats = TextFeatureCache(minilm)(captions)
    maskable = feats.mask & ~torch.isin(feats.input_ids, torch.tensor(sorted(minilm.special_token_ids())))
    emb = minilm.token_embedding_matrix()
    quantized = torch.randn(2, 8, 2, 2, requires_grad=True)
    torch.manual_seed(1)
    fast = model(quantized, feats, emb, maskable)

    torch.manual_seed(1)
    z_vt = model.visual_tokens(quantized)  # (B, 1 + N, D), every token with autograd
    gsa = gsa_loss(model.image_embedding(z_vt), feats.sentence, model.cfg.gsa_temperature)
    masked = random_word_mask(maskable, sample_mask_ratio(model.cfg))
    mtp = mtp_loss(model.predict_masked(z_vt, feats, masked, emb), feats.input_ids[masked], model.cfg.label_smoothing)
    ras = ras_loss(feats.tokens, model.relation_codes(quantized, z_vt[:, 1:], feats.tokens), feats.mask)
    reference = {"gsa": gsa, "mtp": mtp, "ras": ras, "align": gsa + mtp + ras}
    for name, value in reference.items():
        assert torch.allclose(fast[name], value, atol=1e-5), name
    params = [quantized, *model.parameters()]
    fast_grads = torch.autograd.grad(fast["align"], params, allow_unused=True)
    reference_grads = torch.autograd.grad(reference["align"], params, allow_unused=True)
    for a, b in zip(fast_grads, reference_grads):
        assert (a is None) == (b is None)
        if a is not None:
            assert torch.allclose(a, b, atol=1e-5)


def test_text_cache_encodes_each_caption_once_and_persists(minilm, tmp_path):
    cache = TextFeatureCache(minilm, tmp_path / "cache")
    first = cache(["a red circle", "a blue square", "a red circle"])
    assert cache.encoded_count == 2
    cache(["a blue square", "a red circle"])
    assert cache.encoded_count == 2  # nothing new: the encoder did not run
    direct = minilm.encode(["a red circle"])
    assert torch.allclose(first.tokens[0], direct.tokens[0], atol=1e-6)
    assert torch.allclose(first.sentence[0], direct.sentence[0], atol=1e-6)
    cache.save()
    again = TextFeatureCache(minilm, tmp_path / "cache")
    again(["a red circle"])
    assert again.encoded_count == 0 and len(again) == 2
    other = TextFeatureCache(FrozenTextEncoder("minilm", max_length=12), tmp_path / "cache")
    assert len(other) == 0  # another encoder setting: not reused


def test_mean_pooled_sentence_feature(minilm):
    f = minilm.encode(["a red circle", "a large blue square to the left of a small yellow triangle"])
    manual = (f.tokens * f.mask[..., None]).sum(1) / f.mask.sum(1, keepdim=True)
    assert torch.allclose(f.sentence, manual, atol=1e-6)
    assert f.tokens.shape == (2, 16, 384) and (f.tokens[~f.mask] == 0).all()


def tiny_clip(folder):
    """A random-initialised CLIP text tower with a character-level BPE vocabulary, saved the way
    a downloaded `openai/clip-vit-base-patch32` folder is: the real CLIP code path, offline."""
    import json

    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    # GPT-2/CLIP byte-level alphabet: printable bytes map to themselves, the rest above 255
    printable = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    extra = [b for b in range(256) if b not in printable]
    chars = [chr(b) for b in printable] + [chr(256 + i) for i in range(len(extra))]
    vocab = {t: i for i, t in enumerate(chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"])}
    folder.mkdir()
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"))
    tok.save_pretrained(folder)
    cfg = CLIPTextConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, projection_dim=24,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"],
                         pad_token_id=vocab["<|endoftext|>"])
    torch.manual_seed(0)
    CLIPTextModelWithProjection(cfg).save_pretrained(folder)
    return folder


def test_clip_text_tower_path(tmp_path):
    enc = FrozenTextEncoder(str(tiny_clip(tmp_path / "clip")), max_length=30)
    assert enc.is_clip and enc.pooling == "eot"
    f = enc.encode(["a red circle", "two"])
    assert f.tokens.shape == (2, 30, 32) and f.sentence.shape == (2, 24)  # projected end-of-text token
    direct = enc.model(input_ids=f.input_ids, attention_mask=f.mask.long())
    assert torch.allclose(f.sentence, direct.text_embeds)
    assert enc.token_embedding_matrix().shape == (enc.vocab_size, 32)
    long = enc.encode(["word " * 40])
    assert long.mask.sum() == 30  # truncated to max_length
    with pytest.raises(ValueError, match="pooling"):
        FrozenTextEncoder(str(tmp_path / "clip"), pooling="mean")


def test_train_lgvq_tokenizer_then_diagnostics(tiny_config, tmp_path, capsys):
    from lgvq.cli import main

    overrides = ["alignment=lgvq", "train.max_steps=3", "lgvq.visual_width=16", "lgvq.max_length=16",
                 "lgvq.gsa_weight=1", "lgvq.mtp_weight=1", "lgvq.ras_weight=1",
                 f"lgvq.text_cache_dir={tmp_path / 'text_cache'}"]
    assert main(["train-tokenizer", "--config", str(tiny_config), *overrides]) == 0
    model_dir = tmp_path / "run" / "model"
    tok = VQTokenizer.from_pretrained(model_dir)
    assert tok.aligner is not None and tok.config.alignment["config"]["gsa_weight"] == 1
    assert (tmp_path / "text_cache" / "text_features.safetensors").is_file()
    assert main(["evaluate-alignment", "--model", str(model_dir), "--limit", "12", "--batch-size", "6"]) == 0
    out = capsys.readouterr().out
    assert "retrieval_r@1" in out and "mask_recall@1/mask1/swapped/all" in out and "relation_mse" in out
    # the inference copy drops the alignment modules and encodes identically
    plain = tok.without_alignment().eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert plain.aligner is None and torch.equal(plain.encode(x), tok.eval().encode(x))
    plain.save_pretrained(tmp_path / "plain")
    assert VQTokenizer.from_pretrained(tmp_path / "plain").aligner is None


def test_drop_alignment_in_export(tiny_config, tmp_path):
    from lgvq.cli import main

    assert main(["train-tokenizer", "--config", str(tiny_config), "alignment=lgvq", "train.max_steps=2",
                 "lgvq.visual_width=16", "lgvq.max_length=16", "lgvq.keep_in_export=false"]) == 0
    assert VQTokenizer.from_pretrained(tmp_path / "run" / "model").aligner is None


def test_probe_mode_gives_no_language_gradient_to_the_tokenizer(minilm):
    torch.manual_seed(0)
    cfg = LGVQConfig(max_length=minilm.max_length, visual_width=16, gsa_weight=1, mtp_weight=1, ras_weight=1,
                     detach_codes=True)
    spec = {"method": "lgvq", "config": vars(cfg), "text_width": minilm.width,
            "sentence_width": minilm.sentence_width, "vocab_size": minilm.vocab_size}
    tok = VQTokenizer(resolution=16, ch=16, ch_mult=(1, 2), attn_resolutions=(), z_channels=8, embed_dim=8,
                      norm_groups=8, quantizer_config=quantizer_dict(codebook_size=16), alignment=spec).train()
    feats = TextFeatureCache(minilm)(["a red circle", "a blue square"])
    out = tok(torch.rand(2, 3, 16, 16) * 2 - 1, {"text": feats, "token_embeddings": minilm.token_embedding_matrix(),
                                                  "maskable": feats.mask})
    out.losses["align"].backward()
    assert tok.encoder.conv_in.weight.grad is None
    assert tok.aligner.visual.cls.grad is not None


def test_training_steps_never_run_the_text_encoder_on_seen_captions(tiny_config, tmp_path):
    from lgvq.config import load_config
    from lgvq.tokenizers.config import TokenizerRunConfig
    from lgvq.tokenizers.training import TokenizerTask
    from lgvq.training.trainer import Trainer

    cfg = load_config(TokenizerRunConfig, tiny_config, ["alignment=lgvq", "train.max_steps=3",
                                                        "lgvq.visual_width=16", "lgvq.max_length=16"])
    task = TokenizerTask(cfg)
    precomputed = task.text.cache.encoded_count
    assert precomputed == len(set(task.dataset.all_captions()))  # one batched pass before training
    calls = []
    original = task.text.encoder.forward
    task.text.encoder.forward = lambda *a, **k: calls.append(1) or original(*a, **k)
    Trainer(task, cfg.train, tmp_path / "run").fit()
    assert task.text.cache.encoded_count == precomputed and not calls


def test_alignment_on_the_first_images_of_a_batch_ignores_the_rest(minilm):
    """lgvq.images_per_batch: captions for the first images only; the others get no alignment gradient."""
    model = alignment_for(minilm).eval()
    captions = ["a small red circle", "a large blue square above a small red triangle"]
    feats = TextFeatureCache(minilm)(captions)
    maskable = feats.mask & ~torch.isin(feats.input_ids, torch.tensor(sorted(minilm.special_token_ids())))
    quantized = torch.randn(4, 8, 2, 2, requires_grad=True)
    outs = []
    for images in (quantized, quantized[:2]):
        torch.manual_seed(1)
        outs.append(model(images, feats, minilm.token_embedding_matrix(), maskable))
    for name in ("gsa", "mtp", "ras", "align"):
        assert torch.equal(outs[0][name], outs[1][name]), name
    (grad,) = torch.autograd.grad(outs[0]["align"], quantized)
    assert grad[:2].abs().sum() > 0 and torch.all(grad[2:] == 0)


def test_training_aligns_the_configured_number_of_images(tiny_config, tmp_path, monkeypatch):
    """lgvq.images_per_batch=3 on batches of 4: the alignment reads 3 captions and the 4 images' codes
    (of which it aligns the first 3) at every step."""
    from lgvq.alignment.lgvq import LGVQAlignment
    from lgvq.config import load_config
    from lgvq.tokenizers.config import TokenizerRunConfig
    from lgvq.tokenizers.training import TokenizerTask
    from lgvq.training.trainer import Trainer

    cfg = load_config(TokenizerRunConfig, tiny_config, ["alignment=lgvq", "train.max_steps=2", "train.batch_size=4",
                                                        "lgvq.visual_width=16", "lgvq.max_length=16",
                                                        "lgvq.images_per_batch=3"])
    seen = []
    original = LGVQAlignment.forward
    monkeypatch.setattr(LGVQAlignment, "forward", lambda self, quantized, text, *a, **k: seen.append(
        (quantized.shape[0], text.input_ids.shape[0])) or original(self, quantized, text, *a, **k))
    Trainer(TokenizerTask(cfg), cfg.train, tmp_path / "run").fit()
    assert seen == [(4, 3), (4, 3)]
