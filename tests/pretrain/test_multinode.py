"""Several nodes: a run launched as two nodes of one rank each (two ``deepspeed`` launchers,
``--hostfile`` with two hosts, ``--no_ssh --node_rank``, rendezvous on 127.0.0.1, gloo)
gives the losses of the same runs launched as one node of two ranks."""
import json
import os
import shutil

import pytest

from ..launch import launch_deepspeed, launch_nodes
from .conftest import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


def write_hostfile(path, nodes: int) -> str:
    """A DeepSpeed hostfile of ``nodes`` hosts with one slot each."""
    path.write_text("".join(f"node{n} slots=1\n" for n in range(nodes)))
    return str(path)


def _plan(out_dir) -> list:
    return [{"name": "dp2", "overrides": {"checkpoint": {"output_dir": str(out_dir / "dp2")}}},
            {"name": "tp2", "overrides": {"train": {"tensor_parallel_size": 2},
                                          "checkpoint": {"output_dir": str(out_dir / "tp2")}}}]


@pytest.mark.slow
def test_two_nodes_equal_one_node_of_two_ranks(tmp_path, sample_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=4, hidden=64, layers=2)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    results = {}
    for layout in ("one_node", "two_nodes"):
        out = tmp_path / layout
        out.mkdir()
        plan = tmp_path / f"plan_{layout}.json"
        plan.write_text(json.dumps(_plan(out)))
        worker = os.path.join(HERE, "tp_worker.py")
        if layout == "one_node":
            launch_deepspeed(worker, cfg_path, plan, out, nprocs=2, port=29721)
        else:
            launch_nodes(worker, cfg_path, plan, out, nodes=2, port=29723, log_dir=str(out),
                         hostfile=write_hostfile(tmp_path / "hostfile", 2))
        results[layout] = json.loads((out / "results.json").read_text())
    one, two = results["one_node"], results["two_nodes"]
    assert two["dp2"]["world"] == 2 and two["dp2"]["dp_size"] == 2
    assert two["tp2"]["dp_size"] == 1
    for name in ("dp2", "tp2"):
        assert len(two[name]["losses"]) == 4
        assert two[name]["losses"] == pytest.approx(one[name]["losses"], abs=1e-6), name
        assert two[name]["valid"]["loss"] == pytest.approx(one[name]["valid"]["loss"], abs=1e-6)
