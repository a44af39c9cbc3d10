"""Smoke run of benchmarks/alum_step_cost.py on a tiny model: its self-checks pass (memory
trackers; fast, lean and naive give the same gradients) and it reports every variant."""
import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_alum_step_cost_tiny(capsys):
    spec = importlib.util.spec_from_file_location(
        "alum_step_cost", os.path.join(ROOT, "benchmarks", "alum_step_cost.py"))
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rows = bench.main(["--size", "tiny", "--vocab", "300", "--seq", "16", "--batch", "2",
                       "--repeats", "1", "--warmup", "0", "--check", "--device", "cpu",
                       "--clock", "cpu", "--breakdown"])
    out = capsys.readouterr().out
    assert "gradient check" in out and "self-check: ok" in out
    assert [r["variant"] for r in rows] == ["standard", "fast", "lean", "naive"]
    assert all(r["peak_mb"] > 0 and r["ms"] > 0 for r in rows)
    assert rows[0]["time_ratio"] == 1.0 and rows[0]["mem_ratio"] == 1.0
    assert "| (c) ALUM lean order |" in out
