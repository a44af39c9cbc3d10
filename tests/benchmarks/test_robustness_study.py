"""benchmarks/robustness_study.py's bookkeeping: finished runs are skipped on a rerun, and
the report's per-arm means, paired differences and time ratios are those of the records."""
import json
import os
import statistics

import pytest

from . import load_script


@pytest.fixture(scope="module")
def study_module():
    return load_script("robustness_study")


def _record(arm, seed, clean, r1, r2, word, seconds):
    return {"arm": arm, "seed": seed, "radii": [0.02, 0.05], "clean": clean,
            "eval_examples": 1000.0, "attacked": [r1, r2],
            "word": {"accuracy": word, "clean_accuracy": clean, "examples": 200.0},
            "train_seconds": seconds, "steps": 250, "alum": None, "adv_stats": {}}


def _write_records(study, runs):
    for r in runs:
        path = study.record_path(r["arm"], r["seed"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(r, fh)


def _study(study_module, tmp_path):
    """A study with default options writing under ``tmp_path``; its rules count no other
    data set's folder (the repository's own study folders must not change a test)."""
    return study_module.Study(study_module.build_parser().parse_args(
        ["--output", str(tmp_path), "--rule-with", ""]))


def test_report_pairs_runs_by_seed(study_module, tmp_path):
    study = _study(study_module, tmp_path)
    runs = [_record("standard", 1, 0.60, 0.40, 0.20, 0.30, 100.0),
            _record("standard", 2, 0.62, 0.44, 0.22, 0.34, 110.0),
            _record("alum", 1, 0.61, 0.55, 0.35, 0.33, 260.0),
            _record("alum", 2, 0.60, 0.50, 0.30, 0.36, 290.0),
            _record("alum", 3, 0.59, 0.50, 0.30, 0.30, 280.0)]  # seed 3 has no pair
    _write_records(study, runs)
    summary = study.report(["standard", "alum"], [0.02, 0.05])
    assert summary["standard"]["n"] == 2 and summary["alum"]["n"] == 3
    assert summary["alum"]["r1"]["mean"] == pytest.approx(statistics.mean([0.55, 0.5, 0.5]))
    paired = summary["alum"]["paired"]
    assert paired["clean"]["values"] == pytest.approx([0.01, -0.02])
    assert paired["r1"]["mean"] == pytest.approx((0.15 + 0.06) / 2)
    assert paired["r2"]["std"] == pytest.approx(statistics.stdev([0.15, 0.08]))
    assert paired["word"]["values"] == pytest.approx([0.03, 0.02])
    assert paired["time_ratio"]["values"] == pytest.approx([2.6, 290 / 110])
    text = (tmp_path / "results.md").read_text()
    assert "| alum | 2 | -0.5 ± 2.1 | +10.5 ± 6.4 |" in text  # (+1 - 2)/2 points
    # A finished run is read back, never re-run (its model is not even needed).
    assert study.one_run("alum", 2, "no-such-model", [0.02, 0.05])["clean"] == 0.60


def test_report_covers_every_arm_with_records(study_module, tmp_path, capsys):
    study = _study(study_module, tmp_path)
    _write_records(study, [_record("standard", 1, 0.60, 0.40, 0.20, 0.30, 100.0),
                           _record("alum-paper", 1, 0.62, 0.41, 0.21, 0.29, 120.0)])
    # A sitting that runs only `standard` still reports the other arm's records.
    summary = study.report(["standard"], [0.02, 0.05])
    assert sorted(summary) == ["alum-paper", "standard"]
    assert summary["alum-paper"]["paired"]["clean"]["values"] == pytest.approx([0.02])
    assert "| alum-paper | 1 |" in (tmp_path / "results.md").read_text()
    # --report without a calibration is a clear error, not a run.
    with pytest.raises(SystemExit, match="needs a calibrated study"):
        study_module.main(["--output", str(tmp_path), "--report"])


def test_report_draws_each_arm_with_its_spread(study_module, tmp_path):
    from alum.plotting import read_png_data

    study = _study(study_module, tmp_path)
    for r in (_record("standard", 1, 0.60, 0.40, 0.20, 0.30, 100.0),
              _record("standard", 2, 0.64, 0.44, 0.22, 0.34, 110.0),
              _record("alum", 1, 0.61, 0.55, 0.35, 0.33, 260.0)):
        path = study.record_path(r["arm"], r["seed"])
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as fh:
            json.dump(r, fh)
    summary = study.report(["standard", "alum"], [0.02, 0.05])
    png = tmp_path / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = read_png_data(str(png))
    assert data["arms"] == ["standard", "alum"]
    assert data["metrics"] == ["clean", "PGD r=0.02", "PGD r=0.05", "DeepWordBug"]
    for arm in data["arms"]:
        for key, label in zip(("clean", "r1", "r2", "word"), data["metrics"]):
            bar = data["bars"][arm][label]
            assert bar["mean"] == pytest.approx(100 * summary[arm][key]["mean"])
            assert bar["std"] == pytest.approx(100 * summary[arm][key]["std"])
            assert bar["values"] == pytest.approx([100 * v for v in summary[arm][key]["values"]])
    assert data["bars"]["standard"]["clean"]["std"] == pytest.approx(
        100 * statistics.stdev([0.60, 0.64]))


def test_study_figure_of_the_committed_results(tmp_path):
    """The shipped study's results.json draws, bar for bar, what its summary says."""
    from alum.finetune.robustness_study_figure import main
    from alum.plotting import read_png_data

    results = os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "results",
                           "robustness_study", "results.json")
    if not os.path.isfile(results):
        pytest.skip("no committed study results")
    png = tmp_path / "study.png"
    assert main([results, str(png)]) == 0
    summary = json.load(open(results))["summary"]
    data = read_png_data(str(png))
    assert data["arms"] == [a for a in summary if summary[a].get("n")]
    for arm in data["arms"]:
        assert data["bars"][arm]["clean"]["mean"] == pytest.approx(
            100 * summary[arm]["clean"]["mean"])
    assert main([str(tmp_path / "missing.json"), str(png)]) == 2


def test_continual_pretraining_pairs_and_stage_table(study_module, tmp_path):
    study = _study(study_module, tmp_path)
    runs = [_record("standard", 1, 0.60, 0.40, 0.20, 0.30, 100.0),
            _record("cpt-standard", 1, 0.61, 0.42, 0.21, 0.31, 100.0),
            _record("cpt-standard", 2, 0.59, 0.40, 0.20, 0.30, 100.0),
            _record("cpt-relative", 1, 0.60, 0.50, 0.30, 0.35, 100.0),
            _record("cpt-relative", 2, 0.60, 0.46, 0.28, 0.33, 100.0)]
    _write_records(study, runs)
    evals = [{"loss": 8.0, "accuracy": 0.1, "step": 480}, {"loss": 7.5, "accuracy": 0.1,
             "step": 540}, {"loss": 7.4, "accuracy": 0.12, "step": 600}]
    study.state["cpt_stages"] = {
        "warmup": {"steps": 600, "before": {"loss": 10.9, "accuracy": 0.0},
                   "after": evals[-1], "evals": evals, "wall_s": 90.0},
        "relative": {"steps": 1000, "before": evals[-1], "after": {"loss": 7.0, "accuracy": 0.2},
                     "wall_s": 2000.0, "cpu_s": 3500.0, "adv_means": {"delta_rel_norm": 0.1},
                     "flip_check": {"alum": 0.3, "dropout": 0.1, "positions": 500}},
        # Run by another study on this machine: no times in this study's state.
        "paper": {"steps": 1000, "before": evals[-1], "after": {"loss": 7.2, "accuracy": 0.2},
                  "wall_s": None, "cpu_s": None}}
    summary = study.report(["cpt-standard", "cpt-relative"], [0.02, 0.05])
    pairs = json.loads((tmp_path / "results.json").read_text())["pairs"]
    rel = pairs["cpt-relative − cpt-standard"]
    assert rel["r2"]["values"] == pytest.approx([0.09, 0.08])
    assert rel["clean"]["mean"] == pytest.approx((-0.01 + 0.01) / 2)
    # Standard continual pre-training against none: in the table against standard.
    assert summary["cpt-standard"]["paired"]["clean"]["values"] == pytest.approx([0.01])
    assert "cpt-paper − cpt-standard" not in pairs  # no records, no row
    text = (tmp_path / "results.md").read_text()
    assert "| cpt-relative − cpt-standard | 2 | +0.0 ± 1.4 | +7.0 ± 1.4 | +8.5 ± 0.7 |" in text
    assert ("| relative | 1000 | 7.400 → 7.000 | 0.120 → 0.200 | 2000 (3500) | 30.0% | 10.0% "
            "| 0.1 |") in text
    assert "| warmup | 600 | 10.900 → 7.400 | 0.000 → 0.120 | 90 | – |" in text  # no CPU time
    assert "| paper | 1000 | 7.400 → 7.200 | 0.120 → 0.200 | – | – | – | – |" in text
    assert "7.500 (step 540) → 7.400 (step 600); the last interval improved it by 1.3%" in text
