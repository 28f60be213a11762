"""The GPT prior: cached decoding equals full recomputation, guidance, condition checks, save/load."""

import json

import pytest
import torch

from lgvq.errors import ConfigError
from lgvq.priors.model import Condition, PriorTransformer, prior_args
from lgvq.priors.sampling import generate

V, N, L, D = 40, 12, 5, 16


def make_prior(conditioning: str, **kw) -> PriorTransformer:
    torch.manual_seed(0)
    extra = {"class": dict(num_classes=6), "text": dict(text_width=D, text_length=L)}.get(conditioning, {})
    prior = PriorTransformer(prior_args(vocab_size=V, seq_len=N, conditioning=conditioning, dim=32, depth=2,
                                        heads=4, **extra, **kw)).eval()
    if getattr(prior, "word_embedding", None) is not None:  # zero at init: give the rows something to say
        torch.nn.init.normal_(prior.word_embedding.weight)
    if prior.code_layers is not None:  # a tokenizer's code vectors stand in as random ones
        prior.code_layers.set_code_vectors(torch.randn(V, prior.config.code_width))
    return prior


def make_condition(conditioning: str, b: int = 3) -> Condition:
    g = torch.Generator().manual_seed(1)
    if conditioning == "class":
        return Condition(labels=torch.tensor([0, 5, 2])[:b])
    if conditioning == "text":
        mask = torch.ones(b, L, dtype=torch.bool)
        mask[0, 3:] = False  # padded prompts must not change what the cache sees
        mask[1, 4:] = False
        ids = torch.randint(1, 1000, (b, L), generator=g) * mask
        return Condition(text=torch.randn(b, L, D, generator=g) * mask[..., None], text_mask=mask, text_ids=ids)
    return Condition(batch_size=b)


@pytest.mark.parametrize("conditioning", ["none", "class", "text"])
@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
def test_cached_and_uncached_decoding_agree(conditioning, cfg_scale):
    prior, cond = make_prior(conditioning), make_condition(conditioning)
    cached, cached_logits = generate(prior, cond, temperature=0, cfg_scale=cfg_scale, use_cache=True,
                                     return_logits=True)
    full, full_logits = generate(prior, cond, temperature=0, cfg_scale=cfg_scale, use_cache=False,
                                 return_logits=True)
    assert torch.equal(cached, full)
    assert torch.allclose(cached_logits, full_logits, atol=1e-5)
    assert cached.shape == (3, N)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("options", [dict(text_layers=2), dict(grid_positions=True, token_shape=(3, 4)),
                                     dict(grid_positions=True, token_shape=(2, 3), tokens_per_position=2),
                                     dict(group_size=2, token_shape=(2, 6)),
                                     dict(group_size=2, token_shape=(2, 6), grid_positions=True, text_layers=1),
                                     dict(qk_norm=True, text_layers=1), dict(prompt_word_rows=7, text_layers=1),
                                     dict(code_features=True, code_width=6),
                                     dict(group_size=2, token_shape=(2, 6), code_features=True, code_width=6)])
def test_cached_and_uncached_decoding_agree_with_a_prompt_encoder_or_grid_positions(cfg_scale, options):
    prior, cond = make_prior("text", **options), make_condition("text")
    cached, cached_logits = generate(prior, cond, temperature=0, cfg_scale=cfg_scale, return_logits=True)
    full, full_logits = generate(prior, cond, temperature=0, cfg_scale=cfg_scale, use_cache=False,
                                 return_logits=True)
    assert torch.equal(cached, full)
    assert torch.allclose(cached_logits, full_logits, atol=1e-5)
    if cfg_scale == 1.0:  # and they are the training forward's logits
        with torch.no_grad():
            assert torch.allclose(cached_logits, prior(cached, cond), atol=1e-5)


STATIC_CASES = {"unconditional": ("none", {}, 0), "class": ("class", {}, 0), "text": ("text", {}, 0),
                "QK-norm, prompt encoder": ("text", dict(qk_norm=True, text_layers=1), 0),
                "narrow heads": ("text", dict(dim_head=8, text_layers=1), 0),
                "word-piece rows": ("text", dict(prompt_word_rows=7), 0),
                "2 tokens a cell": ("text", dict(grid_positions=True, token_shape=(2, 3), tokens_per_position=2), 0),
                "grouped": ("text", dict(group_size=2, token_shape=(2, 6), grid_positions=True), 0),
                "code features": ("class", dict(code_features=True, code_width=6), 0),
                "grouped, code features": ("text", dict(group_size=2, token_shape=(2, 6), code_features=True,
                                                        code_width=6), 0),
                "completion": ("class", {}, 5)}


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("case", list(STATIC_CASES))
def test_the_static_cache_draws_the_same_tokens_as_the_kv_cache(case, cfg_scale):
    """Sampling at temperature 1 from the same seed over preallocated keys and values gives the same
    tokens, logits and re-ranking scores as x-transformers' cache: with and without guidance, for
    every conditioning, a grouped prior, several tokens a cell, and completion of given tokens."""
    conditioning, options, kept = STATIC_CASES[case]
    prior, cond = make_prior(conditioning, **options), make_condition(conditioning)
    prompt = torch.randint(0, V, (3, kept), generator=torch.Generator().manual_seed(2)) if kept else None
    scored = conditioning != "none"
    (a, logits_a, *scores_a), (b, logits_b, *scores_b) = (
        generate(prior, cond, cfg_scale=cfg_scale, generator=torch.Generator().manual_seed(7), prompt_tokens=prompt,
                 return_logits=True, return_scores=scored, static_cache=static) for static in (False, True))
    assert torch.equal(a, b)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    if scored:
        assert torch.allclose(scores_a[0], scores_b[0], atol=1e-4)
    if kept:
        assert torch.equal(b[:, :kept], prompt)


def test_the_static_cache_gives_the_same_states_with_the_fixed_shapes_a_cuda_graph_needs():
    """A compiled step attends over every slot (the unwritten ones masked) so that its shapes never
    change; eager decoding over the written slots only must give the same hidden states."""
    from lgvq.priors.static_cache import StaticDecoder

    prior, cond = make_prior("text", qk_norm=True), make_condition("text")
    prefix, mask = prior.prefix(cond)
    tokens = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(3))
    states = []
    for fixed in (False, True):
        decoder = StaticDecoder(prior.net, 3, prefix.shape[1] + N)
        decoder.fixed_shapes = fixed
        out = [decoder.prefill(prefix, mask)]
        for i in range(N - 1):
            x = prior.input_embeddings(tokens[:, i:i + 1], prefix.dtype, start=i)
            out.append(decoder.step(x, torch.tensor(prefix.shape[1] + i)))
        states.append(torch.cat(out, 1))
    assert torch.allclose(states[0], states[1], atol=1e-5)


def test_the_static_cache_is_used_only_for_the_decoders_it_follows():
    from lgvq.priors.static_cache import StaticDecoder, supported
    from lgvq.xtransformers import Decoder, TransformerWrapper

    assert supported(make_prior("text", qk_norm=True).net)
    memory = TransformerWrapper(num_tokens=V, max_seq_len=N, attn_layers=Decoder(dim=32, depth=1, heads=2,
                                                                                    attn_num_mem_kv=2))
    assert not supported(memory)
    with pytest.raises(ValueError, match="static cache does not follow"):
        StaticDecoder(memory, 2, N)
    # under bf16 autocast the cache holds what the projections give
    prior, cond = make_prior("text"), make_condition("text")
    with torch.autocast("cpu", torch.bfloat16):
        tokens = generate(prior, cond, cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (3, N) and 0 <= tokens.min() and tokens.max() < V


def test_prompt_encoder_lets_each_word_see_the_whole_prompt_but_not_the_padding():
    """With text_layers the first word's prefix embedding depends on a later word; without, it does
    not. Padding features never matter."""
    cond = make_condition("text")
    later_word = Condition(text=cond.text.clone(), text_mask=cond.text_mask)
    other_word = torch.randn(D, generator=torch.Generator().manual_seed(7))
    later_word.text[2, 3] = other_word  # row 2 has no padding: its fourth word changes
    padding = Condition(text=cond.text.clone(), text_mask=cond.text_mask)
    padding.text[0, 4] = other_word  # row 0 is padded after three words
    for layers, first_word_moves in ((2, True), (0, False)):
        prior = make_prior("text", text_layers=layers)
        with torch.no_grad():
            base, moved = prior.prefix(cond)[0], prior.prefix(later_word)[0]
            assert torch.allclose(base[2, 0], moved[2, 0]) != first_word_moves
            assert torch.allclose(base[:2], moved[:2])  # other rows unchanged
            assert torch.allclose(base[0, :3], prior.prefix(padding)[0][0, :3], atol=1e-6)


def test_grid_positions_give_each_input_the_cell_of_the_token_it_predicts():
    prior = make_prior("text", grid_positions=True, token_shape=(3, 4))
    grid = prior.grid_embeddings(N - 1)
    row, col = prior.row_embedding.weight, prior.column_embedding.weight
    assert torch.allclose(grid[0], row[0] + col[1])  # input 0 predicts token 1: row 0, column 1
    assert torch.allclose(grid[3], row[1] + col[0])  # input 3 predicts token 4: first of row 1
    assert torch.allclose(grid[10], row[2] + col[3])
    vqct = make_prior("text", grid_positions=True, token_shape=(2, 3), tokens_per_position=2)
    slot = vqct.slot_embedding.weight
    assert torch.allclose(vqct.grid_embeddings(N - 1)[6], vqct.row_embedding.weight[1] +
                          vqct.column_embedding.weight[0] + slot[1])  # token 7: cell 3, second slot
    assert make_prior("text").grid_embeddings(N - 1) is None


def test_two_pass_guidance_equals_the_doubled_batch():
    prior, cond = make_prior("text"), make_condition("text")
    _, batched = generate(prior, cond, temperature=0, cfg_scale=3.0, return_logits=True)
    _, two_pass = generate(prior, cond, temperature=0, cfg_scale=3.0, return_logits=True, guidance_batch=False)
    assert torch.allclose(batched, two_pass, atol=1e-5)


@pytest.mark.parametrize("conditioning", ["none", "class", "text"])
def test_sampling_logits_match_teacher_forcing(conditioning):
    """The logits the sampler acts on are the training forward's logits for the same tokens."""
    prior, cond = make_prior(conditioning), make_condition(conditioning)
    tokens, logits = generate(prior, cond, temperature=0, return_logits=True)
    with torch.no_grad():
        forced = prior(tokens, cond)
    assert torch.allclose(logits, forced, atol=1e-5)


def test_guidance_combines_conditional_and_null_logits():
    prior, cond = make_prior("class"), make_condition("class")
    _, guided = generate(prior, cond, temperature=0, cfg_scale=2.5, return_logits=True, prompt_tokens=None)
    tokens = guided.argmax(-1)
    with torch.no_grad():
        c = prior(tokens, cond)
        u = prior(tokens, cond, drop=torch.ones(3, dtype=torch.bool))
    assert torch.allclose(guided, u + 2.5 * (c - u), atol=1e-4)


def test_seeded_sampling_is_reproducible_and_seeds_differ():
    prior, cond = make_prior("class"), make_condition("class")
    run = lambda seed: generate(prior, cond, top_k=10, top_p=0.9, cfg_scale=2.0,
                                generator=torch.Generator().manual_seed(seed))
    assert torch.equal(run(0), run(0))
    assert not torch.equal(run(0), run(1))


def test_completion_keeps_the_given_tokens():
    prior, cond = make_prior("none"), make_condition("none")
    prompt = torch.randint(0, V, (3, 5))
    out = generate(prior, cond, prompt_tokens=prompt, generator=torch.Generator().manual_seed(0))
    assert out.shape == (3, N) and torch.equal(out[:, :5], prompt)


def test_grouped_tokens_go_to_blocks_and_back():
    from lgvq.priors.groups import from_groups, to_groups
    tokens = torch.arange(2 * 4 * 6).reshape(2, 24)  # two 4 x 6 grids in raster order
    groups = to_groups(tokens, (4, 6), 2)
    assert groups.shape == (2, 6, 4)
    assert groups[0, 0].tolist() == [0, 1, 6, 7] and groups[0, 1].tolist() == [2, 3, 8, 9]
    assert groups[0, 3].tolist() == [12, 13, 18, 19]  # second row of blocks
    assert torch.equal(from_groups(groups, (4, 6), 2), tokens)


def test_a_grouped_prior_predicts_each_code_from_earlier_positions_and_earlier_codes_of_its_block():
    """Changing one code changes the logits of the codes after it (in block order), never before."""
    prior, cond = make_prior("class", group_size=2, token_shape=(2, 6)), make_condition("class")
    tokens = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(0))
    rank = prior.from_positions(torch.arange(N).reshape(1, N // 4, 4))[0]  # raster position -> block order
    with torch.no_grad():
        before = prior(tokens, cond)
        changed = tokens.clone()
        changed[:, 7] = (changed[:, 7] + 1) % V  # raster 7 = block 0, slot 3 (grid 2 x 6: row 1, column 1)
        after = prior(changed, cond)
    moved = (before - after).abs().amax((0, 2)) > 1e-6  # (N,) raster positions whose logits moved
    assert not moved[rank <= rank[7]].any() and moved[rank > rank[7]].all()
    changed = tokens.clone()
    changed[:, 0] = (changed[:, 0] + 1) % V  # block 0, slot 0: moves slots 1-3 of its own block
    with torch.no_grad():
        moved = (before - prior(changed, cond)).abs().amax((0, 2)) > 1e-6
    assert moved[[1, 6, 7]].all() and not moved[0]


@pytest.mark.parametrize("options", [{}, dict(group_size=2, token_shape=(2, 6), code_features=True, code_width=6)])
def test_the_training_loss_is_the_cross_entropy_of_the_raster_order_logits(options):
    """A grouped prior scores its blocks in the decoder's order: the same terms, the same mean."""
    prior, cond = make_prior("class", **options), make_condition("class")
    tokens = torch.randint(0, V, (3, N), generator=torch.Generator().manual_seed(0))
    keep = torch.zeros(3, dtype=torch.bool)
    with torch.no_grad():
        logits = prior(tokens, cond, drop=keep)
        loss = prior(tokens, cond, drop=keep, targets=tokens)
    assert logits.shape == (3, N, V)
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits.flatten(0, 1), tokens.flatten()))


def test_code_vector_scores_are_the_projected_hidden_state_against_every_code_vector():
    prior = make_prior("none", code_features=True, code_width=6)
    hidden = torch.randn(5, 32)
    features = prior.code_layers
    with torch.no_grad():
        scores = features.output(hidden) @ features.norm(features.code_vectors).t()  # (5, V)
        assert torch.allclose(prior.output_logits(hidden), prior.net.to_logits(hidden) + scores, atol=1e-6)


def test_grouped_completion_keeps_whole_rows_of_blocks_and_says_when_they_are_not():
    from lgvq.errors import PromptError
    prior, cond = make_prior("none", group_size=2, token_shape=(2, 6)), make_condition("none")
    prompt = torch.randint(0, V, (3, 12))
    out = generate(prior, cond, prompt_tokens=prompt, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out, prompt)
    with pytest.raises(PromptError, match="whole rows of blocks"):
        generate(prior, cond, prompt_tokens=prompt[:, :6])


def test_group_size_must_divide_the_grid():
    with pytest.raises(ValueError, match="must divide the token grid"):
        make_prior("none", group_size=2, token_shape=(3, 4))


def test_top_k_one_is_greedy():
    prior, cond = make_prior("text"), make_condition("text")
    greedy = generate(prior, cond, temperature=0)
    top1 = generate(prior, cond, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(greedy, top1)


def test_condition_errors_are_clear():
    with pytest.raises(ValueError, match="class out of range"):
        generate(make_prior("class"), Condition(labels=torch.tensor([6])))
    with pytest.raises(ValueError, match="give a prompt"):
        generate(make_prior("text"), Condition(labels=torch.tensor([1])))
    with pytest.raises(ValueError, match="not trained with classes or prompts"):
        generate(make_prior("none"), Condition(labels=torch.tensor([1])))
    text = make_condition("text")
    too_long = Condition(text=torch.zeros(1, L + 2, D), text_mask=torch.ones(1, L + 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="at most"):
        generate(make_prior("text"), too_long)
    with pytest.raises(ValueError, match="temperature"):
        generate(make_prior("text"), text, temperature=-1)
    with pytest.raises(ValueError, match="token ids"):
        generate(make_prior("text", prompt_word_rows=7), Condition(text=text.text, text_mask=text.text_mask))


def test_word_piece_rows_start_silent_and_then_tell_same_features_with_other_words_apart():
    """prompt_word_rows: a learned row per word piece (ids hashed into the rows) added to the projected
    features; zero at first, so a new prior reads the prompt as it would without them."""
    plain, cond = make_prior("text"), make_condition("text")
    torch.manual_seed(0)
    words = PriorTransformer(prior_args(vocab_size=V, seq_len=N, conditioning="text", dim=32, depth=2, heads=4,
                                        text_width=D, text_length=L, prompt_word_rows=7)).eval()
    with torch.no_grad():
        assert torch.equal(words.prefix(cond)[0], plain.prefix(cond)[0])
        torch.nn.init.normal_(words.word_embedding.weight)
        other = Condition(text=cond.text, text_mask=cond.text_mask, text_ids=cond.text_ids + 1)
        same_rows = Condition(text=cond.text, text_mask=cond.text_mask, text_ids=cond.text_ids + 7)
        assert not torch.equal(words.prefix(cond)[0], words.prefix(other)[0])
        assert torch.equal(words.prefix(cond)[0], words.prefix(same_rows)[0])  # id % rows


def test_condition_dropout_only_in_training():
    prior = make_prior("class", cond_dropout=0.5)
    assert prior.drop_mask(100) is None
    prior.train()
    torch.manual_seed(0)
    dropped = prior.drop_mask(1000).float().mean()
    assert 0.4 < dropped < 0.6


@pytest.mark.parametrize("options", [{}, dict(text_layers=2, grid_positions=True, token_shape=(3, 4)),
                                     dict(group_size=2, token_shape=(2, 6)), dict(qk_norm=True, text_layers=1),
                                     dict(prompt_word_rows=7), dict(dim_head=8, text_layers=1)])
def test_save_and_load_round_trip(tmp_path, options):
    prior, cond = make_prior("text", **options), make_condition("text")
    prior.save_pretrained(tmp_path / "prior")
    again = PriorTransformer.from_pretrained(tmp_path / "prior").eval()
    assert torch.equal(generate(prior, cond, temperature=0), generate(again, cond, temperature=0))



def sequence_log_likelihood(prior: PriorTransformer, tokens: torch.Tensor, cond: Condition, null: bool) -> torch.Tensor:
    """(B,) sum of log p(token | earlier tokens, condition or null condition), teacher-forced."""
    drop = torch.full((tokens.shape[0],), null)
    with torch.no_grad():
        logp = torch.log_softmax(prior(tokens, cond, drop=drop).float(), -1)
    return logp.gather(2, tokens[..., None])[..., 0].sum(1)


@pytest.mark.parametrize("cfg_scale", [1.0, 3.0])
@pytest.mark.parametrize("options", [{}, dict(group_size=2, token_shape=(2, 6))])
def test_rerank_scores_are_the_conditional_minus_null_log_likelihood_of_the_sample(cfg_scale, options):
    """The score re-ranking sorts by is log p(x | c) - log p(x | null) of the drawn tokens, the same
    number teacher forcing gives, and asking for it leaves the samples as they were."""
    prior, cond = make_prior("text", **options), make_condition("text")
    seed = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    plain = generate(prior, cond, cfg_scale=cfg_scale, generator=seed())
    tokens, scores = generate(prior, cond, cfg_scale=cfg_scale, generator=seed(), return_scores=True)
    assert torch.equal(tokens, plain)
    expected = sequence_log_likelihood(prior, tokens, cond, False) - sequence_log_likelihood(prior, tokens, cond, True)
    assert torch.allclose(scores, expected, atol=1e-4)
    with pytest.raises(ValueError, match="re-ranking needs a conditional prior"):
        generate(make_prior("none"), make_condition("none"), return_scores=True)


def test_prior_args_hold_the_architecture_and_the_stores_facts_and_save_flat(tmp_path):
    prior = make_prior("class")
    assert prior.args.architecture.dim == 32 and prior.args.data.num_classes == 6
    prior.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["dim"] == 32 and saved["num_classes"] == 6 and saved["vocab_size"] == V  # one flat dict, as before
    again = PriorTransformer.from_pretrained(tmp_path / "m")
    assert again.args == prior.args
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), prior.state_dict().values()))
    with pytest.raises(ConfigError, match="unknown prior argument"):
        prior_args(vocab_size=V, seq_len=N, widht=32)


def test_the_attention_is_heads_times_dim_head_wide_and_a_prior_saved_without_it_loads_at_64(tmp_path):
    """`dim_head` sets every attention layer's inner width (decoder and prompt layers); a prior saved
    before the option existed has x-transformers' 64 and loads as it was."""
    def widths(prior):
        return [m.to_q.out_features for m in prior.modules() if type(m).__name__ == "Attention"]

    assert widths(make_prior("text", dim_head=8, text_layers=1)) == [4 * 8] * 3  # 2 decoder + 1 prompt layer
    prior = make_prior("text")
    assert widths(prior) == [4 * 64] * 2
    prior.save_pretrained(tmp_path / "m")
    config = tmp_path / "m" / "config.json"
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "dim_head"}))
    again = PriorTransformer.from_pretrained(tmp_path / "m").eval()
    assert again.args.architecture.dim_head == 64
    cond = make_condition("text")
    assert torch.equal(generate(prior, cond, temperature=0), generate(again, cond, temperature=0))


def test_named_sizes_set_width_depth_and_heads_and_refuse_a_clash():
    from lgvq.config import load_config
    from lgvq.priors.args import SIZES, sized
    from lgvq.priors.config import PriorRunConfig

    cfg = load_config(PriorRunConfig, overrides=["model.size=base", "model.qk_norm=true"])
    arch = cfg.model.architecture()
    assert (arch.dim, arch.depth, arch.heads) == (512, 8, 8) and arch.qk_norm
    assert sized("small") == load_config(PriorRunConfig).model.architecture()  # small is the default
    assert set(SIZES) == {"tiny", "small", "base", "large"}
    with pytest.raises(ConfigError, match="model.size=tiny sets dim=128"):
        load_config(PriorRunConfig, overrides=["model.size=tiny", "model.dim=512"]).model.architecture()
    with pytest.raises(ConfigError, match="model.size"):
        load_config(PriorRunConfig, overrides=["model.size=huge"])
