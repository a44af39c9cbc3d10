"""Several nodes: a run launched as two nodes of one rank each (two ``deepspeed`` launchers,
``--hostfile`` with two hosts, ``--no_ssh --node_rank``, rendezvous on 127.0.0.1, gloo)
gives the losses of the same runs launched as one node of two ranks; losing one of the
nodes mid-step (killed, or frozen) ends both launchers with an error in bounded time,
leaves the last complete checkpoint loadable, and the run resumes on the rank left."""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from alum.checkpoint_tags import LATEST, all_tags, incomplete_reason
from alum.pretrain import Trainer

from ..launch import launch_deepspeed, launch_nodes, node_logs, start_nodes
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


def _lose_a_node(tmp_path, cfg, mode: str, port: int):
    """Launch ``cfg`` as two nodes whose second one is lost at step 3; (exit codes of the
    two launchers, None for one still running; seconds from the loss to node 0's exit)."""
    out = tmp_path / mode
    out.mkdir()
    cfg_path = out / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    procs = start_nodes(os.path.join(HERE, "lose_node_worker.py"), cfg_path, mode, 3, out,
                        hostfile=write_hostfile(tmp_path / "hostfile", 2), nodes=2,
                        port=port, log_dir=str(out))
    try:
        code0 = procs[0].wait(timeout=600)
        ended = time.time()
        try:  # a killed node's launcher has seen its rank die before node 0 failed
            code1 = procs[1].wait(timeout=30 if mode == "kill" else 5)
        except subprocess.TimeoutExpired:
            code1 = None
    finally:
        for p in procs:  # a frozen node stays frozen: what a scheduler's kill does
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert (out / "lost_at").exists(), node_logs(str(out), 2)
    return code0, code1, ended - float((out / "lost_at").read_text()), str(out)


@pytest.mark.slow
def test_a_lost_node_ends_the_run_and_it_resumes_on_fewer_ranks(tmp_path, sample_cache):
    """A rank killed (or frozen) mid-step: the launchers exit non-zero within a bounded
    time, the last complete checkpoint is intact, and the run resumes on one rank
    (DP=2 -> DP=1) with the losses of the run that was never interrupted."""
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    kw = dict(steps=6, hidden=64, layers=2, save_interval=2)
    straight = Trainer(tiny_config(tmp_path / "straight", sample_cache, grad_accum=4,
                                   **kw)).train()

    killed = tiny_config(tmp_path / "killed_run", sample_cache, grad_accum=2, **kw)
    code0, code1, seconds, logs = _lose_a_node(tmp_path, killed, "kill", 29741)
    assert code0 not in (0, None) and code1 not in (0, None), node_logs(logs, 2)
    # Its peer's socket closes at once: far below the 10-minute collective timeout (the
    # bound allows for a shared, loaded machine, where one step can take tens of seconds).
    assert seconds < 180, (seconds, node_logs(logs, 2))

    # A frozen rank keeps its sockets open: its peer waits for the collective timeout.
    frozen = tiny_config(tmp_path / "frozen_run", sample_cache, grad_accum=2, **kw)
    frozen.train.collective_timeout_minutes = 0.25
    code0, code1, seconds, logs = _lose_a_node(tmp_path, frozen, "freeze", 29743)
    assert code0 not in (0, None) and code1 is None, node_logs(logs, 2)
    assert 10 < seconds < 15 + 180, (seconds, node_logs(logs, 2))

    for run in ("killed_run", "frozen_run"):
        ckpts = os.path.join(str(tmp_path / run), "checkpoints")
        assert open(os.path.join(ckpts, LATEST)).read().strip() == "global_step2", run
        assert incomplete_reason(ckpts, "global_step2") is None, run
        assert [t for _, t in all_tags(ckpts)] == ["global_step2"], run  # no debris
    # Resumed on the one rank left, with the global batch kept (accumulation doubled).
    resumed = Trainer(tiny_config(tmp_path / "killed_run", sample_cache, grad_accum=4,
                                  resume="auto", **kw))
    assert resumed.layout_change is not None and resumed.layout_change.saved.data_parallel_size == 2
    summary = resumed.train()
    assert summary.start_step == 2
    assert summary.losses == pytest.approx(straight.losses[2:], abs=1e-5)
