"""benchmarks/kernels_bench.py on CPU: the no-GPU message, a smoke run of every code path
(tiny shapes), and the verdicts against the targets of docs/kernels.md; the GPU script's
syntax."""
import importlib.util
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _bench():
    spec = importlib.util.spec_from_file_location(
        "kernels_bench", os.path.join(ROOT, "benchmarks", "kernels_bench.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["kernels_bench"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_cpu_smoke_run_prints_the_table(capsys, tmp_path):
    bench = _bench()
    out_json = tmp_path / "rows.json"
    assert bench.main(["--cpu-smoke", "--no-compile", "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "copy bandwidth" in out and "adv_project" in out and "sym_kl" in out
    assert out_json.exists()


def test_without_cuda_the_benchmark_explains_and_exits_zero(capsys):
    import torch
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    assert _bench().main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_verdicts_apply_the_targets():
    bench = _bench()
    Row = bench.Row
    rows = [Row("adv_project", "s", "bfloat16", "eager", 3.0, 1000, 0.3, 100, 1.0),
            Row("adv_project", "s", "bfloat16", "fused", 0.9, 2700, 0.82, 40, 3.33),
            Row("sym_kl", "k", "bfloat16", "eager", 10.0, 500, 0.2, 8000, 1.0),
            Row("sym_kl", "k", "bfloat16", "fused", 6.0, 900, 0.3, 3000, 1.67)]
    lines = bench.verdicts(rows)
    assert lines[0].startswith("PASS adv_project") and lines[1].startswith("MISS sym_kl")


def test_gpu_script_is_valid_bash():
    script = os.path.join(ROOT, "benchmarks", "kernels_gpu_check.sh")
    assert subprocess.run(["bash", "-n", script]).returncode == 0
    assert os.access(script, os.X_OK)
