"""alum-finetune under DeepSpeed ZeRO-2 (ds_configs/finetune_zero2.json), one CPU process.

Each run is a subprocess: DeepSpeed initialises a process group that must not leak into
the other tests. With one process, ZeRO-2 partitions nothing, so the run must match
the plain Trainer's (same torch AdamW, same schedule, same seeds).
"""
import json
import os
import subprocess
import sys

import pytest

from ..launch import child_env
from .conftest import FIXTURES

pytestmark = pytest.mark.slow  # two launches per case, about 8 s each

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
CONFIG = os.path.join(ROOT, "ds_configs", "finetune_zero2.json")


def _run(model_dir, out, *extra, env_extra=None):
    env = child_env(**(env_extra or {}))  # the DeepSpeed launch names its own rendezvous
    cmd = [sys.executable, "-m", "alum.finetune.cli", "--model", model_dir,
           "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
           "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"), "--output", str(out),
           "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
           "--logging-steps", "1", "--seed", "7", "--alum-preset", "relative", *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(os.path.join(out, "alum_finetune.json")) as fh:
        return json.load(fh)


def test_zero2_config_is_valid_json_with_torch_adam():
    with open(CONFIG) as fh:
        cfg = json.load(fh)
    assert cfg["zero_optimization"]["stage"] == 2
    assert cfg["optimizer"]["params"]["torch_adam"] is True  # no FusedAdam build on CPU


# Algorithm 1; a cheaper variant on half of the batch: K = 0 with the random start runs
# the stages the other directions share after δ is chosen (δ = 0 differs from the random
# start only before those stages); and the free direction, whose clean backward is a
# second backward of the same optimizer step (run off the accumulation boundary), with
# two micro-batches per step so that the boundary is also crossed between them.
VARIANTS = [(), ("--adv-direction", "random", "--adv-fraction", "0.5"),
            ("--adv-direction", "free", "--grad-accum", "2")]


@pytest.mark.parametrize("variant", VARIANTS, ids=["ascent", "random-half", "free-accum2"])
def test_alum_under_zero2_matches_the_plain_trainer(tiny_bert_dir, tmp_path, variant):
    dist = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29517", "RANK": "0",
            "LOCAL_RANK": "0", "WORLD_SIZE": "1"}
    ds = _run(tiny_bert_dir, tmp_path / "ds", "--deepspeed", CONFIG, *variant, env_extra=dist)
    plain = _run(tiny_bert_dir, tmp_path / "plain", *variant)
    accum = int(variant[variant.index("--grad-accum") + 1]) if "--grad-accum" in variant else 1
    assert ds["steps"] == plain["steps"] == 8 // accum
    assert ds["adv_steps"] == 8 and ds["adv_skipped"] == 0  # one per micro-batch
    losses = [e["eval_loss"] for e in plain["eval_history"]]
    assert losses[0] != losses[-1]  # training moved the model: the comparison means something
    for a, b in zip(ds["eval_history"], plain["eval_history"]):
        assert a["eval_loss"] == pytest.approx(b["eval_loss"], abs=1e-4)
    assert plain["adv_stats_mean"]["adv_adv_loss"] > 0  # the term was there to compare
    for key, value in plain["adv_stats_mean"].items():
        assert ds["adv_stats_mean"][key] == pytest.approx(value, rel=1e-3, abs=1e-6), key
    assert os.path.isfile(tmp_path / "ds" / "model.safetensors")
