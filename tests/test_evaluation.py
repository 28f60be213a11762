import json

import numpy as np
import pytest
import scipy.linalg
import torch
from PIL import Image
from torch import nn

from lgvq.config import DataConfig
from lgvq.data.datasets import build_dataset
from lgvq.evaluation import fid as fid_module
from lgvq.evaluation.metrics import psnr, ssim
from lgvq.evaluation.tables import tokenizer_table
from lgvq.records import TokenizerEvaluation
from lgvq.evaluation.tokenizer_eval import evaluate_tokenizer
from lgvq.tokenizers.lpips import MissingWeightsError
from lgvq.tokenizers.model import VQTokenizer
from lgvq.tokenizers.quantizers.config import quantizer_dict


def test_psnr_matches_direct_computation():
    torch.manual_seed(0)
    a = torch.rand(2, 3, 8, 8) * 2 - 1
    b = (a + 0.1 * torch.randn_like(a)).clamp(-1, 1)
    qa = np.round((a.numpy() + 1) * 127.5) / 255
    qb = np.round((b.numpy() + 1) * 127.5) / 255
    direct = [10 * np.log10(1 / np.mean((qa[i] - qb[i]) ** 2)) for i in range(2)]
    assert np.allclose(psnr(a, b).numpy(), direct, atol=1e-4)


def test_ssim_identity_and_direct_computation():
    torch.manual_seed(0)
    a = torch.rand(1, 3, 16, 16) * 2 - 1
    assert torch.allclose(ssim(a, a), torch.ones(1))
    b = (a + 0.2 * torch.randn_like(a)).clamp(-1, 1)
    # direct: uniform stats of one 11x11 Gaussian window, channel 0, top-left valid position
    x = np.round((a[0, 0].numpy() + 1) * 127.5) / 255
    y = np.round((b[0, 0].numpy() + 1) * 127.5) / 255
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    px, py = x[:11, :11], y[:11, :11]
    mx, my = (w * px).sum(), (w * py).sum()
    vx, vy, cxy = (w * px * px).sum() - mx**2, (w * py * py).sum() - my**2, (w * px * py).sum() - mx * my
    c1, c2 = 0.01**2, 0.03**2
    direct = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    a1, b1 = a[:, :, :11, :11], b[:, :, :11, :11]
    assert float(ssim(a1[:, :1], b1[:, :1])) == pytest.approx(direct, abs=1e-6)


class StandInInception(nn.Module):
    """A small random network in place of the downloaded Inception: same call convention."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 7, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())

    def forward(self, x):  # float (B, 3, 299, 299) in [0, 255] -> (B, 32)
        assert x.shape[-2:] == (299, 299)
        return self.net(x / 255.0)


def write_images(folder, seed, n=12):
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_fid_through_cleanfid_feature_path_matches_numpy(tmp_path):
    write_images(tmp_path / "a", 0)
    write_images(tmp_path / "b", 1)
    model, dev = StandInInception().eval(), torch.device("cpu")
    score = fid_module.fid_between_folders(tmp_path / "a", tmp_path / "b", model, dev)
    fa = fid_module.folder_features(tmp_path / "a", model, dev)
    fb = fid_module.folder_features(tmp_path / "b", model, dev)
    assert fa.shape == (12, 32)
    mu1, mu2 = fa.mean(0), fb.mean(0)
    s1, s2 = np.cov(fa, rowvar=False), np.cov(fb, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    direct = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean)
    assert score == pytest.approx(direct, rel=1e-3, abs=1e-4)
    assert fid_module.fid_between_folders(tmp_path / "a", tmp_path / "a", model, dev) == pytest.approx(0, abs=1e-3)


def test_missing_inception_says_how_to_provide(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_module, "CLEANFID_DEFAULT_DIR", tmp_path)
    with pytest.raises(MissingWeightsError) as e:
        fid_module.find_inception(tmp_path / "weights")
    assert "inception-2015-12-05.pt" in str(e.value) and "--inception-path" in str(e.value)


def test_evaluate_tokenizer_without_downloads_reports_the_rest(tmp_path, monkeypatch):
    monkeypatch.setattr(fid_module, "CLEANFID_DEFAULT_DIR", tmp_path)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(0)
    tok = VQTokenizer(resolution=32, ch=16, ch_mult=(1, 2), attn_resolutions=(), z_channels=16, embed_dim=16,
                      norm_groups=8, quantizer_config=quantizer_dict(codebook_size=16))
    ds = build_dataset(DataConfig(image_size=32, num_val=10), "validation")
    res = evaluate_tokenizer(tok, ds, batch_size=4, progress=False)
    assert res["num_images"] == 10 and res["rfid"] is None and res["lpips"] is None
    assert "rfid" in res["notes"] and "lpips" in res["notes"]
    assert 0 < res["codebook_usage"] <= 1 and res["perplexity"] >= 1
    assert np.isfinite(res["psnr"]) and -1 <= res["ssim"] <= 1
    json.dumps(res)
    assert "PSNR" in tokenizer_table(TokenizerEvaluation.from_json(res))
    # the codes of all-black patches (shapes' background), counted directly
    images = torch.stack([ds[i]["image"] for i in range(10)])
    with torch.no_grad():
        ids = tok.encode(images)
    f, n = 32 // ids.shape[2], ids.shape[2]  # patch side, tokens per row
    black = [int(ids[b, y, x]) for b in range(10) for y in range(n) for x in range(n)
             if (images[b, :, f * y:f * y + f, f * x:f * x + f] < -0.95).all()]
    counts = np.bincount(black, minlength=16)
    p = counts[counts > 0] / counts.sum()
    assert res["black_patch_codes"] == len(p) and np.isclose(res["black_patch_entropy"], -(p * np.log(p)).sum())
    assert "black-patch code entropy" in tokenizer_table(TokenizerEvaluation.from_json(res))
    # the shapes scorer on the reconstructions, one- and two-object images apart
    rf = res["reconstruction_faithfulness"]
    objects = [len(ds.sample(i).objects) for i in range(10)]
    assert (rf["count_one_object"], rf["count_two_objects"]) == (objects.count(1), objects.count(2))
    assert 0 <= rf["one_object"] <= 1
    assert "reconstructions faithful" in tokenizer_table(TokenizerEvaluation.from_json(res))


def test_reconstruction_scoring_passes_real_images_and_skips_other_captions():
    from lgvq.evaluation.tokenizer_eval import score_reconstructions

    ds = build_dataset(DataConfig(image_size=64, num_val=6), "validation")
    items = [ds[i] for i in range(6)]
    scored = {}
    captions = [it["captions"] for it in items[:5]] + [["a photo of a dog"]]
    score_reconstructions(ds.scorer(), torch.stack([it["image"] for it in items]), captions, scored)
    assert len(scored["one_object"]) + len(scored["two_objects"]) == 5
    assert all(scored["one_object"]) and all(scored["two_objects"])  # the real images match their captions


def test_black_patch_codes_combine_a_positions_tokens():
    """VQCT-style ids (B, h, w, k): a position's k tokens count as one code; only all-black
    patches count."""
    from lgvq.evaluation.tokenizer_eval import black_patch_codes

    images = -torch.ones(1, 3, 8, 8)
    images[0, :, 0, 0] = 1.0  # one lit pixel: patch (0, 0) is not all black
    ids = torch.tensor([[[[1, 2], [1, 2]], [[3, 2], [1, 2]]]])  # (1, 2, 2, 2)
    codes = black_patch_codes(images, ids, vocab_size=10)
    assert sorted(codes.tolist()) == [1 + 2 * 10, 1 + 2 * 10, 3 + 2 * 10]
