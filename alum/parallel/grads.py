"""Gradient reductions that tensor/sequence/pipeline parallelism add before the optimizer step.

Megatron-core does these in ``finalize_model_grads``; DeepSpeed does not know about
them, so the training loop calls ``finalize_model_parallel_grads`` after backward
and before ``engine.step()`` (the data-parallel reduction stays DeepSpeed's).
"""
from __future__ import annotations

from typing import Iterable, List

import torch
import torch.distributed as dist
from torch import nn


def _grads(params: Iterable[nn.Parameter]) -> List[torch.Tensor]:
    return [p.grad for p in params if p.requires_grad and p.grad is not None]


def _allreduce(grads: List[torch.Tensor], group) -> None:
    if not grads:
        return
    # One flat buffer: one collective instead of one per parameter.
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, group=group)
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def allreduce_sequence_parallel_grads(model: nn.Module) -> None:
    """Sum, over the TP group, the gradients of parameters marked ``sequence_parallel``.

    Under sequence parallel each TP rank applies these (replicated) parameters to
    its own sequence shard, so each holds a partial gradient (megatron-core:
    ``_allreduce_layernorm_grads``).
    """
    from megatron.core import parallel_state as ps

    if ps.get_tensor_model_parallel_world_size() == 1:
        return
    params = [p for p in model.parameters() if getattr(p, "sequence_parallel", False)]
    _allreduce(_grads(params), ps.get_tensor_model_parallel_group())


def allreduce_embedding_grads(model: nn.Module) -> None:
    """Sum the tied word-embedding gradient of the first and last pipeline stages.

    The first stage uses the weight as the input embedding, the last as the MLM
    decoder; each holds a copy (marked ``shared_embedding``) and a partial gradient
    (megatron-core: ``_allreduce_word_embedding_grads`` over the embedding group).
    """
    from megatron.core import parallel_state as ps

    if ps.get_pipeline_model_parallel_world_size() == 1:
        return
    if not ps.is_rank_in_embedding_group(ignore_virtual=True):
        return
    params = [p for p in model.parameters() if getattr(p, "shared_embedding", False)]
    _allreduce(_grads(params), ps.get_embedding_group())


def finalize_model_parallel_grads(model: nn.Module) -> None:
    """Both reductions above, in megatron's order."""
    allreduce_sequence_parallel_grads(model)
    allreduce_embedding_grads(model)
