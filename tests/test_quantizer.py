import pytest
import torch
import torch.nn.functional as F

from lgvq.errors import ConfigError
from lgvq.tokenizers.quantizers import CVQQuantizer, build_quantizer
from lgvq.tokenizers.quantizers.base import usage_stats
from lgvq.tokenizers.quantizers.config import CVQConfig, QuantizerConfig, quantizer_config_from_dict


def quantizer(codebook_size: int, dim: int, **fields):
    return build_quantizer(QuantizerConfig(codebook_size=codebook_size, **fields), dim)


def make(**kw):
    torch.manual_seed(0)
    return quantizer(16, 6, **kw)


def test_nearest_code_and_shapes():
    q = make()
    z = torch.randn(2, 6, 3, 4)
    out = q(z)
    assert out.ids.shape == (2, 3, 4) and out.quantized.shape == z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, 6)
    expected = torch.cdist(flat, q.codebook.weight).argmin(1).view(2, 3, 4)
    assert torch.equal(out.ids, expected)


def test_beta_weighs_commitment_term_by_default_and_codebook_term_in_legacy():
    z = torch.randn(2, 6, 3, 3)
    for legacy in (False, True):
        q = make(beta=0.25, legacy_beta=legacy)
        zz = z.clone().requires_grad_(True)
        out = q(zz)
        z_e = zz.detach().permute(0, 2, 3, 1)
        e = q.codebook.weight[out.ids].detach()
        codebook, commit = F.mse_loss(e, z_e), F.mse_loss(z_e, e)
        expected = (0.25 * codebook + commit) if legacy else (codebook + 0.25 * commit)
        assert torch.allclose(out.loss, expected)
        # the encoder side only feels the commitment term, the codebook only the codebook term
        out.loss.backward()
        enc_scale = 1.0 if legacy else 0.25
        assert torch.allclose(zz.grad, enc_scale * 2 * (z - e.permute(0, 3, 1, 2)) / z.numel(), atol=1e-6)


def test_straight_through_in_training_exact_codes_in_eval():
    q = make(codebook_dim=3, l2_norm=True)
    z = torch.randn(2, 6, 2, 2, requires_grad=True)
    q.train()
    q(z).quantized.sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    q.eval()
    with torch.no_grad():
        out = q(z)
        assert torch.equal(out.quantized, q.embed(out.ids))


def test_l2_normalised_low_dim_lookup():
    q = make(codebook_dim=3, l2_norm=True)
    assert q.codes().shape == (16, 3)
    assert torch.allclose(q.codes().norm(dim=1), torch.ones(16))
    z = torch.randn(1, 6, 2, 2)
    z_e = q.project_in(z)
    assert torch.allclose(z_e.norm(dim=-1), torch.ones(1, 2, 2), atol=1e-6)
    # cosine lookup: nearest == highest cosine similarity
    assert torch.equal(q.nearest(z_e), (z_e @ q.codes().t()).argmax(-1))


def test_usage_window_slides():
    q = make(usage_window=2)
    q.train()
    with torch.no_grad():
        for _ in range(3):
            q(torch.randn(4, 6, 4, 4))
    window_counts = q.usage_history.sum(0)
    assert window_counts.sum() == 2 * 4 * 16  # only the last two batches
    stats = q.usage()
    assert stats == usage_stats(window_counts)
    assert 0 < stats["usage"] <= 1


def test_usage_stats_perplexity():
    assert usage_stats(torch.tensor([5.0, 5.0, 0.0, 0.0])) == {"usage": 0.5, "perplexity": 2.0}
    uniform = usage_stats(torch.ones(8))
    assert uniform["usage"] == 1.0 and abs(uniform["perplexity"] - 8) < 1e-5


def test_dead_codes_restart_from_encoder_outputs():
    q = make(usage_window=2, dead_code_restart=True, restart_every=2)
    q.train()
    with torch.no_grad():
        q.codebook.weight[8:] = 100.0  # far away: never chosen
        z = torch.randn(4, 6, 4, 4)
        q(z)
        q(z)  # window full; step counter hits restart_every -> restart on the next call
        q(z)
    moved = q.codebook.weight[8:]
    assert (moved.abs() < 100).all()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 6)
    assert all((flat == row).all(1).any() for row in moved)


def _background_batch(n_rare: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """A (2, 6, 8, 8) batch that is one repeated 'background' vector except n_rare distinct ones."""
    torch.manual_seed(1)
    flat = torch.zeros(128, 6)
    flat[:, 0] = 1.0
    rare = torch.randn(n_rare, 6) * 3
    flat[:n_rare] = rare
    return flat.view(2, 8, 8, 6).permute(0, 3, 1, 2).contiguous(), rare


def test_error_sampling_seeds_codes_on_the_rare_features_not_the_common_one():
    z, rare = _background_batch()
    seeded = make(data_init=True, restart_sampling="error").train()
    seeded(z)
    codes = seeded.codebook.weight
    # k-means++: the 7 distinct vectors are all taken before any repeat
    distinct = torch.cat([rare, torch.tensor([[1.0, 0, 0, 0, 0, 0]])])
    assert all((codes == row).all(1).any() for row in distinct)
    uniform = make(data_init=True).train()
    uniform(z)
    n_rare_uniform = sum(bool((uniform.codebook.weight == row).all(1).any()) for row in rare)
    assert n_rare_uniform < len(rare)  # 16 draws among 128 rows, 122 of them background


def test_error_sampling_restarts_dead_codes_where_quantization_is_worst():
    z, rare = _background_batch(n_rare=4)
    q = make(usage_window=1, dead_code_restart=True, restart_every=1, restart_sampling="error").train()
    with torch.no_grad():
        q.codebook.weight.fill_(100.0)  # all far away ...
        q.codebook.weight[0] = torch.tensor([1.0, 0, 0, 0, 0, 0])  # ... but one code on the background
    q(z)  # 15 dead codes; only the 4 rare vectors are badly quantized
    restarted = q.codebook.weight[1:5]
    assert all((restarted == row).all(1).sum() == 1 for row in rare)  # one code each, none on the background
    assert (q.codebook.weight[5:] == 100.0).all()  # no duplicates: the other dead codes wait for the next restart


def test_restart_sampling_is_checked():
    with pytest.raises(ConfigError, match="restart_sampling"):
        quantizer_config_from_dict({"restart_sampling": "worst"})


def test_data_init_takes_codes_from_the_first_training_batch():
    q = make(data_init=True)
    z = torch.randn(2, 6, 4, 4)
    q.eval()
    with torch.no_grad():
        q(z)
    assert not bool(q.initialized)  # evaluation never initialises
    q.train()
    with torch.no_grad():
        q(z)
    assert bool(q.initialized)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 6)
    assert all((flat == row).all(1).any() for row in q.codebook.weight)
    before = q.codebook.weight.clone()
    with torch.no_grad():
        q(torch.randn(2, 6, 4, 4))
    assert torch.equal(before, q.codebook.weight)  # only once


@pytest.mark.parametrize("anchor", ["probrandom", "closest", "random"])
def test_cvq_pulls_unused_codes_to_the_features_and_leaves_used_ones(anchor):
    torch.manual_seed(0)
    vq = quantizer(8, 4, kind="cvq", cvq=CVQConfig(anchor=anchor)).train()
    with torch.no_grad():
        vq.codebook.weight.copy_(torch.randn(8, 4))
        vq.codebook.weight[1:] += 50.0  # far from the data: only code 0 is ever chosen
    before = vq.codebook.weight.detach().clone()
    z = torch.randn(2, 4, 4, 4)
    vq(z)
    after = vq.codebook.weight.detach()
    assert torch.allclose(after[0], before[0], atol=1e-3)  # used: stays (weight ~ exp(-large))
    features = z.permute(0, 2, 3, 1).reshape(-1, 4)
    # unused codes (about 100 away before) now sit on an anchor, up to the 0.1 % they keep (w = exp(-1e-3))
    assert torch.cdist(after[1:], features).min(1).values.max() < 0.2
    assert vq.code_usage_ema[0] > 0 and vq.code_usage_ema[1:].sum() == 0


def test_cvq_contrastive_term_trains_the_codes():
    torch.manual_seed(0)
    # l2-normalised: bounded distances, so the term is not ~0
    vq = quantizer(8, 4, kind="cvq", cvq=CVQConfig(contrastive=True), l2_norm=True).train()
    plain = quantizer(8, 4, kind="cvq", l2_norm=True).train()
    plain.load_state_dict(vq.state_dict())
    z = torch.randn(2, 4, 4, 4)
    with_term, without = vq(z), plain(z)
    assert with_term.loss > without.loss
    with_term.loss.backward()
    assert vq.codebook.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="needs model.quantizer.kind: cvq"):
        quantizer(8, 4, cvq=CVQConfig(contrastive=True))  # plain VQ would silently drop the term



def official_cvq_setup(anchor: str) -> tuple[CVQQuantizer, torch.Tensor]:
    """The replication presets' CVQ: no l2 norm, U(-1/K, 1/K) codes, K = 1024, d = 256."""
    torch.manual_seed(0)
    vq = quantizer(1024, 256, kind="cvq", cvq=CVQConfig(anchor=anchor)).train()
    z = torch.randn(2, 256, 16, 16) * torch.rand(2, 1, 16, 16) * 2  # features of varied norms
    return vq, z.permute(0, 2, 3, 1).reshape(-1, 256)


def test_cvq_closest_anchor_is_the_nearest_feature_by_full_distance():
    vq, features = official_cvq_setup("closest")
    expected = torch.cdist(vq.codebook.weight.detach(), features).argmin(1)  # (K,) nearest feature per code
    vq(features.reshape(2, 16, 16, 256).permute(0, 3, 1, 2))
    # every code was unused, so it now sits on its anchor (w = exp(-1e-3) keeps 0.1 % of the old code)
    chosen = torch.cdist(vq.codebook.weight.detach(), features).argmin(1)
    assert torch.equal(chosen, expected)


def test_cvq_probrandom_draws_from_the_softmax_of_the_full_distance():
    vq, features = official_cvq_setup("probrandom")
    direct = torch.softmax(-torch.cdist(features, vq.codebook.weight.detach()).pow(2).t(), dim=1)  # (K, M)
    used = torch.softmax(vq.anchor_scores(features).t(), dim=1)
    assert torch.allclose(used, direct, atol=1e-5)
