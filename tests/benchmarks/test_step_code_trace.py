"""benchmarks/step_code_trace.py on the real loop: one ALUM pre-training step stays in the
few files docs/algorithm.md names (six in the fast order), and α is applied by one line.

Run in a subprocess: the traced run initialises torch.distributed and megatron's groups
in its process, which must not leak into the other tests' process."""
import os
import re
import subprocess
import sys

import pytest

from ..launch import child_env

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FILE_ROW = re.compile(r"^\| (?P<file>[\w/]+\.py) \| (?P<n>\d+) \|$", re.M)
TOTAL = re.compile(r"^\| \*\*(?P<files>\d+) files\*\* \| \*\*(?P<lines>\d+)\*\* \|$", re.M)
SHOWN = re.compile(r"^ *\d+  (?P<code>.*)$", re.M)

CORE = {"alum/config.py", "alum/perturbation.py", "alum/divergence.py", "alum/adversarial.py"}
# The fast order's step: the core, the loop's micro-batch step and its layout helpers.
FAST = CORE | {"pretrain/mlm_step.py", "pretrain/alum_layout.py"}
# The lean order adds its passes, the term's split and the clean pass's RNG replay.
LEAN = FAST | {"pretrain/lean_order.py", "alum/split_term.py", "pretrain/checkpoint.py"}


def _trace(order):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "step_code_trace.py"),
         "--order", order, "--show-lines"],
        env=child_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("order,allowed", [("fast", FAST), ("lean", LEAN)])
def test_one_step_runs_in_the_named_files(order, allowed):
    out = _trace(order)
    rows = {m["file"]: int(m["n"]) for m in FILE_ROW.finditer(out)}
    total = TOTAL.search(out)
    assert total and int(total["files"]) == len(rows), out[-2000:]
    assert sum(rows.values()) == int(total["lines"])
    assert CORE <= set(rows), f"the core did not run: {sorted(rows)}"
    assert set(rows) <= allowed, f"the step reached other files: {sorted(set(rows) - allowed)}"
    assert all(n > 0 for n in rows.values())
    # α multiplies the term in one line of the whole step (AlumStep.weighted).
    alpha_lines = [m["code"].strip() for m in SHOWN.finditer(out)
                   if re.search(r"\balpha\b", m["code"]) and "*" in m["code"]]
    assert alpha_lines == ["return self.config.alpha * value"], alpha_lines
