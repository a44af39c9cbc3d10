"""Smoke run of benchmarks/shard_pool_overhead.py: a row per worker count, each run's wall
at least the ideal (the jobs' CPU time over the workers), results in job order."""
import os
import re
import subprocess
import sys

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| (?P<w>\d) \| (?P<ideal>[\d.]+) \| (?P<best>[\d.]+) \| (?P<med>[\d.]+) \| "
                 r"(?P<over>[+-][\d.]+) \|", re.M)


def test_shard_pool_overhead_smoke():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "shard_pool_overhead.py"),
         "--jobs", "4", "--job-s", "0.02", "--repeat", "1"],
        env=child_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = {int(m["w"]): m for m in ROW.finditer(done.stdout)}
    assert sorted(rows) == [1, 2]
    for w, m in rows.items():
        assert abs(float(m["ideal"]) - 4 * 0.02 / w) < 0.006  # printed to 2 decimals
        assert float(m["best"]) >= float(m["ideal"])  # CPU-bound jobs cannot beat it
