"""Tensor and pipeline parallelism in the loop: TP=2 (and TP=2 with sequence parallel)
and PP=2 (ZeRO-1 and ZeRO-0) over two gloo processes give the TP=1/PP=1 losses,
validation loss and MLM accuracy (standard MLM)."""
import json
import os
import shutil
import subprocess

import pytest

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.pretrain.config import PretrainConfig, TrainConfig

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
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*tensor_parallel"):
        TrainConfig(pipeline_parallel_size=2, tensor_parallel_size=2)
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*fp16"):
        TrainConfig(pipeline_parallel_size=2, ds_config="fp16")
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size.*issue 5"):
        PretrainConfig(train=TrainConfig(pipeline_parallel_size=2), alum=AlumConfig())
    with pytest.raises(ValueError, match="TrainConfig.pipeline_parallel_size"):
        TrainConfig(pipeline_parallel_size=0)
    TrainConfig(pipeline_parallel_size=2, ds_config=_zero0_config(tmp_path))  # accepted


def _zero0_config(tmp_path) -> str:
    """ds_configs/zero1.json with ZeRO off (stage 0)."""
    from alum.pretrain.ds_config import load_ds_config

    ds = load_ds_config("zero1")
    ds["zero_optimization"] = {"stage": 0}
    path = tmp_path / "zero0.json"
    path.write_text(json.dumps(ds))
    return str(path)


@pytest.mark.slow
def test_tensor_parallel_equals_tp1(tmp_path, sample_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=4, grad_accum=2, hidden=64,
                      layers=2)
    cfg.train.eval_batches = 2
    reference = Trainer(cfg).train()
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    out = tmp_path / "out.json"
    done = subprocess.run(["deepspeed", "--num_gpus", "2", "--master_port", "29617",
                           os.path.join(HERE, "tp_worker.py"), str(cfg_path), str(out),
                           _zero0_config(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    for name in ("tp2", "tp2_sp", "pp2", "pp2_zero0"):
        got = results[name]
        assert got["dp_size"] == 1 and got["world"] == 2
        assert got["losses"] == pytest.approx(reference.losses, abs=1e-5), name
        assert got["valid"]["loss"] == pytest.approx(reference.evals[-1]["loss"], abs=1e-5)
        assert got["valid"]["accuracy"] == pytest.approx(reference.evals[-1]["accuracy"],
                                                         abs=1e-9)
