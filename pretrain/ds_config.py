"""The DeepSpeed config of a run: a JSON from ds_configs/ completed from the CLI.

The JSON files hold explicit values (no ``"auto"``): ZeRO stage and buckets,
precision, the optimizer and its hyper-parameters, clipping. The launcher code
fills in what only the run knows (micro batch, accumulation, the global batch
for this data-parallel size) and applies the command-line overrides
(``--lr``, ``--precision``, ...). The effective config is written to the run
directory, so a run's settings are always on disk.

The shipped JSONs and their readers: alum.pretrain.ds_json.
"""
from __future__ import annotations

import copy
from typing import Any, Dict

import torch

from .config import OptimConfig, TrainConfig
# The readers of the shipped JSONs, also imported from here.
from .ds_json import (CONFIG_NAMES, FINETUNE_PREFIX, ds_config_dir, load_ds_config,  # noqa: F401
                      precision_of, resolve_ds_config_path, shipped_ds_configs, zero_stage)


def _bool_flag(value: Any) -> bool:
    return bool(value) if not isinstance(value, str) else value.lower() == "true"


def build_ds_config(train: TrainConfig, optim: OptimConfig, dp_size: int) -> Dict[str, Any]:
    """The JSON ``train.ds_config`` names, completed for this run (see the module docstring)."""
    ds = copy.deepcopy(load_ds_config(train.ds_config))
    for key, value in ds.items():
        if value == "auto":
            raise ValueError(f"ds_config {train.ds_config}: {key}='auto' is not supported; "
                             f"give an explicit value")
    ds["train_micro_batch_size_per_gpu"] = train.micro_batch_size
    ds["gradient_accumulation_steps"] = train.grad_accum_steps
    ds["train_batch_size"] = train.micro_batch_size * train.grad_accum_steps * dp_size
    ds.setdefault("steps_per_print", 10 ** 9)  # our logger reports; keep DeepSpeed quiet
    if optim.clip_grad is not None:
        ds["gradient_clipping"] = optim.clip_grad

    if train.precision != "config":
        ds.pop("fp16", None)
        ds.pop("bf16", None)
        if train.precision == "fp16":
            ds["fp16"] = {"enabled": True, "loss_scale": 0, "initial_scale_power": 16,
                          "loss_scale_window": 1000, "hysteresis": 2, "min_loss_scale": 1}
        elif train.precision == "bf16":
            ds["bf16"] = {"enabled": True}
    if precision_of(ds) == "fp16" and not torch.cuda.is_available():
        raise ValueError(f"TrainConfig.precision: {train.ds_config} trains in fp16, which "
                         f"DeepSpeed refuses without a GPU; use --precision fp32 or bf16")

    optimizer = ds.setdefault("optimizer", {"type": "AdamW", "params": {}})
    if optimizer.get("type", "").lower() not in ("adam", "adamw"):
        raise ValueError(f"ds_config {train.ds_config}: optimizer type "
                         f"{optimizer.get('type')!r} is not supported (AdamW or Adam)")
    params = optimizer.setdefault("params", {})
    for name, key in (("lr", "lr"), ("weight_decay", "weight_decay"), ("adam_eps", "eps")):
        value = getattr(optim, name)
        if value is not None:
            params[key] = value
    betas = list(params.get("betas", [0.9, 0.999]))
    if optim.adam_beta1 is not None:
        betas[0] = optim.adam_beta1
    if optim.adam_beta2 is not None:
        betas[1] = optim.adam_beta2
    params["betas"] = betas
    params.setdefault("lr", 1e-4)
    params.setdefault("weight_decay", 0.0)
    if optim.torch_adam == "auto":
        # DeepSpeed's FusedAdam / DeepSpeedCPUAdam are compiled at start-up (40-85 s on
        # a CPU machine); torch's AdamW needs no build.
        if not torch.cuda.is_available():
            params["torch_adam"] = True
    else:
        params["torch_adam"] = optim.torch_adam == "true"
    params["torch_adam"] = _bool_flag(params.get("torch_adam", False))
    zero = ds.get("zero_optimization", {})
    if params["torch_adam"] and zero.get("offload_optimizer", {}).get("device") == "cpu":
        # ZeRO-Offload then steps torch's AdamW on the CPU copy (slower than
        # DeepSpeedCPUAdam, but nothing to compile).
        ds["zero_force_ds_cpu_optimizer"] = False
    return ds


def optimizer_hyperparameters(ds: Dict[str, Any]) -> Dict[str, Any]:
    """lr / betas / eps / weight_decay of the completed config (for the scheduler and logs)."""
    return dict(ds["optimizer"]["params"])
