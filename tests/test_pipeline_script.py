"""The main job (scripts/run_pipeline.sh -> lgvq pipeline -> lgvq.mainjob) end to end at toy size:
the plan, stages, skip-on-rerun, records, report."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "run_pipeline.sh"
TINY_TOKENIZER = ("data.num_train=48 data.num_val=12 data.image_size=32 model.ch=16 model.ch_mult=[1,2,2,2] "
                  "model.z_channels=16 model.embed_dim=16 model.quantizer.codebook_size=64 "
                  "model.quantizer.codebook_dim=4 "
                  "lgvq.visual_width=32 train.max_steps=3 train.batch_size=4 train.sample_every=3 "
                  "train.checkpoint_every=3 loss.disc_start=2 loss.disc_ndf=8 train.num_threads=1")
TINY_PRIOR = ("model.dim=32 model.depth=1 model.heads=2 train.max_steps=3 train.batch_size=8 sample.batch_size=4 "
              "train.num_threads=1")
# one stage run and recorded (lgvq.mainjob.records) in a process of its own: python -c RECORD PIPELINE NAME COMMAND...
RECORD = ("import sys; from pathlib import Path; from lgvq.mainjob.records import run_recorded; "
          "from lgvq.runs import PipelineDir; out, name, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]; "
          "sys.exit(run_recorded(PipelineDir(out), name, command, ' '.join(command), out / 'logs' / f'{name}.log'))")
TINY_HEAD = "model.dim=32 model.depth=1 model.heads=2 train.max_steps=3 train.batch_size=8 train.num_threads=1"


def run_script(out, prior_overrides=TINY_PRIOR, *args, tokenizer_overrides=TINY_TOKENIZER, env=None):
    env = os.environ | {"TOKENIZER_OVERRIDES": tokenizer_overrides, "PRIOR_OVERRIDES": prior_overrides,
                        "HEAD_OVERRIDES": TINY_HEAD} | (env or {})
    return subprocess.run([str(SCRIPT), "--out", str(out), "--num-prompts", "8", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def test_unavailable_choices_are_refused_with_a_reason(tmp_path):
    bad = run_script(tmp_path, TINY_PRIOR, "--dataset", "cub", env={"DATA_DIR": str(tmp_path / "nowhere")})
    assert bad.returncode == 2 and "nowhere/train/metadata.jsonl does not exist" in bad.stderr
    assert f"scripts/convert_dataset.py cub --cub CUB_200_2011 --captions cvpr2016_cub --out {tmp_path}" in bad.stderr
    bad = run_script(tmp_path, TINY_PRIOR, "--dataset", "imagenet")
    assert bad.returncode == 2 and "must be one of shapes, cub" in bad.stderr
    bad = run_script(tmp_path, TINY_PRIOR, "--tokenizer", "vqgan_xl")
    assert bad.returncode == 2 and "must be one of" in bad.stderr
    bad = run_script(tmp_path, TINY_PRIOR, "--stop-after", "heads")
    assert bad.returncode == 2 and "--stop-after must be one of tokenizer, prior or all (got heads)" in bad.stderr
    assert "Traceback" not in bad.stderr and not tmp_path.joinpath("pipeline.json").exists()


def stage_commands(*args) -> dict[str, str]:
    """The stages `--dry-run` would run, name -> command line."""
    done = subprocess.run([str(SCRIPT), "--dry-run", *args], cwd=REPO, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    return dict(line[3:].split(": ", 1) for line in done.stdout.splitlines() if line.startswith("== "))


def test_the_quick_preset_is_the_default_and_full_runs_the_shapes_configs_as_they_are(tmp_path):
    quick, full = stage_commands("--out", str(tmp_path / "q")), stage_commands("--preset", "full")
    assert list(full) == ["tokenizer", "encode", "evaluate-tokenizer", "evaluate-alignment", "prior",
                          "evaluate-prior", "captioner", "evaluate-captioner", "vqa", "evaluate-vqa"]
    # the quick preset evaluates its prior a second time, each image the best of 4 by the
    # captioner (of 16 for the half it is least sure of), once the captioner is trained (the last
    # step, after both lanes)
    assert list(quick) == list(full) + ["evaluate-prior-reranked"]
    assert quick["evaluate-prior-reranked"].endswith(
        f"--best-of 4 --best-of-hard 16 --hard-share 0.5 --rerank-with {tmp_path / 'q' / 'captioner'} "
        "--name reranked --no-fid")
    for stage, overlay in (("tokenizer", "tokenizer"), ("prior", "prior"), ("captioner", "captioner"),
                           ("vqa", "vqa")):
        assert f"--config configs/presets/quick/{overlay}.yaml" in quick[stage]
        assert "presets/quick" not in full[stage]
    # the quick overlay comes after the dataset's config and before LG-VQ's, so LG-VQ keeps its weights
    assert re.search(r"vqgan_shapes\.yaml --config configs/presets/quick/tokenizer\.yaml --config "
                     r"configs/lgvq/shapes\.yaml", quick["tokenizer"])
    assert not (tmp_path / "q").exists()  # a dry run writes nothing
    for args, message in ((["--preset", "fast"], "--preset must be one of quick, full or gpu (got fast)"),
                          (["--preset", "quick", "--dataset", "cub"], "--preset quick is sized for the built-in"),
                          (["--preset", "gpu", "--dataset", "cub"], "--preset gpu is sized for the built-in")):
        bad = subprocess.run([str(SCRIPT), "--dry-run", *args], cwd=REPO, capture_output=True, text=True,
                             timeout=60, check=False)
        assert bad.returncode == 2 and message in bad.stderr
    from lgvq.config import load_config
    from lgvq.tokenizers.config import TokenizerRunConfig
    cfg = load_config(TokenizerRunConfig, [REPO / "configs" / name for name in (
        "tokenizer/vqgan_shapes.yaml", "presets/quick/tokenizer.yaml", "lgvq/shapes.yaml")])
    assert cfg.data.image_size == 48 and cfg.alignment == "lgvq" and cfg.model.decoder_type == "patch"
    # the quick prior trades size for steps (docs/results.md, "A smaller prior at equal time") and
    # samples cooler; the full preset's keeps its width, prompt layers and temperature
    from lgvq.priors.config import PriorRunConfig
    t2i = REPO / "configs" / "prior" / "shapes_t2i.yaml"
    prior = load_config(PriorRunConfig, [t2i, REPO / "configs" / "presets" / "quick" / "prior.yaml"])
    full_prior = load_config(PriorRunConfig, [t2i])
    assert (prior.model.dim, prior.model.depth, prior.model.text_layers) == (64, 2, 0)
    assert (full_prior.model.dim, full_prior.model.text_layers) == (192, 2)
    assert (prior.sample.temperature, full_prior.sample.temperature) == (0.7, 1.0)
    from lgvq.downstream.training import HeadRunConfig
    captioner = load_config(HeadRunConfig, [REPO / "configs" / "heads" / "shapes_captioner.yaml",
                                            REPO / "configs" / "presets" / "quick" / "captioner.yaml"])
    assert captioner.model.code_conv_layers == 2  # reads shapes as the VQA head does


def test_the_gpu_preset_overlays_the_tokenizer_and_prior_and_needs_a_gpu(tmp_path):
    gpu, full = stage_commands("--preset", "gpu"), stage_commands("--preset", "full")
    assert list(gpu) == list(full)
    assert re.search(r"vqgan_shapes\.yaml --config configs/presets/gpu/tokenizer\.yaml --config "
                     r"configs/lgvq/shapes\.yaml", gpu["tokenizer"])
    assert "shapes_t2i.yaml --config configs/presets/gpu/prior.yaml" in gpu["prior"]
    for stage in ("captioner", "vqa", "encode", "evaluate-prior"):  # the heads as the full preset has them
        assert gpu[stage] == full[stage]
    from lgvq.config import load_config
    from lgvq.priors.config import PriorRunConfig
    from lgvq.tokenizers.config import TokenizerRunConfig
    tok = load_config(TokenizerRunConfig, [REPO / "configs" / name for name in (
        "tokenizer/vqgan_shapes.yaml", "presets/gpu/tokenizer.yaml", "lgvq/shapes.yaml")])
    assert tok.data.image_size == 64 and tok.train.batch_size == 32 and tok.loss.disc_start < tok.train.max_steps
    prior = load_config(PriorRunConfig, [REPO / "configs" / "prior" / "shapes_t2i.yaml",
                                         REPO / "configs" / "presets" / "gpu" / "prior.yaml"])
    assert prior.model.dim == 192 and prior.train.batch_size == 64
    import torch
    if not torch.cuda.is_available():  # refused before anything is written
        bad = run_script(tmp_path / "run", TINY_PRIOR, "--preset", "gpu")
        assert bad.returncode == 2 and "--preset gpu is sized for one CUDA GPU, and torch sees none" in bad.stderr
        assert not (tmp_path / "run").exists()


def test_stage_records_time_and_peak_memory_of_every_attempt(tmp_path):
    stage = [sys.executable, "-c", RECORD, str(tmp_path), "work"]
    allocate = "import sys, time; block = bytearray(300 * 2**20); time.sleep(1.1); sys.exit(int(sys.argv[1]))"
    failed = subprocess.run([*stage, sys.executable, "-c", allocate, "3"], check=False)
    assert failed.returncode == 3  # the command's status passes through
    assert subprocess.run([*stage, sys.executable, "-c", allocate, "0"], check=False).returncode == 0
    assert json.loads((tmp_path / "timings.json").read_text())["work"] >= 2  # both attempts' seconds
    assert json.loads((tmp_path / "peak_memory.json").read_text())["work"] >= 300
    from lgvq.report import build_report
    assert re.search(r"\| work \| 0\.\d \| 0\.3", build_report(tmp_path).read_text())  # minutes, GiB


def test_stage_killed_with_its_runner_still_counts_its_time(tmp_path):
    """SIGKILL to the runner and its command together (a killed terminal, a lost machine): the
    heartbeat file keeps the attempt's seconds, and the next attempt adds them to the stage's total."""
    stage = [sys.executable, "-c", RECORD, str(tmp_path), "work"]
    killed = subprocess.Popen([*stage, sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    heartbeat = tmp_path / ".stages" / "work.running"
    deadline = time.monotonic() + 30
    while not (heartbeat.is_file() and int(heartbeat.read_text()) >= 4) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert not (tmp_path / "timings.json").exists()  # the runner had no chance to record anything
    assert subprocess.run([*stage, sys.executable, "-c", "pass"], check=False).returncode == 0
    assert json.loads((tmp_path / "timings.json").read_text())["work"] >= 4
    assert not heartbeat.exists()


@pytest.mark.slow
def test_pipeline_runs_resumes_after_a_failed_stage_and_reports(tmp_path):
    out = tmp_path / "pipe"
    failed = run_script(out, TINY_PRIOR + " train.bogus_key=1")
    assert failed.returncode != 0 and "bogus_key" in failed.stderr and "== prior: FAILED" in failed.stderr
    done = sorted(p.stem for p in (out / ".stages").glob("*.done"))
    # the heads' lane ran beside the prior's and finished; the prior's stages did not
    assert done == ["captioner", "encode", "evaluate-alignment", "evaluate-captioner", "evaluate-tokenizer",
                    "evaluate-vqa", "tokenizer", "vqa"]  # and not the re-ranked evaluation, which needs the prior
    assert (out / "logs" / "vqa.log").is_file() and "bogus_key" in (out / "logs" / "prior.log").read_text()
    stamp = (out / "tokenizer" / "model" / "config.json").stat().st_mtime_ns

    again = run_script(out)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "== tokenizer: done already, skipped" in again.stdout and "== vqa: done already, skipped" in again.stdout
    assert (out / "tokenizer" / "model" / "config.json").stat().st_mtime_ns == stamp  # not redone
    report = json.loads((out / "report.json").read_text())
    assert report["tokenizer"]["psnr"] > 0 and report["prior"]["faithfulness"]["overall"] >= 0
    assert report["prior"]["seeds"] == [0, 1, 2] and len(report["prior"]["faithfulness_per_seed"]) == 3
    assert "CIDEr-D" in report["captioning"] and "colour" in report["vqa"]["per_type"]
    assert set(json.loads((out / "timings.json").read_text())) >= {"tokenizer", "encode", "prior", "captioner", "vqa"}
    peak_memory = json.loads((out / "peak_memory.json").read_text())
    assert peak_memory["prior"] > 100  # MiB: a python with torch loaded, at least
    md = (out / "report.md").read_text()
    assert md.index("## What was run") < md.index("PSNR") < md.index("## Figures")  # what was run, then numbers
    assert report["run"]["overrides"]["prior"] == TINY_PRIOR and f"prior: `{TINY_PRIOR}`" in md
    assert "lgvq train-prior --config configs/prior/shapes_t2i.yaml" in report["commands"]["prior"]
    assert "peak memory (GiB" in md and "originals above their reconstructions" in md
    for figure in ("losses", "code_usage", "samples"):
        assert (out / report["figures"][figure]).is_file()
    # the default is the quick preset: the report names it, the CPU, what the full preset reaches,
    # and the wall time of both invocations
    assert "Preset `quick`, dataset `shapes`" in md and "The full preset (`scripts/run_pipeline.sh --preset full`" in md
    assert "CPU: " in md and "Wall time of the pipeline: " in md and "over 2 invocations" in md
    result = json.loads((out / "result.json").read_text())  # the run in one small file
    assert result["preset"] == "quick" and result["tokenizer"] == "vqgan_lg" and result["training_seed"] == 0
    assert result["metrics"]["psnr"] == report["tokenizer"]["psnr"]
    assert result["metrics"]["faithful_two"] == report["prior"]["faithfulness"]["two_objects"]
    reranked = report["prior_reranked"]  # the second evaluation: its own images and numbers
    assert reranked["sampling"]["best_of"] == 4 and (out / "prior" / "eval" / "reranked" / "samples").is_dir()
    assert result["metrics"]["faithful_one_reranked"] == reranked["faithfulness"]["one_object"]
    assert reranked["sampling"]["best_of_hard"] == 16 and reranked["sampling"]["hard_share"] == 0.5
    assert ("each image the best of 4 samples (16 for the 50% whose best of 4 scores lowest) by the captioner's "
            "likelihood of the prompt") in md
    assert set(result["metrics"]["faithful_per_seed"]) == {"0", "1", "2"}
    assert result["metrics"]["cider_d"] == report["captioning"]["CIDEr-D"]
    assert "colour" in result["metrics"]["vqa_per_type"]
    assert len(result["config_hash"]) == 16 and result["cpu"]["cores"] >= 1 and result["minutes"]["prior"] > 0
    assert len(result["commit"] or "0" * 40) == 40 and result["wall_minutes"] > 0


@pytest.mark.slow
def test_paper_preset_runs_on_converted_data(tmp_path):
    """--dataset cub with the papers' configs (shrunk to toy size) on a folder laid out like the
    converter's output: stage one, the code store, the real-data prior and the CUB captioner."""
    from lgvq.cli import main

    data = tmp_path / "cub"
    assert main(["data", "export-shapes", "--out", str(data), "--num", "24", "--num-val", "8",
                 "--image-size", "32"]) == 0
    tiny = (TINY_TOKENIZER.replace("data.num_train=48 data.num_val=12 ", "")
            + " model.norm_groups=8 model.num_res_blocks=1 loss.perceptual_weight=0"
            + " lgvq.text_encoder=minilm")  # the CUB preset's CLIP, offline: the README's switch
    out = tmp_path / "pipe"
    done = run_script(out, TINY_PRIOR, "--dataset", "cub", tokenizer_overrides=tiny, env={"DATA_DIR": str(data)})
    assert done.returncode == 0, done.stderr[-3000:]
    config = (out / "tokenizer" / "config.yaml").read_text()
    assert "ch_mult:\n  - 1\n  - 2" in config and "attn_resolutions:\n  - 16" in config  # paper config, toy sizes
    assert f"path: {data}" in config
    report = json.loads((out / "report.json").read_text())
    assert report["prior"]["validation"]["nll"] > 0 and "faithfulness" not in report["prior"]  # no shapes scorer
    assert "CIDEr-D" in report["captioning"] and report["vqa"] is None


def test_comparison_table_means_and_spreads_over_seeds(tmp_path, capsys):
    from lgvq.cli import main
    from lgvq.compare import collect, plotted_metrics

    def write(tok, seed, psnr, r1=None):
        run = tmp_path / tok / f"seed{seed}"
        run.mkdir(parents=True)
        report = {"tokenizer": {"psnr": psnr, "codebook_usage": 1.0, "perplexity": 400.0, "codebook_size": 1024},
                  "alignment": {"retrieval_r@1": r1} if r1 is not None else None,
                  "vqa": {"accuracy": 0.5, "per_type": {"colour": 0.9, "shape": 0.6, "yes/no": 0.7}},
                  # minutes: 10 + seed, 3 more with LG-VQ
                  "timings_s": {"tokenizer": 60.0 * (10 + seed + (3 if r1 else 0)), "evaluate-tokenizer": 30.0}}
        (run / "report.json").write_text(json.dumps(report))

    write("vqgan", 0, 30.0)
    write("vqgan", 1, 32.0)
    write("vqgan", 2, 34.0)
    write("vqgan_lg", 0, 31.0, r1=0.2)
    write("vqgan_lg", 1, 31.0, r1=0.3)
    write("vqct", 0, 25.0)
    assert main(["report", "--compare", str(tmp_path)]) == 0
    table = (tmp_path / "table.md").read_text().splitlines()
    # one table per group of columns: reconstruction, alignment, text-to-image, VQA, minutes
    vqgan_rows = [r for r in table if r.startswith("| vqgan |")]
    lg_rows = [r for r in table if r.startswith("| vqgan_lg |")]
    assert len(vqgan_rows) == len(lg_rows) == 5
    assert "| 3 | 32.00 ± 2.00 |" in vqgan_rows[0] and "| 2 | 31.00 ± 0.00 |" in lg_rows[0]
    assert vqgan_rows[1] == "| vqgan | 3 | – | – | – |"  # no alignment diagnostics without LG-VQ
    assert lg_rows[1] == "| vqgan_lg | 2 | 0.250 ± 0.071 | – | – |"
    # VQA overall and per question type (a type no run has stays empty), training minutes per stage
    assert "| VQA all | VQA colour | VQA shape | VQA count | VQA size | VQA relation | VQA yes/no |" in "".join(table)
    assert vqgan_rows[3] == "| vqgan | 3 | 50.0% ± 0.0% | 90.0% ± 0.0% | 60.0% ± 0.0% | – | – | – | 70.0% ± 0.0% |"
    assert vqgan_rows[4] == "| vqgan | 3 | 11.0 ± 1.0 | – | – | – |"  # tokenizer minutes; no prior or heads
    assert "| tokenizer min | +3.0 ± 0.0 (+3.0, +3.0) |" in table
    # paired by seed (seeds 0 and 1 in both): +1.00 and -1.00
    assert "| PSNR | +0.00 ± 1.41 (+1.00, -1.00) |" in table
    assert not any(r.startswith("| codebook size |") for r in table)  # a setting, not a result: no difference
    saved = json.loads((tmp_path / "compare.json").read_text())
    assert saved["per_seed"]["vqgan"]["seed2"]["PSNR"] == 34.0
    assert saved["paired"]["vqgan"]["PSNR"]["per_seed"] == {"seed0": 1.0, "seed1": -1.0}
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert plotted_metrics(collect(tmp_path)) == ["PSNR", "codes used %", "VQA all"]  # no empty panels
    assert list(collect(tmp_path)) == ["vqgan", "vqgan_lg", "vqct"]  # backbone by backbone, not by name
    assert main(["report"]) == 2 and "--compare" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_script_runs_vqct_with_lgvq_end_to_end(tmp_path):
    """The comparison script at toy size for one tokenizer and seed: build-vocab (encoder words),
    VQCT + LG-VQ tokenizer, a prior over 3 tokens per position, heads, report, table."""
    env = os.environ | {"TOKENIZER_OVERRIDES": TINY_TOKENIZER, "PRIOR_OVERRIDES": TINY_PRIOR,
                        "HEAD_OVERRIDES": TINY_HEAD}
    done = subprocess.run([str(REPO / "scripts" / "compare_tokenizers.sh"), "--root", str(tmp_path),
                           "--tokenizers", "vqct_lg", "--seeds", "0", "--num-prompts", "8"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "vqct_lg" / "seed0" / "report.json").read_text())
    assert report["tokenizer"]["tokens_per_image"] == 4 * 4 * 3  # toy 32-px grid, 3 tokens per position
    assert "| vqct_lg | 1 |" in (tmp_path / "table.md").read_text()


def test_compare_script_stops_after_the_tokenizer_in_parallel_jobs(tmp_path):
    """--stop-after tokenizer: the codebook comparison alone (train, evaluate, report, table), no
    code store or prior. --jobs 2: two pipelines at once, each on its own core with its own log; a
    run that fails (seed "x") does not stop the other, and the script exits 1 naming it."""
    env = os.environ | {"TOKENIZER_OVERRIDES": TINY_TOKENIZER}
    results = tmp_path / "kept"
    compare = [str(REPO / "scripts" / "compare_tokenizers.sh"), "--root", str(tmp_path), "--tokenizers", "cvq",
               "--stop-after", "tokenizer", "--results", str(results)]
    done = subprocess.run([*compare, "--seeds", "0 x", "--jobs", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "=== cvq, seed x: FAILED" in done.stderr and "some runs failed" in done.stderr
    assert "train.seed" in (tmp_path / "cvq" / "seedx" / "pipeline.log").read_text()
    run = tmp_path / "cvq" / "seed0"
    assert "== tokenizer: finished" in (run / "pipeline.log").read_text()
    assert re.search(r"=== cvq, seed 0: started .* on cores \d+ ", done.stdout)  # one core each of two
    report = json.loads((run / "report.json").read_text())
    assert report["tokenizer"]["codebook_size"] == 64 and report["prior"] is None
    assert not (run / "codes").exists() and not (run / "prior").exists()
    row = next(r for r in (results / "table.md").read_text().splitlines() if r.startswith("| cvq |"))
    assert "| 1 |" in row and "| 64 | 16 |" in row  # one finished seed; codebook size, tokens (32 px, f = 8)

    # --results: the finished run's result.json is kept; the same settings again skip it, and the
    # table comes from the kept files alone (no run folder needed)
    kept = json.loads((results / "cvq" / "seed0.json").read_text())
    assert not (results / "cvq" / "seedx.json").exists()
    assert kept["metrics"]["psnr"] == report["tokenizer"]["psnr"] and len(kept["plan_hash"]) == 16
    shutil.rmtree(run)
    again = subprocess.run([*compare, "--seeds", "0"], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=300, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cvq, seed 0: in" in again.stdout and "skipped" in again.stdout and not run.exists()
    row = next(r for r in (results / "table.md").read_text().splitlines() if r.startswith("| cvq |"))
    assert "| 1 |" in row and "| 64 | 16 |" in row


def test_stages_side_by_side_keep_every_record(tmp_path):
    """Stages started together update commands.json / timings.json without losing an entry."""
    runner = [sys.executable, "-c", RECORD, str(tmp_path)]
    started = [subprocess.Popen([*runner, f"stage{i}", sys.executable, "-c", "pass"]) for i in range(8)]
    assert all(p.wait(timeout=120) == 0 for p in started)
    for record in ("commands.json", "timings.json", "peak_memory.json"):
        assert sorted(json.loads((tmp_path / record).read_text())) == [f"stage{i}" for i in range(8)], record


def test_plan_hash_is_the_settings_not_the_folder(tmp_path, monkeypatch):
    from lgvq.run_result import plan_hash

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a.yaml").write_text("lr: 1\n")
    listing = "== tokenizer: lgvq train-tokenizer --config a.yaml train.output_dir={out}/tokenizer\n"
    first = plan_hash(listing.format(out="runs/one"), "runs/one")
    assert plan_hash(listing.format(out="elsewhere/two"), "elsewhere/two/") == first  # where it lives: no
    assert plan_hash(listing.format(out="runs/one") + "train.seed=1", "runs/one") != first  # its commands: yes
    (tmp_path / "a.yaml").write_text("lr: 2\n")
    assert plan_hash(listing.format(out="runs/one"), "runs/one") != first  # its config files' contents: yes


def test_runner_runs_lanes_side_by_side_skips_finished_stages_and_resumes_after_a_failure(tmp_path):
    """lgvq.mainjob's runner on a plan of small commands: the two lanes of a step overlap in time,
    each on its share of the threads; a failed stage stops its lane while the other lane finishes;
    the next run skips what finished, reruns the failed stage, and counts both attempts' time."""
    from lgvq.mainjob import PipelineOptions, Plan, Stage, StageFailed
    from lgvq.mainjob.runner import Runner, execute

    fixed = tmp_path / "fixed"

    def stage(name: str, fails_until_fixed: bool = False) -> Stage:
        code = (f"import os, time; open({str(tmp_path)!r} + '/{name}.when', 'w').write(f'{{time.time()}} "
                f"{{os.environ.get(\"OMP_NUM_THREADS\")}}'); time.sleep(1.5); "
                f"raise SystemExit(3 if {fails_until_fixed} and not os.path.exists({str(fixed)!r}) else 0)")
        return Stage(name, (sys.executable, "-c", code))

    out = tmp_path / "run"
    plan = Plan(PipelineOptions(out=str(out)),
                (((stage("a"),),), ((stage("b"), stage("c", True)), (stage("d"), stage("e")))))
    lines, errors = [], []
    runner = Runner(plan, lines.append, errors.append, lane_threads=1)
    with pytest.raises(StageFailed, match="stage c failed"):
        runner.run()
    marks = sorted(p.stem for p in (out / ".stages").glob("*.done"))
    assert marks == ["a", "b", "d", "e"]  # the other lane went on to its end
    assert "== c: FAILED (exit 3)" in errors[0]
    started = {n: float((tmp_path / f"{n}.when").read_text().split()[0]) for n in "abde"}
    assert abs(started["b"] - started["d"]) < 1.0 and started["e"] < started["b"] + 3.0  # side by side
    assert (tmp_path / "b.when").read_text().split()[1] == "1"  # the lane's share of threads

    fixed.touch()
    (tmp_path / "a.when").unlink()
    report = execute(plan, lines.append, errors.append)
    assert report.is_file() and not (tmp_path / "a.when").exists()  # a: done already, not run again
    assert "== a: done already, skipped" in lines and (out / ".stages" / "c.done").is_file()
    assert json.loads((out / "timings.json").read_text())["c"] >= 3  # both attempts
    assert len(json.loads((out / "wall.json").read_text())) == 1 and json.loads((out / "pipeline.json").read_text())
