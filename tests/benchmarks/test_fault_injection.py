"""A reduced run of benchmarks/fault_injection.py: a pre-training run SIGKILLed (once in a
save or a step, once more with a checkpoint file damaged before the resume) ends with
the per-step losses, ALUM statistics and final weights of the uninterrupted run, bit for
bit, and the damage is detected. Subprocesses: each run is killed for real."""
import os
import subprocess
import sys

import pytest

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.slow
def test_killed_and_damaged_runs_end_identical(tmp_path):
    env = child_env(XDG_CACHE_HOME=str(tmp_path / "cache"))   # the sample corpus, built once
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "fault_injection.py"),
         "--kills", "2", "--damage-kills", "1", "--steps", "8", "--save-interval", "2",
         "--micro-batch-size", "4", "--seed", "3", "--work-dir", str(tmp_path / "work")],
        env=env, capture_output=True, text=True, timeout=1200, cwd=str(tmp_path))
    out = done.stdout
    assert done.returncode == 0, out[-3000:] + done.stderr[-3000:]
    assert "kills 2 (" in out and "damaged files 1, detected 1" in out
    assert out.count("final state identical to the uninterrupted run: yes") == 2
    assert out.count("losses+ALUM yes, weights yes") == 2
    assert "PASS" in out.splitlines()[-1]
