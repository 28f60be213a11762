"""Bad input, as a new user gives it: every case exits with code 2 and a short message naming the
field or file (no traceback), and leaves everything on disk as it was."""

import json
import shutil

import pytest
import yaml

from lgvq.api import encode_store, train
from lgvq.cli import main
from lgvq.data.export import export_shapes
from tests.conftest import REPO, TINY_TOKENIZER, tiny_prior_config, write_config


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_tokenizer_dir, tiny_store):
    """What the cases point at: a tokenizer config, a text prior, a class prior, an image folder
    encoded into a store, and damaged copies of the tokenizer."""
    root = tmp_path_factory.mktemp("bad_input")
    tokenizer = yaml.safe_load(yaml.safe_dump(TINY_TOKENIZER))
    tokenizer["train"]["output_dir"] = str(root / "tokenizer_run")
    found = {"root": root, "tokenizer": tiny_tokenizer_dir, "config": write_config(root / "tok.yaml", tokenizer)}
    (root / "broken.yaml").write_text("train:\n  max_steps: [1, 2\n")
    found["broken_yaml"] = root / "broken.yaml"
    for kind in ("text", "class"):
        train("prior", [tiny_prior_config(root, tiny_store, conditioning=kind, name=f"{kind}_prior")])
        found[f"{kind}_prior"] = root / f"{kind}_prior"

    images = root / "images"
    export_shapes(images, num=8, num_val=4, image_size=32)
    encode_store(tiny_tokenizer_dir, root / "folder_store", data=str(images), text_encoder="none", device="cpu")
    export_shapes(root / "more", num=12, num_val=4, image_size=32)  # the folder grows by 4 images
    for f in (root / "more" / "train").iterdir():
        if f.name != "metadata.jsonl":
            shutil.copy(f, images / "train" / f.name)
    shutil.copy(root / "more" / "train" / "metadata.jsonl", images / "train" / "metadata.jsonl")
    found["grown_images"] = images

    bad_json = root / "bad_json"
    export_shapes(bad_json, num=4, num_val=2, image_size=32)
    with open(bad_json / "train" / "metadata.jsonl", "a") as f:
        f.write('{"file_name": "x.png", "text": "a red circle"\n')
    found["bad_json"] = bad_json

    for name, damage in (("truncated", lambda f: f.write_bytes(f.read_bytes()[:100])),
                         ("empty", lambda f: f.write_bytes(b""))):
        copy = root / f"{name}_tokenizer"
        shutil.copytree(tiny_tokenizer_dir, copy)
        damage(next(copy.glob("*.safetensors")))
        found[f"{name}_tokenizer"] = copy
    not_json = root / "not_json_tokenizer"
    shutil.copytree(tiny_tokenizer_dir, not_json)
    (not_json / "config.json").write_text("{not json")
    found["not_json_tokenizer"] = not_json
    pickled = root / "pickled_tokenizer"
    shutil.copytree(tiny_tokenizer_dir, pickled)
    for f in pickled.glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    found["pickled_tokenizer"] = pickled

    old_samples = root / "old_samples"
    old_samples.mkdir()
    for name in ("0000.png", "0001.png", "prompts.txt", "grid.png"):
        (old_samples / name).write_bytes(b"older")
    found["old_samples"] = old_samples
    (root / "a_file").write_text("not a folder")
    found["a_file"] = root / "a_file"
    return found


def tokenizer_train(key):
    return lambda r: (["train-tokenizer", "--config", str(r["config"]), key], key.split("=")[0])


def sample(*extra, prior="text_prior", out="new_samples"):
    def args(r):
        return ["sample", "--prior", str(r[prior]), "--out", str(r["root"] / out), *extra]
    return args


def encode_with(tokenizer):
    return lambda r: (["encode", "--tokenizer", str(r[tokenizer]), "--out", str(r["root"] / "new_store")],
                      str(r[tokenizer]))


CASES = {
    "paper preset's CLIP offline": lambda r: (["train-tokenizer", "--config", str(r["config"]), "--config",
                                               str(REPO / "configs/lgvq/cub.yaml")], "lgvq.text_encoder=minilm"),
    "yaml syntax error": lambda r: (["train-tokenizer", "--config", str(r["broken_yaml"])], "broken.yaml"),
    "batch size 0": tokenizer_train("train.batch_size=0"),
    "batch size -2": tokenizer_train("train.batch_size=-2"),
    "negative lr": tokenizer_train("train.lr=-1"),
    "codebook size 0": tokenizer_train("model.quantizer.codebook_size=0"),
    "codebook size 0, flat key": lambda r: (tokenizer_train("model.codebook_size=0")(r)[0], "codebook_size"),
    "checkpoint every 0": tokenizer_train("train.checkpoint_every=0"),
    "negative max steps": tokenizer_train("train.max_steps=-5"),
    "bad metadata line": lambda r: (["encode", "--tokenizer", str(r["tokenizer"]), "--out", str(r["root"] / "s2"),
                                     "--data", str(r["bad_json"])], "metadata.jsonl, line 5"),
    "store folder grew": lambda r: (["encode", "--tokenizer", str(r["tokenizer"]), "--out",
                                     str(r["root"] / "folder_store"), "--data", str(r["grown_images"]),
                                     "--text-encoder", "none"], "data files"),
    "num images 0": lambda r: (sample("--prompt", "a red circle", "--num-images", "0")(r), "--num-images"),
    "batch size 0 (sample)": lambda r: (sample("--prompt", "a red circle", "--batch-size", "0")(r), "--batch-size"),
    "negative cfg": lambda r: (sample("--prompt", "a red circle", "--cfg", "-3")(r), "--cfg"),
    "negative temperature": lambda r: (sample("--prompt", "a red circle", "--temperature", "-1")(r), "--temperature"),
    "top-p 0": lambda r: (sample("--prompt", "a red circle", "--top-p", "0")(r), "--top-p"),
    "negative top-k": lambda r: (sample("--prompt", "a red circle", "--top-k", "-5")(r), "--top-k"),
    "class -1": lambda r: (sample("--class", "-1", prior="class_prior")(r), "class -1"),
    "empty prompt": lambda r: (sample("--prompt", "  ")(r), "prompt"),
    "10,000-character prompt": lambda r: (sample("--prompt", "red " * 2500)(r), "prompt"),
    "prior folder does not exist": lambda r: (["sample", "--prior", str(r["root"] / "nowhere"), "--prompt", "a",
                                               "--out", str(r["root"] / "new_samples")], "nowhere"),
    "tokenizer folder does not exist": lambda r: (["encode", "--tokenizer", str(r["root"] / "nowhere"), "--out",
                                                   str(r["root"] / "new_store")], "nowhere"),
    "truncated safetensors": encode_with("truncated_tokenizer"),
    "empty safetensors": encode_with("empty_tokenizer"),
    "config.json not JSON": encode_with("not_json_tokenizer"),
    "pickled weights only": encode_with("pickled_tokenizer"),
    "samples folder holds older samples": lambda r: (sample("--prompt", "a red circle", out="old_samples")(r),
                                                     "old_samples"),
    "output folder is a file": lambda r: (sample("--prompt", "a red circle", out="a_file")(r), "a_file"),
    # config values the schema cannot check (one of a set of names): the model's own check, same message form
    "unknown encoder type": tokenizer_train("model.encoder_type=bogus"),
    "unknown quantizer kind": tokenizer_train("model.quantizer.kind=bogus"),
    "unknown schedule": tokenizer_train("train.schedule=bogus"),
    "unknown crop": tokenizer_train("data.crop=bogus"),
    "unknown mixed precision": tokenizer_train("train.mixed_precision=fp8"),
    "alignment diagnostics of a plain tokenizer": lambda r: (["evaluate-alignment", "--model", str(r["tokenizer"])],
                                                             "alignment modules"),
    "top-k above the codebook": lambda r: (sample("--prompt", "a red circle", "--top-k", "100000")(r),
                                           "codebook size"),
    "pipeline: unknown tokenizer kind": lambda r: (["pipeline", "--out", str(r["root"] / "pipe"), "--tokenizer",
                                                    "vqgan_xl"], "--tokenizer"),
    "pipeline: paper data not converted": lambda r: (["pipeline", "--out", str(r["root"] / "pipe"), "--dataset",
                                                      "cub", "--data-dir", str(r["root"] / "no_cub")],
                                                     "convert_dataset.py cub"),
}


def snapshot(root):
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else None
            for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_exits_2_naming_the_thing_and_changes_nothing(case, runs, capsys):
    argv, named = CASES[case](runs)
    before = snapshot(runs["root"])
    assert_refused_in_one_line(argv, named, capsys)
    assert snapshot(runs["root"]) == before


def assert_refused_in_one_line(argv: list[str], named: str, capsys) -> None:
    """`lgvq ARGV` exits 2 with no traceback, and its last error line names `named` in under 600
    characters (a long prompt is not printed back whole)."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, err[-2000:]
    assert "Traceback" not in err
    message = [line for line in err.splitlines() if "error" in line]
    assert message and named in message[-1], err[-2000:]
    assert len(message[-1]) < 600


def test_the_store_case_leaves_the_old_manifest(runs):
    manifest = json.loads((runs["root"] / "folder_store" / "train" / "store.json").read_text())
    assert manifest["num_images"] == 8


# -- every verb, walked: a missing file or a value out of range, without any trained run ---------
def verb_cases(tmp) -> dict[str, tuple[list[str], str]]:
    """verb -> (arguments with one mistake, what the one-line message must name)."""
    nowhere, image = str(tmp / "nowhere"), str(tmp / "nowhere.png")
    return {
        "pipeline": (["pipeline", "--out", str(tmp / "p"), "--stop-after", "heads"], "--stop-after"),
        "train-tokenizer": (["train-tokenizer", "--config", nowhere + ".yaml"], "nowhere.yaml"),
        "evaluate-tokenizer": (["evaluate-tokenizer", "--model", nowhere], "nowhere"),
        "evaluate-alignment": (["evaluate-alignment", "--model", nowhere], "nowhere"),
        "build-vocab": (["build-vocab", "--out", str(tmp / "v"), "--max-words", "0"], "--max-words"),
        "encode": (["encode", "--tokenizer", nowhere, "--out", str(tmp / "s")], "nowhere"),
        "train-prior": (["train-prior", "--config", nowhere + ".yaml"], "nowhere.yaml"),
        "sample": (["sample", "--prior", nowhere, "--prompt", "a red circle", "--out", str(tmp / "o")], "nowhere"),
        "complete": (["complete", "--prior", nowhere, "--image", image, "--keep-top", "0.5", "--prompt", "a red circle",
                      "--out", str(tmp / "c")], "nowhere"),
        "evaluate-prior": (["evaluate-prior", "--prior", nowhere], "nowhere"),
        "train-captioner": (["train-captioner", "--config", nowhere + ".yaml"], "nowhere.yaml"),
        "train-vqa": (["train-vqa", "--config", nowhere + ".yaml"], "nowhere.yaml"),
        "caption": (["caption", "--model", nowhere, image], "nowhere"),
        "answer": (["answer", "--model", nowhere, "--image", image, "--question", "what shape?"], "nowhere"),
        "evaluate-head": (["evaluate-head", "--model", nowhere], "nowhere"),
        "retrieve": (["retrieve", "--model", nowhere, "--images", image, "--texts", "a red circle"], "nowhere"),
        "fill-mask": (["fill-mask", "--model", nowhere, "--image", image, "--caption", "a [MASK] circle"], "nowhere"),
        "report": (["report"], "--run"),
        "data": (["data", "export-shapes", "--out", str(tmp / "d"), "--num", "0"], "--num"),
        "demo": (["demo", "--run", nowhere], "nowhere"),
    }


def test_every_verb_has_a_bad_argument_case(tmp_path):
    from lgvq.cli import build_parser

    verbs = build_parser()._subparsers._group_actions[0].choices
    assert set(verb_cases(tmp_path)) == set(verbs)  # a new verb needs its case here


@pytest.mark.parametrize("verb", list(verb_cases(REPO)))
def test_every_verb_refuses_a_bad_argument_in_one_line(verb, tmp_path, capsys):
    argv, named = verb_cases(tmp_path)[verb]
    assert_refused_in_one_line(argv, named, capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written
