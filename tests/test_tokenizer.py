import json

import pytest
import torch

from lgvq.errors import ConfigError
from lgvq.hub import WrongModelKindError
from lgvq.tokenizers.config import TokenizerLossConfig
from lgvq.tokenizers.discriminator import PatchDiscriminator
from lgvq.tokenizers.losses import VQGANLoss, adaptive_weight, hinge_d_loss
from lgvq.tokenizers.lpips import LPIPS, MissingWeightsError
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.quantizers import CVQQuantizer
from lgvq.tokenizers.quantizers.config import quantizer_dict


def tiny(**kw):
    torch.manual_seed(0)
    args = dict(resolution=32, ch=16, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=16,
                embed_dim=16, norm_groups=8, quantizer_config=quantizer_dict(codebook_size=32, codebook_dim=4, l2_norm=True))
    return VQTokenizer(**(args | kw))


def test_encode_decode_shapes_and_exact_eval_roundtrip():
    tok = tiny().eval()
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ids = tok.encode(x)
        assert ids.shape == (3, 8, 8) and ids.dtype == torch.long
        assert tok.token_shape == (8, 8)
        out = tok(x)
        assert torch.equal(out.ids, ids)
        assert torch.equal(tok.decode(ids), out.reconstruction)
    assert set(out.losses) == {"vq", "codebook", "commitment"}


def test_patch_encoder_codes_each_patch_alone(tmp_path):
    """encoder_type=patch: a change inside one f x f patch changes that position's features only,
    and the same patch content gets the same code wherever it is; conv (taming's) mixes."""
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    x[:, :, :, 16:] = -1  # right half black
    y = x.clone()
    y[:, :, 4:8, 4:8] = 1.0  # one white 4 x 4 patch at token (1, 1)
    for kind, local in (("patch", True), ("conv", False)):
        tok = tiny(encoder_type=kind).eval()
        with torch.no_grad():
            changed = (tok.encode_features(x) - tok.encode_features(y)).abs().amax(1)[0] > 0  # (8, 8)
        assert bool(changed[1, 1])
        assert (int(changed.sum()) == 1) == local
    tok = tiny(encoder_type="patch").eval()
    with torch.no_grad():
        ids = tok.encode(x)
    assert ids[0, :, 4:].unique().numel() == 1  # every black patch, one code
    tok.save_pretrained(tmp_path / "tok")
    assert torch.equal(VQTokenizer.from_pretrained(tmp_path / "tok").encode(x), ids)
    with pytest.raises(ValueError, match="encoder_type"):
        tiny(encoder_type="vit")


def test_patch_decoder_draws_each_patch_from_its_own_code_alone(tmp_path):
    """decoder_type=patch: changing one code changes that code's f x f patch of the image and no
    other pixel; taming's conv decoder spreads it; the choice survives save and load."""
    ids = torch.zeros(1, 8, 8, dtype=torch.long)
    other = ids.clone()
    other[0, 2, 5] = 7
    for kind, local in (("patch", True), ("conv", False)):
        tok = tiny(encoder_type="patch", decoder_type=kind).eval()
        with torch.no_grad():
            changed = (tok.decode(ids) - tok.decode(other)).abs().amax(1)[0] > 0  # (32, 32) pixels
        assert bool(changed[8:12, 20:24].all())
        assert (int(changed.sum()) == 16) == local
    tok = tiny(encoder_type="patch", decoder_type="patch").eval()
    tok.save_pretrained(tmp_path / "tok")
    again = VQTokenizer.from_pretrained(tmp_path / "tok").eval()
    assert again.config.decoder_type == "patch"
    with torch.no_grad():
        assert torch.equal(again.decode(other), tok.decode(other))
    with pytest.raises(ValueError, match="decoder_type"):
        tiny(decoder_type="vit")


def test_save_load_roundtrip_and_safetensors(tmp_path):
    tok = tiny().eval()
    tok.save_pretrained(tmp_path / "tok")
    files = {p.name for p in (tmp_path / "tok").iterdir()}
    assert "config.json" in files and any(f.endswith(".safetensors") for f in files)
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    again = VQTokenizer.from_pretrained(tmp_path / "tok").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(again.encode(x), tok.encode(x))
        assert torch.equal(again.decode(tok.encode(x)), tok.decode(tok.encode(x)))


def test_loading_another_kind_names_both(tmp_path):
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "GPTPrior"}))
    with pytest.raises(WrongModelKindError) as e:
        VQTokenizer.from_pretrained(folder)
    assert "GPTPrior" in str(e.value) and "VQTokenizer" in str(e.value)
    with pytest.raises(FileNotFoundError, match="config.json"):
        VQTokenizer.from_pretrained(tmp_path)


def test_lpips_refuses_to_build_without_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MissingWeightsError) as e:
        VQGANLoss(TokenizerLossConfig(perceptual_weight=1.0))
    assert "vgg16-397923af.pth" in str(e.value) and "perceptual_weight=0" in str(e.value)


def test_lpips_with_local_weights_file(tmp_path):
    """A random-initialised VGG16 saved where a user would put the download stands in for it."""
    from torchvision.models import vgg16

    torch.manual_seed(0)
    path = tmp_path / "vgg16-397923af.pth"
    torch.save(vgg16(weights=None).state_dict(), path)
    net = LPIPS(path)
    x, y = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    d = net(x, y)
    assert d.shape == (2,) and (d > 0).all()
    assert torch.allclose(net(x, x), torch.zeros(2), atol=1e-6)
    assert not any(p.requires_grad for p in net.parameters())


def test_adaptive_weight_matches_gradient_ratio():
    w = torch.randn(4, 3, requires_grad=True)
    a, b = torch.randn(3), torch.randn(3)
    nll, g = (w @ a).pow(2).sum(), (w @ b).sum() * 3
    ga = torch.autograd.grad(nll, w, retain_graph=True)[0]
    gb = torch.autograd.grad(g, w, retain_graph=True)[0]
    assert torch.allclose(adaptive_weight(nll, g, w), ga.norm() / (gb.norm() + 1e-4))


def test_hinge_loss():
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert torch.allclose(hinge_d_loss(real, fake), torch.tensor(0.5 * (0.25 + 0.5)))


def test_reconstruction_loss_is_l1_or_the_squared_error_and_names_a_wrong_choice():
    images, recon = torch.zeros(1, 3, 2, 2), torch.full((1, 3, 2, 2), 0.5)
    recon[0, 0, 0, 0] = 2.0  # one pixel far off: L1 counts it linearly, the squared error quadratically
    l1 = VQGANLoss(TokenizerLossConfig(rec_loss="l1", disc_weight=0)).reconstruction(images, recon)
    mse = VQGANLoss(TokenizerLossConfig(rec_loss="mse", disc_weight=0)).reconstruction(images, recon)
    assert l1["rec"].item() == pytest.approx((11 * 0.5 + 2.0) / 12)
    assert mse["rec"].item() == pytest.approx((11 * 0.25 + 4.0) / 12)
    assert mse["nll"] is mse["rec"]  # without LPIPS the generator's reconstruction term is the loss itself
    with pytest.raises(ConfigError, match="loss.rec_loss must be l1 or mse, not 'l2'"):
        VQGANLoss(TokenizerLossConfig(rec_loss="l2"))


def test_generator_loss_switches_gan_on_at_disc_start_without_grads_into_discriminator():
    tok = tiny()
    loss = VQGANLoss(TokenizerLossConfig(disc_start=5, disc_ndf=8, disc_layers=2))
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    out = tok(x)
    before = loss.generator_loss(x, out.reconstruction, out.losses["vq"], 4, tok.last_layer_weight())
    assert "g_loss" not in before
    after = loss.generator_loss(x, out.reconstruction, out.losses["vq"], 5, tok.last_layer_weight())
    assert {"g_loss", "d_weight"} <= set(after)
    after["total"].backward()
    assert all(p.grad is None for p in loss.discriminator.parameters())
    assert tok.encoder.conv_in.weight.grad is not None


def test_patch_discriminator_output():
    d = PatchDiscriminator(3, ndf=8, n_layers=2)
    assert d(torch.randn(2, 3, 32, 32)).shape[:2] == (2, 1)


def test_a_tokenizer_saved_with_flat_quantizer_arguments_still_loads(tmp_path):
    """config.json of earlier versions: codebook_size, l2_norm, online_clustering, cvq_* ... beside the
    autoencoder's arguments. They load into the same quantizer, and the weights encode the same."""
    import json

    tok = tiny(quantizer_config=quantizer_dict(kind="cvq", codebook_size=32, codebook_dim=4, l2_norm=True,
                                               restart_sampling="error", cvq={"decay": 0.9})).eval()
    tok.save_pretrained(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    q = config.pop("quantizer_config")
    config |= {"codebook_size": 32, "codebook_dim": 4, "l2_norm": True, "restart_sampling": "error",
               "online_clustering": True, "cvq_decay": 0.9, "vqct": None}
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    old = VQTokenizer.from_pretrained(tmp_path / "model").eval()
    assert old.config.quantizer_config == q  # the same quantizer, now as one dict
    assert isinstance(old.quantizer, CVQQuantizer) and old.quantizer.decay == 0.9
    images = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(old.encode(images), tok.encode(images))


def test_old_flat_config_files_load_into_the_nested_layout(tmp_path):
    from lgvq.config import load_config
    from lgvq.tokenizers.config import TokenizerRunConfig

    old = tmp_path / "old.yaml"
    old.write_text("model:\n  codebook_size: 256\n  online_clustering: true\n  cvq_decay: 0.9\n"
                   "  vqct_top_k: 3\n  l2_norm: true\n")
    cfg = load_config(TokenizerRunConfig, old, ["model.restart_every=7"])
    q = cfg.model.quantizer
    assert (q.kind, q.codebook_size, q.l2_norm, q.cvq.decay, q.vqct.top_k, q.restart_every) == \
        ("cvq", 256, True, 0.9, 3, 7)
    vqct = load_config(TokenizerRunConfig, None, ["model.quantizer=vqct", "model.vqct_vocab=v"])
    assert vqct.model.quantizer.kind == "vqct" and vqct.model.quantizer.vqct.vocab == "v"
