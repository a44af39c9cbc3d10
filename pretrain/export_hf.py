"""The live pre-training model written in Hugging Face format (``--export-hf``,
docs/pretrain.md "Continual pre-training of a model without an MLM head")."""
from __future__ import annotations

import os

import torch.distributed as dist
from torch import nn

from alum.atomic_write import atomic_path

from .metrics_log import MetricsLog


def export_hf(module: nn.Module, tokenizer, directory: str, rank: int, log: MetricsLog) -> str:
    """Writes ``module`` (the engine's, an HF model: ``model_kind='hf'``) in Hugging Face
    format, with ``tokenizer``, to ``directory``; returns its absolute path.

    Every rank calls it: under ZeRO-3 each rank holds a shard, and ``GatheredParameters``
    assembles the full tensors on all ranks for the duration (a no-op for parameters that
    are not partitioned). Rank 0 writes it through ``alum.atomic_write.atomic_path`` (a
    temporary sibling renamed into place once complete), so ``directory`` is never a
    half-written model.
    """
    import deepspeed

    if not hasattr(module, "save_pretrained"):
        raise ValueError(f"{type(module).__name__} has no save_pretrained (HF export "
                         f"needs model_kind='hf')")
    directory = os.path.abspath(directory)
    with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
        if rank == 0:
            with atomic_path(directory) as tmp:
                module.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
    log.line(f"exported the model in Hugging Face format to {directory}")
    return directory
