"""benchmarks/study_retime.py: a record without CPU times gets the re-run's, only when the
re-run reproduces its clean accuracy; records that have them are left alone."""
import json
import os

import pytest

from . import load_script
from .test_robustness_study import _record, _study, _write_records


@pytest.fixture(scope="module")
def study_module():
    return load_script("robustness_study")


@pytest.fixture(scope="module")
def retime_module(study_module):  # loaded after robustness_study put benchmarks/ on the path
    import study_retime
    return study_retime


def _fake_finetune(study, clean_rerun, steps=250, calls=None):
    """``study.sh`` that writes the summary alum-finetune would, with this clean score."""
    def sh(cmd, log_name):
        out = cmd[cmd.index("--output") + 1]
        os.makedirs(out, exist_ok=True)
        summary = {"steps": steps, "train_seconds": 100.0, "train_cpu_seconds": 190.0,
                   "extra_evals": {"heldout": {"eval_heldout_accuracy": clean_rerun}}}
        with open(os.path.join(out, "alum_finetune.json"), "w") as fh:
            json.dump(summary, fh)
        if calls is not None:
            calls.append(cmd)
    study.sh = sh


def _ready(study_module, tmp_path):
    study = _study(study_module, tmp_path)
    study.train_csv, study.eval_csv = str(tmp_path / "train.csv"), str(tmp_path / "eval.csv")
    return study


def test_retime_adds_the_rerun_cpu_times(study_module, retime_module, tmp_path):
    study = _ready(study_module, tmp_path)
    old = _record("standard", 1, 0.752, 0.58, 0.27, 0.19, 800.0)
    timed = dict(_record("alum-half-alpha", 1, 0.757, 0.66, 0.46, 0.2, 300.0),
                 train_cpu_seconds=500.0)
    _write_records(study, [old, timed])
    calls, asked = [], []
    _fake_finetune(study, clean_rerun=0.751, calls=calls)
    done = retime_module.retime_records(study, ["standard", "alum-half-alpha"], [1, 2],
                                        lambda arm: asked.append(arm) or "/models/minilm")
    assert done == ["standard-seed1"]
    assert asked == ["standard"]  # no model (a stage's may be built) for a timed record
    (cmd,) = calls  # the record that had its CPU times was not run again
    assert cmd[:3] == ["alum-finetune", "--model", "/models/minilm"]
    assert cmd[cmd.index("--seed") + 1] == "1" and "--no-alum" in cmd
    assert cmd[-2:] == ["--extra-eval", f"heldout={study.eval_csv}"]
    with open(study.record_path("standard", 1)) as fh:
        r = json.load(fh)
    assert r["train_cpu_seconds"] == 190.0
    assert r["command_cpu_seconds"] == study.state["cpu_s"]["retime standard seed 1"]
    assert r["retimed"]["clean_record"] == 0.752 and r["retimed"]["clean_rerun"] == 0.751
    # What the record measured stays as it was.
    assert (r["clean"], r["attacked"], r["train_seconds"]) == (0.752, [0.58, 0.27], 800.0)
    # A second pass finds nothing to do.
    assert retime_module.retime_records(study, ["standard"], [1], lambda arm: "x") == []
    # Unless it re-times every record: the replaced times stay in the record.
    _fake_finetune(study, clean_rerun=0.7545, calls=calls)  # within both records
    done = retime_module.retime_records(study, ["standard", "alum-half-alpha"], [1],
                                        lambda arm: "/models/minilm", again=True)
    assert done == ["standard-seed1", "alum-half-alpha-seed1"] and len(calls) == 3
    with open(study.record_path("alum-half-alpha", 1)) as fh:
        r = json.load(fh)
    assert r["retimed"]["replaced"] == {"train_cpu_seconds": 500.0}
    assert r["train_cpu_seconds"] == 190.0 and r["retimed"]["clean_rerun"] == 0.7545
    with open(study.record_path("standard", 1)) as fh:
        r = json.load(fh)
    assert r["retimed"]["replaced"]["retimed"]["clean_rerun"] == 0.751
    assert r["retimed"]["replaced"]["train_cpu_seconds"] == 190.0


@pytest.mark.parametrize("clean_rerun,steps", [(0.74, 250), (0.752, 240)],
                         ids=["other-accuracy", "other-steps"])
def test_retime_refuses_a_rerun_that_is_not_the_record(study_module, retime_module,
                                                       tmp_path, clean_rerun, steps):
    study = _ready(study_module, tmp_path)
    _write_records(study, [_record("standard", 2, 0.752, 0.58, 0.27, 0.19, 800.0)])
    path = study.record_path("standard", 2)
    with open(path) as fh:
        before = fh.read()
    _fake_finetune(study, clean_rerun=clean_rerun, steps=steps)
    with pytest.raises(SystemExit, match="standard-seed2.json: the re-run is not the record"):
        retime_module.retime_records(study, ["standard"], [2], lambda arm: "/m")
    with open(path) as fh:
        assert fh.read() == before
