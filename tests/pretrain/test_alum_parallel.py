"""ALUM under the loop's parallel layouts (docs/alum_parallel.md): with fixed per-sample initial noise and
dropout off, TP=2 (fast order), TP=2 with sequence parallel (lean order, ZeRO-2), DP=2
(fast/ZeRO-1 and lean/ZeRO-2) and PP=2 (the pipeline's lean passes) give the adversarial
losses, statistics and parameter updates (through the following losses) of the TP=1/DP=1
run, over two gloo processes (the cheaper variants under each layout:
test_alum_variants_layouts.py); a NaN ascent gradient on one TP rank, or NaN logits on the
last pipeline stage, makes every rank skip that micro-batch's term."""
import json
import math
import os
import shutil

import pytest

from alum import AlumConfig
from alum.pretrain import Trainer

from ..launch import launch_deepspeed
from .conftest import tiny_config
from .test_training import RELATIVE

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_alum_layouts_equal_tp1_dp1(tmp_path, sample_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=4, grad_accum=2, hidden=64,
                      layers=2, alum=AlumConfig(start_step=1, **RELATIVE))
    cfg.train.eval_batches = 2
    reference = Trainer(cfg).train()
    assert reference.alum_steps == 3 and reference.adv_means["adv_loss"] > 0
    cfg_all = tiny_config(tmp_path / "run_all", sample_cache, steps=4, grad_accum=2, hidden=64,
                          layers=2, alum=AlumConfig(start_step=1, **RELATIVE))
    cfg_all.alum_positions = "all"
    reference_all = Trainer(cfg_all).train()
    assert reference_all.adv_means["adv_loss"] != pytest.approx(reference.adv_means["adv_loss"],
                                                                rel=1e-3)
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "out.json"
    launch_deepspeed(os.path.join(HERE, "alum_parallel_worker.py"), cfg_path, out, nprocs=2,
                     port=29641)
    results = json.loads(out.read_text())
    for name in ("tp2", "tp2_sp_lean", "dp2", "dp2_lean", "pp2"):
        got = results[name]
        assert got["world"] == 2 and got["dp_size"] == (2 if name.startswith("dp2") else 1)
        assert got["adv_skipped"] == 0, name
        assert got["losses"] == pytest.approx(reference.losses, abs=1e-5), name
        for key in ("adv_loss", "flip_rate"):
            assert got["adv"][key] == pytest.approx(reference.adv_means[key], rel=1e-4,
                                                    abs=1e-7), (name, key)
        if not name.startswith("tp2_sp"):  # per-rank shard means under sequence parallel
            for key in ("delta_rel_norm", "cos_delta_grad"):
                assert got["adv"][key] == pytest.approx(reference.adv_means[key],
                                                        rel=1e-4), (name, key)
        if got["dp_size"] == 1:  # DP ranks validate their own slices: another sample set
            assert got["valid"]["loss"] == pytest.approx(reference.evals[-1]["loss"], abs=1e-5)
    for name in ("tp2_sp_all", "pp2_all"):
        got = results[name]
        assert got["losses"] == pytest.approx(reference_all.losses, abs=1e-5), name
        for key in ("adv_loss", "flip_rate"):
            assert got["adv"][key] == pytest.approx(reference_all.adv_means[key], rel=1e-4,
                                                    abs=1e-7), (name, key)
    for name in ("tp2_sp_nan", "pp2_nan"):
        nan = results[name]
        assert nan["adv_skipped"] == 1, name
        assert all(math.isfinite(x) for x in nan["losses"])
        assert all(math.isfinite(v) for v in nan["adv"].values())
        # Until the poisoned micro-batch (step 2's first) the run is the reference's; the
        # term it dropped changes the last update only.
        assert nan["losses"][:3] == pytest.approx(reference.losses[:3], abs=1e-5)
        assert nan["losses"][3] != pytest.approx(reference.losses[3], abs=1e-6)
    # Both layouts dropped the same term: the same update.
    assert results["pp2_nan"]["losses"] == pytest.approx(results["tp2_sp_nan"]["losses"],
                                                         abs=1e-5)


def test_alum_pipeline_combinations_refused_at_config_time():
    from alum.pretrain.config import PretrainConfig, TrainConfig

    with pytest.raises(ValueError, match="PretrainConfig.alum_order.*lean"):
        PretrainConfig(train=TrainConfig(pipeline_parallel_size=2), alum=AlumConfig(),
                       alum_order="fast")
    with pytest.raises(ValueError, match="TrainConfig.virtual_pipeline_size"):
        PretrainConfig(train=TrainConfig(pipeline_parallel_size=2, virtual_pipeline_size=2,
                                         grad_accum_steps=2), alum=AlumConfig())
    cfg = PretrainConfig(train=TrainConfig(pipeline_parallel_size=2), alum=AlumConfig())
    assert cfg.resolved_alum_order == "lean"
    assert PretrainConfig(alum=AlumConfig()).resolved_alum_order == "fast"


@pytest.mark.slow
def test_alum_tensor_x_pipeline_and_data_x_pipeline_over_four_processes(tmp_path, sample_cache):
    """Four gloo processes: ALUM at TP=2 x PP=2 with sequence parallel and at DP=2 x PP=2
    (the same global batch) equals the TP=1/PP=1 fast-order run."""
    from .test_tensor_parallel import _assert_same_run, _launch, _run

    cfg = tiny_config(tmp_path / "run", sample_cache, steps=3, grad_accum=4, hidden=64,
                      layers=4, alum=AlumConfig(start_step=1, **RELATIVE))
    cfg.train.eval_batches = 2
    reference = Trainer(cfg).train()
    out = tmp_path / "runs"
    plan = [
        _run("tp2_pp2_sp", out, train={"tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                                       "sequence_parallel": True}),
        _run("dp2_pp2", out, train={"pipeline_parallel_size": 2, "grad_accum_steps": 2,
                                    "eval_batches": 1}),
    ]
    results = _launch(tmp_path, 4, 29646, cfg, plan)
    for name, got in results.items():
        assert got["world"] == 4 and got["alum_steps"] == reference.alum_steps == 2
        assert got["adv_loss"] == pytest.approx(reference.adv_means["adv_loss"], rel=1e-4)
        _assert_same_run(got, reference, name)
