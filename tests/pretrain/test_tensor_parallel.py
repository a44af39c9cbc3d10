"""Tensor and pipeline parallelism in the loop (standard MLM): over two gloo processes,
TP=2 (and with sequence parallel) and PP=2 (ZeRO-1 and ZeRO-0); over four, TP=2 x PP=2
(ZeRO-1, ZeRO-0, sequence parallel), DP=2 x PP=2 and DP=2 x PP=2 interleaved: each gives
the TP=1/PP=1 run's losses, validation loss and MLM accuracy. Also: their checkpoints
consolidate (alum.pretrain.consolidate) to the single-rank model, a PP=2 run resumed
half-way equals the uninterrupted one, and the refused combinations are refused at
config time."""
import json
import os
import shutil

import pytest
import torch

from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig, TrainConfig

from ..launch import launch_deepspeed
from .conftest import tiny_config

HERE = os.path.dirname(os.path.abspath(__file__))


def test_sequence_parallel_needs_tensor_parallel():
    with pytest.raises(ValueError, match="TrainConfig.sequence_parallel"):
        TrainConfig(sequence_parallel=True)


def test_pipeline_parallel_rejections_at_config_time(tmp_path):
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*ZeRO stage 0 or 1"):
        TrainConfig(pipeline_parallel_size=2, ds_config="zero2")
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*ZeRO stage 0 or 1"):
        TrainConfig(pipeline_parallel_size=2, ds_config="zero3")
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*fp16"):
        TrainConfig(pipeline_parallel_size=2, ds_config="fp16")
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size"):
        TrainConfig(pipeline_parallel_size=0)
    with pytest.raises(ValueError, match="TrainConfig.virtual_pipeline_size.*pipeline_parallel"):
        TrainConfig(virtual_pipeline_size=2)
    with pytest.raises(ValueError, match="TrainConfig.virtual_pipeline_size.*grad_accum_steps"):
        TrainConfig(pipeline_parallel_size=2, virtual_pipeline_size=2, grad_accum_steps=3)
    with pytest.raises(ValueError, match="TrainConfig.virtual_pipeline_size"):
        TrainConfig(pipeline_parallel_size=2, virtual_pipeline_size=0)
    # Accepted: ZeRO-0, TP x PP (with sequence parallel), the interleaved schedule.
    TrainConfig(pipeline_parallel_size=2, ds_config=_zero0_config(tmp_path))
    TrainConfig(pipeline_parallel_size=2, tensor_parallel_size=2, sequence_parallel=True)
    TrainConfig(pipeline_parallel_size=2, virtual_pipeline_size=2, grad_accum_steps=4)


def _zero0_config(tmp_path) -> str:
    """ds_configs/zero1.json with ZeRO off (stage 0)."""
    from alum.pretrain.ds_config import load_ds_config

    ds = load_ds_config("zero1")
    ds["zero_optimization"] = {"stage": 0}
    path = tmp_path / "zero0.json"
    path.write_text(json.dumps(ds))
    return str(path)


def _launch(tmp_path, nprocs: int, port: int, cfg: PretrainConfig, plan: list) -> dict:
    """``deepspeed --num_gpus nprocs tp_worker.py``: every run of ``plan`` in one launch."""
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    cfg_path, plan_path = tmp_path / "cfg.json", tmp_path / "plan.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    plan_path.write_text(json.dumps(plan))
    out = tmp_path / "worker_out"
    out.mkdir()
    launch_deepspeed(os.path.join(HERE, "tp_worker.py"), cfg_path, plan_path, out,
                     nprocs=nprocs, port=port)
    results = json.loads((out / "results.json").read_text())
    for name, got in results.items():
        if "consolidated" in got:
            assert got["consolidated"] == "ok", f"{name}: {got['consolidated']}"
            got["state"] = torch.load(out / f"{name}.pt", weights_only=True)
    return results


def _run(name: str, out_dir, consolidate: bool = False, **sections) -> dict:
    sections.setdefault("checkpoint", {})
    sections["checkpoint"].setdefault("output_dir", str(out_dir / name))
    return {"name": name, "overrides": sections, "consolidate": consolidate}


def _assert_same_run(got: dict, reference, name: str, tol: float = 1e-5) -> None:
    assert got["losses"] == pytest.approx(reference.losses, abs=tol), name
    assert got["valid"]["loss"] == pytest.approx(reference.evals[-1]["loss"], abs=tol), name
    assert got["valid"]["accuracy"] == pytest.approx(reference.evals[-1]["accuracy"],
                                                     abs=1e-9), name


def _assert_consolidated_is_the_model(state: dict, reference: Trainer, name: str) -> None:
    """Same names and shapes as the single-rank model's parameters; values equal to those
    of the independently trained TP=1/PP=1 run up to the runs' float differences."""
    params = dict(reference.engine.module.named_parameters())
    assert set(state) == set(params), (name, set(state) ^ set(params))
    for key, p in params.items():
        assert state[key].shape == p.shape, (name, key)
        torch.testing.assert_close(state[key], p.detach().float(), rtol=0, atol=1e-5,
                                   msg=lambda m: f"{name} {key}: {m}")


@pytest.mark.slow
def test_tensor_and_pipeline_parallel_equal_tp1_over_two_processes(tmp_path, sample_cache):
    """TP=2, TP=2 + sequence parallel, PP=2 (ZeRO-1/0) equal TP=1/PP=1; their checkpoints
    consolidate to the single-rank model; a PP=2 run resumed half-way (dropout on)
    reproduces the uninterrupted one."""
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=4, grad_accum=2, hidden=64,
                      layers=2)
    cfg.train.eval_batches = 2
    reference_trainer = Trainer(cfg)
    reference = reference_trainer.train()
    zero0 = _zero0_config(tmp_path)
    out = tmp_path / "runs"
    split = {"output_dir": str(out / "pp2_split")}
    dropout = {"dropout": 0.1}
    pp2 = {"pipeline_parallel_size": 2}
    plan = [
        _run("tp2", out, train={"tensor_parallel_size": 2}),
        # ZeRO-2, so the sequence-parallel gradient hooks meet DeepSpeed's own.
        _run("tp2_sp", out, consolidate=True,
             train={"tensor_parallel_size": 2, "sequence_parallel": True, "ds_config": "zero2"}),
        _run("pp2", out, consolidate=True, train=pp2),
        _run("pp2_zero0", out, consolidate=True, train=dict(pp2, ds_config=zero0)),
        _run("pp2_dropout", out, train=pp2, model=dropout),
        _run("pp2_split", out, train=dict(pp2, max_steps=2), model=dropout, checkpoint=split),
        _run("pp2_resumed", out, train=pp2, model=dropout,
             checkpoint=dict(split, resume="auto")),
    ]
    results = _launch(tmp_path, 2, 29702, cfg, plan)
    for name in ("tp2", "tp2_sp", "pp2", "pp2_zero0"):
        got = results[name]
        assert got["dp_size"] == 1 and got["world"] == 2
        _assert_same_run(got, reference, name)
    for name in ("tp2_sp", "pp2", "pp2_zero0"):
        _assert_consolidated_is_the_model(results[name]["state"], reference_trainer, name)

    # Resume under PP: each stage's model and optimizer files, every rank's RNG state.
    saved = sorted(os.listdir(out / "pp2_split" / "checkpoints" / "global_step2"))
    for name in ("mp_rank_00_model_states.pt", "mp_rank_01_model_states.pt",
                 "zero_pp_rank_0_mp_rank_00_optim_states.pt",
                 "zero_pp_rank_0_mp_rank_01_optim_states.pt",
                 "rng_state_rank0.pt", "rng_state_rank1.pt"):
        assert name in saved, saved
    straight, first, second = (results[n] for n in ("pp2_dropout", "pp2_split", "pp2_resumed"))
    assert len(first["losses"]) == 2 and second["start_step"] == 2
    assert first["losses"] + second["losses"] == pytest.approx(straight["losses"], abs=1e-6)
    assert second["valid"]["loss"] == pytest.approx(straight["valid"]["loss"], abs=1e-6)
    assert straight["losses"] != pytest.approx(results["pp2"]["losses"], abs=1e-4)  # dropout on


@pytest.mark.slow
def test_tensor_x_pipeline_and_data_x_pipeline_equal_tp1_over_four_processes(tmp_path,
                                                                             sample_cache):
    """Four gloo processes: TP=2 x PP=2 (ZeRO-1, ZeRO-0, sequence parallel, interleaved
    with sequence parallel), DP=2 x PP=2 and DP=2 x PP=2 interleaved (2 model chunks per
    stage) equal TP=1/PP=1 with the same global batch; the TP x PP and interleaved
    checkpoints consolidate to the model."""
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=3, grad_accum=4, hidden=64,
                      layers=4)
    cfg.train.eval_batches = 2
    reference_trainer = Trainer(cfg)
    reference = reference_trainer.train()
    zero0 = _zero0_config(tmp_path)
    out = tmp_path / "runs"
    tp2_pp2 = {"tensor_parallel_size": 2, "pipeline_parallel_size": 2}
    # DP=2 halves the micro-batches per rank and the validation batches per rank: the
    # same global batch and the same validation samples.
    dp2_pp2 = {"pipeline_parallel_size": 2, "grad_accum_steps": 2, "eval_batches": 1}
    plan = [
        _run("tp2_pp2", out, consolidate=True, train=tp2_pp2),
        _run("tp2_pp2_zero0", out, train=dict(tp2_pp2, ds_config=zero0)),
        _run("tp2_pp2_sp", out, train=dict(tp2_pp2, sequence_parallel=True)),
        _run("tp2_pp2_vp2_sp", out,
             train=dict(tp2_pp2, virtual_pipeline_size=2, sequence_parallel=True,
                        ds_config=zero0)),
        _run("dp2_pp2", out, train=dp2_pp2),
        _run("dp2_pp2_vp2", out, consolidate=True,
             train=dict(dp2_pp2, virtual_pipeline_size=2)),
    ]
    results = _launch(tmp_path, 4, 29703, cfg, plan)
    for name, got in results.items():
        assert got["world"] == 4 and got["dp_size"] == (2 if name.startswith("dp2") else 1)
        _assert_same_run(got, reference, name)
    for name in ("tp2_pp2", "dp2_pp2_vp2"):
        _assert_consolidated_is_the_model(results[name]["state"], reference_trainer, name)


def test_consolidate_command_on_a_single_rank_checkpoint(tmp_path, sample_cache):
    """``python -m alum.pretrain.consolidate`` writes zero_to_fp32's state dict for one
    model-parallel rank; a model file beyond the checkpoint's TP x PP is refused, named
    (the convert reader takes the layout from DeepSpeed's checkpoint_parallel_dimensions
    and the run's config, not from the recorded parallel_layout)."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    from alum.pretrain.consolidate import LAYOUT_KEY, consolidated_state_dict, main

    out = tmp_path / "run"
    Trainer(tiny_config(out, sample_cache, steps=1)).train()
    ckpt = out / "checkpoints"
    main([str(ckpt), str(tmp_path / "model.pt")])
    written = torch.load(tmp_path / "model.pt", weights_only=True)
    expected = get_fp32_state_dict_from_zero_checkpoint(str(ckpt))
    assert set(written) == set(expected) and len(written) > 10
    for key, value in expected.items():
        assert torch.equal(written[key], value), key

    tag = ckpt / "global_step1"
    state = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)
    assert state[LAYOUT_KEY]["tensor_parallel_size"] == 1
    torch.save(state, tag / "mp_rank_01_model_states.pt")  # a rank the layout lacks
    with pytest.raises(ValueError, match="holds mp_rank_01_model_states.pt, beyond the 1 "
                                         "model-parallel ranks of tp=1 x pp=1"):
        consolidated_state_dict(str(ckpt), "global_step1")
