"""``alum-pretrain``: --help documents every option; the no-argument main job (fewer steps);
the ``deepspeed`` launcher script with two gloo processes (DP=2 equals DP=1)."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys

import pytest

from alum import AlumConfig
from alum.pretrain import cli
from alum.pretrain.config import (CheckpointConfig, DataConfig, LoggingConfig, ModelChoice,
                                  OptimConfig, TrainConfig)

from ..launch import child_env

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_help_lists_every_option(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for cls in (DataConfig, ModelChoice, OptimConfig, TrainConfig, CheckpointConfig,
                LoggingConfig):
        for f in dataclasses.fields(cls):
            assert f"--{f.name.replace('_', '-')}" in text, f.name
    for f in dataclasses.fields(AlumConfig):
        assert f"--adv-{f.name.replace('_', '-')}" in text, f.name
    assert "--alum-positions" in text and "--no-alum" in text


def test_defaults_are_the_main_job():
    cfg = cli.config_from_args(cli.build_parser().parse_args([]))
    assert cfg.data.data_path == () and cfg.model.model_kind == "megatron"
    assert cfg.alum == AlumConfig.from_preset("relative", start_step=cfg.alum.start_step)
    assert cfg.alum.start_step == cfg.train.train_steps // 2
    assert cfg.train.ds_config == "zero1" and cfg.train.precision == "fp32"
    assert cfg.model.model_size == "tiny" and cfg.model.hidden_size == 128
    base = cli.config_from_args(cli.build_parser().parse_args(["--model-size", "base"]))
    assert base.model.hidden_size is None and base.model.num_layers is None


def test_bad_option_value_is_a_clean_error(capsys):
    assert cli.main(["--micro-batch-size", "0"]) == 2
    assert "TrainConfig.micro_batch_size" in capsys.readouterr().err


@pytest.mark.slow
def test_main_job_with_fewer_steps(tmp_path, xdg_cache, monkeypatch, capsys):
    # The no-argument job, cut to 20 steps (ALUM from step 10), in a fresh directory.
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", xdg_cache)
    assert cli.main(["--train-steps", "20", "--eval-interval", "10"]) == 0
    out = capsys.readouterr().out
    assert "alum-pretrain summary" in out and ": down" in out
    summary = json.load(open(tmp_path / "alum_pretrain_output" / "summary.json"))
    assert summary["end_step"] == 20 and summary["alum_steps"] == 10
    assert summary["adv_skipped"] == 0 and summary["checkpoint"] == "global_step20"
    assert os.path.isfile(tmp_path / "alum_pretrain_output" / "config.json")
    from transformers import AutoTokenizer
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "alum_pretrain_output" /
                                                 "tokenizer"))) == 2048
    # Running it again resumes from the finished checkpoint: nothing left to train.
    assert cli.main(["--train-steps", "20"]) == 0
    assert "nothing to train" in capsys.readouterr().out


LAUNCH_ARGS = ["--train-steps", "4", "--seq-length", "32", "--hidden-size", "32",
               "--num-layers", "1", "--dropout", "0", "--eval-interval", "0",
               "--progress-bar", "false", "--adv-start-step", "2",
               "--alum-preset", "relative", "--adv-alpha", "10", "--ds-config", "zero2"]


@pytest.mark.slow
def test_deepspeed_launcher_two_processes_equal_one(tmp_path, sample_cache):
    """``deepspeed --num_gpus 2 pretrain/run_pretrain.py`` on CPU (gloo): DP=2 with micro
    batch 4 gives the losses of DP=1 with 2 accumulated micro-batches of 4."""
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    # This process's own world of one (set up by earlier tests) must not leak into the
    # children's rendezvous.
    env = child_env()
    common = LAUNCH_ARGS + ["--cache-dir", sample_cache, "--micro-batch-size", "4"]
    launch = ["deepspeed", "--num_gpus", "2", "--master_port", "29613",
              os.path.join(REPO, "pretrain", "run_pretrain.py"),
              *common, "--output-dir", str(tmp_path / "dp2")]
    done = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "alum.pretrain.cli", *common,
                             "--grad-accum-steps", "2", "--output-dir", str(tmp_path / "dp1")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    dp2 = json.load(open(tmp_path / "dp2" / "summary.json"))
    dp1 = json.load(open(tmp_path / "dp1" / "summary.json"))
    assert dp2["alum_steps"] == dp1["alum_steps"] == 2
    assert dp2["losses"] == pytest.approx(dp1["losses"], abs=1e-5)
    config = json.load(open(tmp_path / "dp2" / "config.json"))
    assert config["world_size"] == 2 and config["deepspeed"]["train_batch_size"] == 8
