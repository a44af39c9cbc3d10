"""Smoke run of benchmarks/alum_step_cost.py on a tiny model: its self-checks pass (memory
trackers; fast, lean and naive give the same gradients) and it reports every variant,
the cheaper ones (AlumConfig.direction/.fraction) included.

Run in a subprocess: the benchmark initialises torch.distributed and megatron's groups in
its process (as the loop does), which must not leak into the other tests' process."""
import os
import re
import subprocess
import sys

import pytest

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| \((?P<tag>[a-h])\) [^|]+\| (?P<ms>[\d.]+) \| (?P<ratio>[\d.]+)× \| "
                 r"(?P<mb>[\d.]+) \| (?P<mem>[\d.]+)× \|", re.M)
PASS = re.compile(r"^\| (F|B|F_frozen|B_in|F_nograd) \| ([\d.]+) \|", re.M)
FLOORS = re.compile(r"^floors: fast [\d.]+× \(cost model 2.67×\), lean [\d.]+×", re.M)


@pytest.mark.slow
def test_alum_step_cost_tiny():
    env = child_env()
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "alum_step_cost.py"),
         "--size", "tiny", "--vocab", "300", "--seq", "16", "--batch", "2", "--repeats", "1",
         "--warmup", "0", "--check", "--device", "cpu", "--clock", "cpu", "--breakdown", "--floors",
         # One row per block of the symmetric KL's PyTorch passes, inside the gradient check.
         "--kl-block-bytes", "64"],
        env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    assert "gradient check" in out and "self-check: ok" in out
    rows = {m["tag"]: m for m in ROW.finditer(out)}
    assert sorted(rows) == list("abcdefgh"), out[-2000:]
    assert rows["a"]["ratio"] == "1.00" and rows["a"]["mem"] == "1.00"
    assert all(float(r["ms"]) > 0 and float(r["mb"]) > 0 for r in rows.values())
    passes = dict(PASS.findall(out))
    assert sorted(passes) == sorted(["F", "B", "F_frozen", "B_in", "F_nograd"]), out[-2000:]
    assert all(float(ms) >= 0 for ms in passes.values())
    assert FLOORS.search(out), out[-2000:]


def test_floors_of_the_cost_model_proportions():
    """With the cost model's proportions (backward 2F, δ-only backward F) the floors are 8/3, 3."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from pass_floors import floors
    finally:
        sys.path.pop(0)
    f = floors({"F": 1.0, "B": 2.0, "F_frozen": 1.0, "B_in": 1.0, "F_nograd": 1.0})
    assert abs(f["fast"] - 8 / 3) < 1e-12 and abs(f["lean"] - 3.0) < 1e-12
    # A cheaper backward (1.5F) raises the lean order's floor: (1 + 1 + 0.75 + 5) / 2.5.
    f = floors({"F": 1.0, "B": 1.5, "F_frozen": 1.0, "B_in": 0.75, "F_nograd": 1.0})
    assert abs(f["lean"] - 7.75 / 2.5) < 1e-12 and abs(f["fast"] - 6.75 / 2.5) < 1e-12


def test_cost_model_of_the_cheaper_variants():
    """docs/algorithm.md's lines: (6 + 2K)F, two passes for none/random/free, and the
    fraction's share of the adversarial passes, over the standard step's 3F."""
    sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
    try:
        from alum_step_cost import cost_model
    finally:
        sys.path.pop(0)
    assert abs(cost_model("fast", 1) - 8 / 3) < 1e-12
    assert abs(cost_model("fast", 3) - 12 / 3) < 1e-12
    for name in ("rdrop", "random", "free"):
        assert cost_model(name, 1) == cost_model(name, 5) == 2.0
    assert abs(cost_model("half", 1) - (3 + 0.5 * 5) / 3) < 1e-12
