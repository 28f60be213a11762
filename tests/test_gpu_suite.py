"""benchmarks/gpu_suite.py in its CPU smoke mode, so the GPU measurement cannot rot between GPU runs."""

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_suite_smoke_measures_every_part(tmp_path):
    out = tmp_path / "gpu_suite.json"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["env"]["mode"].startswith("smoke") and r["env"]["torch"]
    for name in ("large", "shapes preset"):
        assert r["prior"][name]["eager"]["step_ms"] > 0 and r["prior"][name]["eager"]["tokens_per_s"] > 0
    assert set(r["sampling"]) == {"1", "4"}
    for rows in r["sampling"].values():  # each decoder (the CUDA graph only on CUDA)
        assert set(rows) == {"kv cache", "static cache"}
        assert all(row["images_per_s"] > 0 for row in rows.values())
        assert 0 < rows["kv cache"]["outside_model_share"] <= 1
    for row in r["tokenizer"].values():
        assert row["train_images_per_s"] > 0 and row["encode_images_per_s"] > 0
    assert "randomly initialised VGG16" in r["tokenizer"]["papers' f = 16"]["lpips"] or "real" in \
        r["tokenizer"]["papers' f = 16"]["lpips"]
    assert r["pipeline"]["status"] == "finished" and "tokenizer" in r["pipeline"]["stages_done"]
    assert r["pipeline"]["stage_minutes"]["tokenizer"] >= 0
    assert set(r["pipeline"]["metrics"]) <= {"psnr", "faithful_one", "faithful_two", "cider_d", "vqa"}
    assert r["pipeline"]["metrics"]["psnr"] > 0  # read back from the run's result.json
    assert "sampling large prior batch   4, static cache" in done.stdout and "pipeline: finished" in done.stdout


def test_gpu_suite_refuses_unknown_parts_and_a_missing_gpu():
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--smoke", "--parts", "warp"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert bad.returncode == 2 and "unknown part(s) warp" in bad.stderr
    import torch

    if not torch.cuda.is_available():
        no_gpu = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py")], cwd=REPO,
                                capture_output=True, text=True, timeout=120, check=False)
        assert no_gpu.returncode == 2 and "no CUDA GPU is visible" in no_gpu.stderr
