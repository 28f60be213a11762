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
    # each speed is the first variant's seconds per step over its own (a ratio, never a timing bound)
    def printed(label):
        pairs = done.stdout.split(label)[1].splitlines()[0].split(", ")
        return {name: float(value.rstrip("x")) for name, value in (pair.split() for pair in pairs)}

    seconds, speeds = printed("CPU seconds per training step: "), printed("speed against the first: ")
    assert list(seconds) == list(speeds) == ["baseline", "wide"]
    assert speeds["baseline"] == 1.0
    # the seconds are printed to 0.001 and the speed to 0.01: it lies between the ratios they allow
    (b, w), r = (seconds["baseline"], seconds["wide"]), 0.0005
    assert (b - r) / (w + r) - 0.005 <= speeds["wide"] <= (b + r) / max(w - r, 1e-9) + 0.005
    assert not out.exists()  # nothing trained, nothing written
