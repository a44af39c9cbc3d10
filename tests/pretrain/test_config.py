"""Config validation, the LR schedule, weight-decay groups, ds_config completion, FLOPs."""
import json
import os

import pytest
import torch

from alum import AlumConfig
from alum.pretrain.config import (CheckpointConfig, DataConfig, ModelChoice, OptimConfig,
                                  PretrainConfig, TrainConfig)
from alum.pretrain.ds_config import (build_ds_config, ds_config_dir, load_ds_config,
                                     precision_of, shipped_ds_configs, zero_stage)
from alum.pretrain.flops import forward_flops_per_sequence, step_flops_multiplier
from alum.pretrain.lr_schedule import build_lr_scheduler, weight_decay_groups


@pytest.mark.parametrize("make, field", [
    (lambda: TrainConfig(micro_batch_size=0), "TrainConfig.micro_batch_size"),
    (lambda: TrainConfig(precision="fp8"), "TrainConfig.precision"),
    (lambda: OptimConfig(lr=-1.0), "OptimConfig.lr"),
    (lambda: OptimConfig(lr=1e-4, min_lr=1e-3), "OptimConfig.min_lr"),
    (lambda: OptimConfig(lr_decay="step"), "OptimConfig.lr_decay"),
    (lambda: DataConfig(data_path=("x",)), "DataConfig.tokenizer"),
    (lambda: DataConfig(seq_length=2), "DataConfig.seq_length"),
    (lambda: ModelChoice(model_kind="hf"), "ModelChoice.hf_model"),
    (lambda: ModelChoice(hf_model="x"), "ModelChoice.hf_model"),
    (lambda: CheckpointConfig(keep_last=-1), "CheckpointConfig.keep_last"),
    (lambda: PretrainConfig(train=TrainConfig(train_steps=10),
                            alum=AlumConfig(alpha=10.0, start_step=10)), "start_step"),
    (lambda: PretrainConfig(alum=AlumConfig(loss="mse")), "AlumConfig.loss"),
    (lambda: PretrainConfig(alum_positions="some"), "PretrainConfig.alum_positions"),
])
def test_invalid_values_name_the_field(make, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        make()


def test_config_round_trips_through_dict():
    cfg = PretrainConfig(data=DataConfig(data_path=("a", "b"), tokenizer="t"),
                         alum=AlumConfig.from_preset("paper-pretrain", start_step=5))
    again = PretrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg


def _lr_curve(decay, total=100, warmup=10, peak=1e-3, min_lr=0.0):
    """The lr of each update: what DeepSpeed's engine sees after each scheduler step."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=peak)
    sched = build_lr_scheduler(opt, total, warmup, decay, peak, min_lr)
    lrs = []
    for _ in range(total + 1):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
@pytest.mark.parametrize("min_lr", [0.0, 1e-4])
def test_lr_warmup_then_decay_matches_the_formulas(decay, min_lr):
    """Against the schedule written out: linear warmup k/W (BERT), then linear
    (1 - p) or cosine (1 + cos(pi p))/2 from the peak down to min_lr, p the decay's
    progress, or constant."""
    import math

    total, warmup, peak = 100, 10, 1e-3
    lrs = _lr_curve(decay, total, warmup, peak, min_lr)
    for k in range(total + 1):
        if k < warmup:
            want = peak * k / warmup
        elif decay == "constant":
            want = peak
        else:
            p = (k - warmup) / (total - warmup)
            shape = 1 - p if decay == "linear" else 0.5 * (1 + math.cos(math.pi * p))
            want = min_lr + (peak - min_lr) * shape
        assert lrs[k] == pytest.approx(want, rel=1e-9, abs=1e-15), (decay, k)


def test_lr_schedule_that_is_all_warmup_ends_at_the_peak():
    lrs = _lr_curve("linear", total=4, warmup=4, peak=1.0)
    assert lrs == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])


def test_lr_schedule_refuses_an_unknown_decay():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match="OptimConfig.lr_decay"):
        build_lr_scheduler(opt, 10, 1, "step", 1.0, 0.0)


def test_no_weight_decay_on_biases_and_layernorm():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    decay, no_decay = weight_decay_groups(model, 0.01)
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [torch.Size([4, 4])]
    assert len(no_decay["params"]) == 3  # linear bias, LN weight and bias


def test_shipped_configs_are_explicit_and_complete():
    names = shipped_ds_configs()
    for required in ("zero1", "zero2", "zero3", "fp16", "zero2_offload"):
        assert required in names
    # The HF Trainer's fine-tuning config ships beside them but is not a pre-training choice.
    assert os.path.isfile(os.path.join(ds_config_dir(), "finetune_zero2.json"))
    assert not any(n.startswith("finetune_") for n in names)
    stages = {}
    for name in names:
        with open(os.path.join(ds_config_dir(), name + ".json")) as f:
            text = f.read()
        assert '"auto"' not in text, name
        ds = load_ds_config(name)
        stages[name] = (zero_stage(ds), precision_of(ds))
    assert stages["zero1"] == (1, "bf16") and stages["zero2"] == (2, "bf16")
    assert stages["zero3"] == (3, "bf16") and stages["fp16"][1] == "fp16"
    offload = load_ds_config("zero2_offload")["zero_optimization"]["offload_optimizer"]
    assert offload["device"] == "cpu"
    assert load_ds_config("fp16")["fp16"]["loss_scale"] == 0  # dynamic


def test_build_fills_batches_and_overrides():
    train = TrainConfig(micro_batch_size=3, grad_accum_steps=2, ds_config="zero2",
                        precision="fp32")
    ds = build_ds_config(train, OptimConfig(lr=5e-4, clip_grad=0.5, adam_beta2=0.95), 4)
    assert ds["train_batch_size"] == 24 and ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["gradient_accumulation_steps"] == 2 and ds["gradient_clipping"] == 0.5
    assert precision_of(ds) == "fp32"
    params = ds["optimizer"]["params"]
    assert params["lr"] == 5e-4 and params["betas"] == [0.9, 0.95]
    if not torch.cuda.is_available():
        assert params["torch_adam"] is True  # nothing compiled at start-up on CPU


def test_fp16_is_refused_on_cpu_with_a_clear_message():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: fp16 is allowed")
    with pytest.raises(ValueError, match="fp16.*GPU"):
        build_ds_config(TrainConfig(ds_config="fp16"), OptimConfig(), 1)


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ValueError, match="zero1"):
        build_ds_config(TrainConfig(ds_config="nope"), OptimConfig(), 1)


def test_flop_formula_and_alum_multiplier():
    # BERT-base at 512 tokens: the encoder's matmuls dominate (~ 2 x 85M params x 512).
    f = forward_flops_per_sequence(512, 768, 12, 3072, 30522)
    dense = 2 * 512 * (12 * 12 * 768 ** 2 + 768 ** 2 + 768 * 30522)
    attention = 12 * 4 * 512 ** 2 * 768
    assert f == pytest.approx(dense + attention)
    assert step_flops_multiplier(False, 1) == 3
    assert step_flops_multiplier(True, 1) == 8 and step_flops_multiplier(True, 3) == 12
