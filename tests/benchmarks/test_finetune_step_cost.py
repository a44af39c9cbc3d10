"""Smoke run of benchmarks/finetune_step_cost.py --variants on a small BERT: every recipe
of the frontier is timed through AlumTrainer.training_step (the script checks that each
ALUM recipe ran its term at every step) and reported against standard."""
import os
import re
import subprocess
import sys

import pytest

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROW = re.compile(r"^\| (?P<step>[^|]+?) \| (?P<s>[\d.]+) \| (?P<ratio>[\d.]+)x \|$", re.M)


@pytest.mark.slow
def test_variants_are_timed_through_the_trainer_step():
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "finetune_step_cost.py"),
         "--variants", "--tiny", "--batch", "4", "--seq", "16", "--repeats", "1",
         "--threads", "1"],
        env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = {m["step"]: m for m in ROW.finditer(done.stdout)}
    assert sorted(rows) == sorted(["standard", "default (alum-half-alpha)", "var-rdrop",
                                   "var-random", "var-free", "var-half-batch"]), done.stdout
    assert rows["standard"]["ratio"] == "1.00"
    assert all(float(r["s"]) > 0 for r in rows.values())
