"""Smoke run of benchmarks/alum_step_cost.py on a tiny model: its self-checks pass (memory
trackers; fast, lean and naive give the same gradients) and it reports every variant.

Run in a subprocess: the benchmark initialises torch.distributed and megatron's groups in
its process (as the loop does), which must not leak into the other tests' process."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| \((?P<tag>[abcd])\) [^|]+\| (?P<ms>[\d.]+) \| (?P<ratio>[\d.]+)× \| "
                 r"(?P<mb>[\d.]+) \| (?P<mem>[\d.]+)× \|", re.M)


def test_alum_step_cost_tiny():
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "alum_step_cost.py"),
         "--size", "tiny", "--vocab", "300", "--seq", "16", "--batch", "2", "--repeats", "1",
         "--warmup", "0", "--check", "--device", "cpu", "--clock", "cpu", "--breakdown"],
        env=env, capture_output=True, text=True, timeout=600)
    out = done.stdout
    assert done.returncode == 0, out[-2000:] + done.stderr[-2000:]
    assert "gradient check" in out and "self-check: ok" in out
    rows = {m["tag"]: m for m in ROW.finditer(out)}
    assert sorted(rows) == ["a", "b", "c", "d"], out[-2000:]
    assert rows["a"]["ratio"] == "1.00" and rows["a"]["mem"] == "1.00"
    assert all(float(r["ms"]) > 0 and float(r["mb"]) > 0 for r in rows.values())
