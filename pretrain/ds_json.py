"""The shipped DeepSpeed JSON configs (ds_configs/) and what a run reads from one.

The JSONs live in the repository's top-level ``ds_configs/`` folder, which setup.py
installs as the data package ``alum.pretrain.ds_configs``. alum.pretrain.config
validates a run against its JSON through these readers; alum.pretrain.ds_config
completes the JSON for a run.
"""
from __future__ import annotations

import importlib.resources
import json
import os
from typing import Any, Dict, List

CONFIG_NAMES = ("zero1", "zero2", "zero3", "fp16", "zero2_offload")


def ds_config_dir() -> str:
    """The directory of the shipped JSONs (installed package data, else the repo's)."""
    try:
        # A data folder without __init__.py is a namespace package: files() gives a
        # MultiplexedPath whose str() is no path, so go through one of its files.
        zero1 = importlib.resources.files("alum.pretrain.ds_configs").joinpath("zero1.json")
        if zero1.is_file():
            return os.path.dirname(str(zero1))
    except (ModuleNotFoundError, TypeError):
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), "ds_configs")


FINETUNE_PREFIX = "finetune_"
"""ds_configs/ files for ``alum-finetune --deepspeed``: HF Trainer configs whose "auto"
values transformers fills in from its TrainingArguments, so not pre-training configs."""


def shipped_ds_configs() -> List[str]:
    """Names of the pre-training JSONs in ds_configs/ (without ``.json``)."""
    return sorted(f[:-5] for f in os.listdir(ds_config_dir())
                  if f.endswith(".json") and not f.startswith(FINETUNE_PREFIX))


def resolve_ds_config_path(name_or_path: str) -> str:
    """A shipped config's path by name (``zero2``), or an existing file's path."""
    if os.path.isfile(name_or_path):
        return name_or_path
    candidate = os.path.join(ds_config_dir(), name_or_path.removesuffix(".json") + ".json")
    if os.path.isfile(candidate):
        return candidate
    raise ValueError(f"TrainConfig.ds_config={name_or_path!r}: neither a file nor one of "
                     f"the shipped configs {shipped_ds_configs()}")


def load_ds_config(name_or_path: str) -> Dict[str, Any]:
    with open(resolve_ds_config_path(name_or_path)) as f:
        return json.load(f)


def precision_of(ds: Dict[str, Any]) -> str:
    """``fp16``, ``bf16`` or ``fp32``: what a DeepSpeed config trains in."""
    if ds.get("fp16", {}).get("enabled"):
        return "fp16"
    if ds.get("bf16", {}).get("enabled"):
        return "bf16"
    return "fp32"


def zero_stage(ds: Dict[str, Any]) -> int:
    return int(ds.get("zero_optimization", {}).get("stage", 0))
