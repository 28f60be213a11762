"""benchmarks/time_to_quality.py at toy size: levers judged at equal CPU time, not equal steps."""

import json
import math
import subprocess
import sys

import pytest

from tests.conftest import REPO, tiny_prior_config


@pytest.mark.slow
def test_variants_get_steps_for_their_own_step_time_and_are_kept_across_runs(tmp_path, tiny_store):
    config = tiny_prior_config(tmp_path, tiny_store)
    out = tmp_path / "ttq"
    command = [sys.executable, str(REPO / "benchmarks" / "time_to_quality.py"), "--store", str(tiny_store),
               "--out", str(out), "--prior-config", str(config), "--minutes", "0.01,0.02", "--seeds", "0",
               "--num-prompts", "4", "--variant", "baseline=", "--variant", "wide=model.dim=64 sample.best_of=2"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = json.loads((out / "time_to_quality.json").read_text())["runs"]
    assert {(r["variant"], r["cpu_minutes"]) for r in runs} == {(v, m) for v in ("baseline", "wide")
                                                              for m in (0.01, 0.02)}
    for r in runs:  # each variant trains as many steps as its measured step time allows in the budget
        assert r["steps"] == max(1, round(r["cpu_minutes"] * 60 / r["cpu_seconds_per_step"]))
        assert 0 <= r["one_object"] <= 1 and (math.isnan(r["two_objects"]) or 0 <= r["two_objects"] <= 1)
    step = {r["variant"]: r["cpu_seconds_per_step"] for r in runs}
    assert step["wide"] > step["baseline"]  # a wider prior's step costs more, so it gets fewer steps
    assert (out / "time_to_quality.png").is_file() and "| wide | 0.02 |" in (out / "time_to_quality.md").read_text()
    again = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0
    assert json.loads((out / "time_to_quality.json").read_text())["runs"] == runs  # nothing retrained


@pytest.mark.slow
def test_time_only_prints_each_variants_step_time_and_speed_and_trains_nothing(tmp_path, tiny_store):
    config = tiny_prior_config(tmp_path, tiny_store)
    out = tmp_path / "ttq"
    command = [sys.executable, str(REPO / "benchmarks" / "time_to_quality.py"), "--store", str(tiny_store),
               "--out", str(out), "--prior-config", str(config), "--variant", "baseline=",
               "--variant", "wide=model.dim=64", "--time-only", "--timing-steps", "3"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    speeds = done.stdout.split("speed against the first: ")[1].split(", ")
    assert speeds[0] == "baseline 1.00x" and speeds[1].startswith("wide ")
    assert float(speeds[1].split()[1].rstrip("x")) < 1  # the wider prior's step is slower than the first's
    assert not out.exists()  # nothing trained, nothing written
