import json

from lgvq.cli import main


def test_train_then_evaluate_tokenizer(tiny_config, tmp_path, capsys):
    assert main(["train-tokenizer", "--config", str(tiny_config), "train.max_steps=3"]) == 0
    run = tmp_path / "run"
    assert (run / "model" / "config.json").is_file()
    saved = (run / "config.yaml").read_text()
    assert "max_steps: 3" in saved  # the resolved config, overrides included
    assert main(["evaluate-tokenizer", "--model", str(run / "model"), "--no-fid", "--limit", "8"]) == 0
    out = capsys.readouterr().out
    assert "PSNR" in out and "codebook usage" in out
    res = json.loads((run / "eval" / "tokenizer.json").read_text())
    assert res["num_images"] == 8 and res["data"]["source"] == "shapes"


def test_bad_config_key_exits_2_with_suggestion(tiny_config, capsys):
    assert main(["train-tokenizer", "--config", str(tiny_config), "train.batchsize=4"]) == 2
    assert "did you mean train.batch_size" in capsys.readouterr().err


def test_wrong_model_kind_on_cli(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "CaptionHead"}))
    assert main(["evaluate-tokenizer", "--model", str(tmp_path)]) == 2
    assert "CaptionHead" in capsys.readouterr().err


def test_missing_lpips_weights_stop_training_at_start(tiny_config, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert main(["train-tokenizer", "--config", str(tiny_config), "loss.perceptual_weight=1.0"]) == 2
    assert "vgg16-397923af.pth" in capsys.readouterr().err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_export_shapes_cli(tmp_path):
    assert main(["data", "export-shapes", "--out", str(tmp_path / "s"), "--num", "4", "--num-val", "2"]) == 0
    assert len(list((tmp_path / "s" / "train").glob("*.png"))) == 4
    assert len((tmp_path / "s" / "validation" / "metadata.jsonl").read_text().splitlines()) == 2


def test_user_errors_print_one_line_and_bugs_keep_their_traceback(tiny_config, tmp_path, monkeypatch, capsys):
    """A project error (here an out-of-choice config value, a YAML syntax error) is one line on
    stderr and exit 2; any other exception is a bug and propagates with its traceback."""
    import pytest

    assert main(["train-tokenizer", "--config", str(tiny_config), "model.quantizer.kind=vqtc"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean vqct?" in err and "Traceback" not in err
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [max_steps: 3\n")
    assert main(["train-tokenizer", "--config", str(broken)]) == 2
    assert f"config file {broken} is not valid YAML" in capsys.readouterr().err

    from lgvq.cli import tokenizer as tokenizer_verbs

    def bug(args):
        raise KeyError("a bug")

    monkeypatch.setattr(tokenizer_verbs, "cmd_train_tokenizer", bug)
    with pytest.raises(KeyError):
        main(["train-tokenizer", "--config", str(tiny_config)])


def test_every_verb_help_shows_the_defaults(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["evaluate-prior", "--help"])
    out = capsys.readouterr().out
    assert "(default: 200)" in out and "--seeds" in out
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    assert "prompts.txt" in capsys.readouterr().out
