"""The README's `lgvq` commands, run as written in its order, at toy size: each training command
gets tiny-model overrides appended, every other argument is the README's own. So the examples a
user copies cannot drift from the code."""

import re
import shlex

import pytest

from tests.conftest import REPO

TINY = {
    "train-tokenizer": ("data.num_train=48 data.num_val=12 data.image_size=32 model.ch=16 model.ch_mult=[1,2,2,2] "
                        "model.z_channels=16 model.embed_dim=16 model.quantizer.codebook_size=64 "
                        "model.quantizer.codebook_dim=4 lgvq.visual_width=32 train.max_steps=2 train.batch_size=4 "
                        "train.sample_every=2 train.checkpoint_every=2 loss.disc_start=1 loss.disc_ndf=8"),
    "train-prior": "model.dim=32 model.depth=1 model.heads=2 train.max_steps=2 train.batch_size=8 sample.batch_size=8",
    "train-vqa": "model.dim=32 model.depth=1 model.heads=2 train.max_steps=2 train.batch_size=8",
    "evaluate-prior": "--num-prompts 8",
}
SERVERS = {"demo"}  # runs until stopped: tests/test_demo.py drives it through gradio_client


def readme_commands() -> list[str]:
    """Every `lgvq ...` line of the README's bash blocks, continuation lines joined, comments dropped."""
    text = (REPO / "README.md").read_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s{2,}#", line)[0].strip()
            if line.startswith("lgvq "):
                commands.append(line)
    return commands


def test_the_readme_has_the_user_guide_commands():
    verbs = [shlex.split(c)[1] for c in readme_commands()]
    for verb in ("train-tokenizer", "build-vocab", "encode", "train-prior", "sample", "complete", "evaluate-prior",
                 "train-vqa", "answer", "evaluate-head"):
        assert verb in verbs


@pytest.mark.slow
def test_readme_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """In this process (`lgvq.cli.main`, what the `lgvq` script calls): a process each would spend
    most of the test importing torch again; the pipeline tests run the CLI in processes."""
    from accelerate.state import AcceleratorState

    from lgvq.cli import main

    (tmp_path / "configs").symlink_to(REPO / "configs")  # the README's relative config paths
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    # the fine-tuning example reads a folder of the user's own images: make one
    assert main(["data", "export-shapes", "--out", "mydata", "--num", "24", "--num-val", "8", "--image-size", "32"]) == 0
    for command in readme_commands():
        argv = shlex.split(command)
        if argv[1] in SERVERS:
            continue
        argv += shlex.split(TINY.get(argv[1], ""))
        code = main(argv[1:])
        AcceleratorState._reset_state(reset_partial_state=True)  # one per process, as for separate commands
        assert code == 0, f"README command failed: {command}\n{capsys.readouterr().err[-3000:]}"
