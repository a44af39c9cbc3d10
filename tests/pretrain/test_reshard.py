"""Resuming at another parallel layout (alum.pretrain.reshard, DeepSpeed's universal
checkpoint): a run saved half-way at DP=2, TP=2, PP=2 (ZeRO-1) or DP=1/TP=1/PP=1 and
resumed at the other layout gives the next losses of the run that never moved, with the
optimizer moments, LR schedule, step, data position and ALUM's curriculum carried; the layout
changes that are not supported are refused before any work, naming both layouts."""
import json
import os
import shutil

import pytest

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.pretrain.reshard import (Layout, LayoutChangeError, plan_layout_change,
                                   saved_layout)

from ..launch import launch_deepspeed
from .conftest import tiny_config
from .test_training import RELATIVE

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS, SPLIT = 4, 2


def _config(out, cache, **kw):
    """4 steps of a global batch of 8 (micro 4 x accumulation 2 at DP=1); ALUM from step 3,
    so the curriculum switches on after the resume."""
    kw.setdefault("grad_accum", 2)
    return tiny_config(out, cache, steps=STEPS, hidden=64, layers=2,
                       alum=AlumConfig(start_step=3, **RELATIVE), **kw)


def _run(name, out_dir, **sections) -> dict:
    sections.setdefault("checkpoint", {})
    sections["checkpoint"].setdefault("output_dir", str(out_dir / name))
    return {"name": name, "overrides": sections}


def _ckpts(out) -> str:
    return os.path.join(str(out), "checkpoints")


@pytest.mark.slow
def test_resume_across_dp_tp_and_pp_equals_the_run_that_never_moved(tmp_path, sample_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    straight = Trainer(_config(tmp_path / "straight", sample_cache)).train()
    assert straight.alum_steps == 1 and straight.adv_means["adv_loss"] > 0
    # DP=1/TP=1 checkpoints at the split, to be resumed at DP=2 and at TP=2.
    half = Trainer(_config(tmp_path / "dp1_half", sample_cache, max_steps=SPLIT)).train()
    assert half.losses == pytest.approx(straight.losses[:SPLIT], abs=1e-6)
    shutil.copytree(tmp_path / "dp1_half", tmp_path / "tp1_half")
    shutil.copytree(tmp_path / "dp1_half", tmp_path / "pp1_half")

    out = tmp_path / "runs"
    resume = {"resume": "auto"}
    first = {"max_steps": SPLIT}
    plan = [
        _run("dp2_half", out, train=dict(first, grad_accum_steps=1)),
        _run("tp2_half", out, train=dict(first, tensor_parallel_size=2)),
        _run("pp2_half", out, train=dict(first, pipeline_parallel_size=2)),
        _run("dp2_from_dp1", out, train={"grad_accum_steps": 1},
             checkpoint=dict(resume, output_dir=str(tmp_path / "dp1_half"))),
        _run("tp2_from_tp1", out, train={"tensor_parallel_size": 2},
             checkpoint=dict(resume, output_dir=str(tmp_path / "tp1_half"))),
        _run("pp2_from_pp1", out, train={"pipeline_parallel_size": 2},
             checkpoint=dict(resume, output_dir=str(tmp_path / "pp1_half"))),
    ]
    cfg = _config(tmp_path / "base", sample_cache)
    cfg_path, plan_path = tmp_path / "cfg.json", tmp_path / "plan.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    plan_path.write_text(json.dumps(plan))
    (tmp_path / "worker_out").mkdir()
    launch_deepspeed(os.path.join(HERE, "tp_worker.py"), cfg_path, plan_path,
                     tmp_path / "worker_out", nprocs=2, port=29731)
    results = json.loads((tmp_path / "worker_out" / "results.json").read_text())

    assert saved_layout(_ckpts(out / "dp2_half"), "global_step2") == Layout(1, 1, 1, 2, 1)
    assert saved_layout(_ckpts(out / "tp2_half"), "global_step2") == Layout(2, 1, 1, 1, 1)
    tail = straight.losses[SPLIT:]
    assert saved_layout(_ckpts(out / "pp2_half"), "global_step2") == Layout(1, 2, 1, 1, 1)
    # ... and back: DP=1 -> DP=2, TP=1 -> TP=2, PP=1 -> PP=2 (resumed inside the launch).
    for name in ("dp2_from_dp1", "tp2_from_tp1", "pp2_from_pp1"):
        got = results[name]
        assert got["start_step"] == SPLIT and got["alum_steps"] == 1, name
        assert got["losses"] == pytest.approx(tail, abs=1e-5), name
    # The TP=2 checkpoint resumed under ZeRO-3: refused before any work, naming both
    # layouts, and nothing written.
    tp_dir = out / "tp2_half"
    before = sorted(os.listdir(_ckpts(tp_dir)))
    with pytest.raises(LayoutChangeError,
                       match=r"global_step2 \(TP=2 x PP=1 x DP=1, ZeRO-1\) resumed at "
                             r"TP=1 x PP=1 x DP=1, ZeRO-3: a layout change needs ZeRO stage "
                             r"1 or 2 on both sides \(the current run's is 3"):
        Trainer(_config(tp_dir, sample_cache, resume="auto", ds_config="zero3"))
    assert sorted(os.listdir(_ckpts(tp_dir))) == before

    # DP=2 -> DP=1, TP=2 -> TP=1 and PP=2 -> PP=1, resumed here (a world of one).
    for name in ("dp2_half", "tp2_half", "pp2_half"):
        assert results[name]["losses"] == pytest.approx(straight.losses[:SPLIT], abs=1e-5)
        run_dir = out / name
        moved = Trainer(_config(run_dir, sample_cache, resume="auto"))
        assert moved.layout_change is not None and moved.step == SPLIT
        assert moved.consumed_samples == SPLIT * 8
        assert moved.lr_scheduler.last_epoch == SPLIT
        summary = moved.train()
        assert summary.start_step == SPLIT and summary.alum_steps == 1, name
        assert summary.losses == pytest.approx(tail, abs=1e-5), name
        assert not os.path.exists(os.path.join(_ckpts(run_dir), "universal"))
        # The new checkpoint is written at the new layout, and resumes as usual.
        assert saved_layout(_ckpts(run_dir), "global_step4") == Layout(1, 1, 1, 1, 1)


def test_unsupported_layout_changes_are_named(tmp_path):
    """The refusals, from the layouts alone (no checkpoint files needed but the tag)."""
    current = Layout(1, 1, 1, 1, 1)
    tag_dir = tmp_path / "global_step2"
    tag_dir.mkdir()
    # No marker and no ZeRO files: a TP=1/PP=1 ZeRO-0 checkpoint.
    with pytest.raises(LayoutChangeError, match=r"TP=1 x PP=1 x DP=1, ZeRO-0\) resumed at "
                                                r"TP=1 x PP=1 x DP=2, ZeRO-1: .*ZeRO stage 1 "
                                                r"or 2 on both sides \(the saved run's is 0"):
        plan_layout_change(str(tmp_path), "global_step2", Layout(1, 1, 1, 2, 1), None)
    for name in ("zero_pp_rank_0_mp_rank_00_optim_states.pt",
                 "zero_pp_rank_1_mp_rank_00_optim_states.pt"):
        (tag_dir / name).write_bytes(b"")
    assert saved_layout(str(tmp_path), "global_step2") == Layout(1, 1, 1, 2, 1)
    assert plan_layout_change(str(tmp_path), "global_step2", Layout(1, 1, 1, 2, 2),
                              None) is None   # same layout: an ordinary resume
    assert plan_layout_change(str(tmp_path), "global_step2", current, None) is not None
    with pytest.raises(LayoutChangeError, match=r"ZeRO-3: .*the current run's is 3"):
        plan_layout_change(str(tmp_path), "global_step2", Layout(1, 1, 1, 1, 3), None)
    with pytest.raises(LayoutChangeError, match=r"\(virtual 2\) x DP=1, ZeRO-1: the "
                                                r"interleaved schedule"):
        plan_layout_change(str(tmp_path), "global_step2", Layout(1, 2, 2, 1, 1), None)
    model = {"vocab_size": 2100, "make_vocab_size_divisible_by": 128, "hidden_size": 64,
             "num_layers": 2, "num_attention_heads": 2, "ffn_hidden_size": 256}
    with pytest.raises(LayoutChangeError, match=r"padded vocabulary differs .*2176 rows at "
                                                r"TP=1, 2304 at TP=2"):
        plan_layout_change(str(tmp_path), "global_step2", Layout(2, 1, 1, 1, 1), model)
