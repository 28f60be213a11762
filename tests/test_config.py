import pytest

from lgvq.config import ConfigError, load_config, save_config
from lgvq.tokenizers.config import TokenizerRunConfig
from tests.conftest import REPO


def test_yaml_and_dotted_overrides_are_typed():
    cfg = load_config(TokenizerRunConfig, REPO / "configs/tokenizer/vqgan_shapes.yaml",
                      ["train.max_steps=200", "train.lr=1e-3", "model.ch_mult=[1,2]", "data.flip=true"])
    assert cfg.train.max_steps == 200 and isinstance(cfg.train.max_steps, int)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.ch_mult == [1, 2]
    assert cfg.data.flip is True


def test_unknown_override_names_key_and_closest_names():
    with pytest.raises(ConfigError) as e:
        load_config(TokenizerRunConfig, None, ["train.max_step=5"])
    msg = str(e.value)
    assert "train.max_step" in msg and "did you mean train.max_steps" in msg


def test_unknown_section_and_file_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'trian'.*did you mean train"):
        load_config(TokenizerRunConfig, None, ["trian.lr=1"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  codebok_size: 12\n")
    with pytest.raises(ConfigError) as e:
        load_config(TokenizerRunConfig, bad)
    assert str(bad) in str(e.value) and "did you mean model.quantizer.codebook_size" in str(e.value)


def test_wrong_type_names_key():
    with pytest.raises(ConfigError, match="train.max_steps"):
        load_config(TokenizerRunConfig, None, ["train.max_steps=many"])


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TokenizerRunConfig, None, ["train.max_steps=7", "model.quantizer.codebook_dim=4"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(TokenizerRunConfig, tmp_path / "config.yaml")
    assert again == cfg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TokenizerRunConfig, tmp_path / "nope.yaml")


@pytest.mark.parametrize("path", sorted((REPO / "configs" / "tokenizer").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_tokenizer_config_loads(path):
    cfg = load_config(TokenizerRunConfig, path)
    assert cfg.train.output_dir.startswith("runs/")


@pytest.mark.parametrize("overlay", sorted((REPO / "configs" / "lgvq").glob("*.yaml")), ids=lambda p: p.name)
def test_lgvq_weight_presets_overlay_a_tokenizer_config(overlay):
    cfg = load_config(TokenizerRunConfig, [REPO / "configs/tokenizer/vqgan_shapes.yaml", overlay])
    assert cfg.alignment == "lgvq" and cfg.model.quantizer.codebook_size == 1024
    expected = {"cub.yaml": (0.001, 0.001, 0.001), "shapes.yaml": (0.01, 0.1, 0.001)}.get(
        overlay.name, (0.001, 0.01, 0.0001))
    assert (cfg.lgvq.gsa_weight, cfg.lgvq.mtp_weight, cfg.lgvq.ras_weight) == expected
    paper_preset = overlay.name != "shapes.yaml"  # the official weights come with the text tower they were tuned on
    assert (cfg.lgvq.text_encoder == "openai/clip-vit-base-patch32") == paper_preset


def replication(*names: str) -> TokenizerRunConfig:
    base = [REPO / "configs/replicate/vqgan_f16.yaml", REPO / "configs/replicate/cub.yaml"]
    return load_config(TokenizerRunConfig, base + [REPO / "configs/replicate" / n for n in names])


def test_replication_presets_are_the_official_setups():
    for cfg in (replication(), replication("cvq.yaml"), replication("vqct.yaml")):
        assert cfg.train.grad_clip == 0.0  # taming clips no gradient
        assert cfg.train.schedule == "constant" and cfg.train.mixed_precision == "no"
    cvq = replication("cvq.yaml").model.quantizer
    assert cvq.kind == "cvq" and cvq.cvq.contrastive and cvq.cvq.anchor == "probrandom" and cvq.cvq.decay == 0.99
    vqct = replication("vqct.yaml").train
    assert vqct.lr == pytest.approx(7.2e-5) and vqct.batch_size * vqct.grad_accum == 16  # 2 GPUs x 8 officially
    assert replication().train.lr == pytest.approx(3.6e-5)  # LG-VQ: 4.5e-6 x batch 8 on one GPU
