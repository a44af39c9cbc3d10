"""What the loop adds for megatron-core tensor parallelism (TP > 1, PP = 1, standard MLM).

* Predicted ids from vocabulary-parallel logits: each TP rank holds ``V / tp``
  columns, so the argmax is taken per shard and the winner chosen across the
  group (two tiny all-gathers instead of gathering ``[N, V]`` logits).
* Gradients of the parameters that see only this rank's sequence shard under
  sequence parallelism (marked ``param.sequence_parallel`` by alum.parallel) are
  partial sums over the TP group. megatron-core completes them after backward
  (``finalize_model_grads``); under ZeRO-2/3 DeepSpeed moves gradients out of
  ``param.grad`` during backward, so we complete them earlier, in a tensor hook
  that runs before the gradient is accumulated (and before DeepSpeed's hooks).
"""
from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from torch import nn


def tensor_parallel_size(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return int(getattr(spec, "tp_size", 1)) if spec is not None else 1


def predicted_ids(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """argmax over the full vocabulary of logits ``[N, V / tp]`` (plain argmax at TP=1)."""
    tp = tensor_parallel_size(model)
    if tp == 1:
        return rows.argmax(dim=-1)
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()
    start, _ = model.spec.vocab_range(model.padded_vocab)
    local_max, local_arg = rows.float().max(dim=-1)
    maxes = [torch.empty_like(local_max) for _ in range(tp)]
    args = [torch.empty_like(local_arg) for _ in range(tp)]
    dist.all_gather(maxes, local_max.contiguous(), group=group)
    dist.all_gather(args, (local_arg + start).contiguous(), group=group)
    # Ties go to the lowest rank, i.e. the lowest vocabulary id, as torch's argmax.
    winner = torch.stack(maxes).argmax(dim=0)
    return torch.stack(args).gather(0, winner.unsqueeze(0)).squeeze(0)


def register_sequence_parallel_grad_hooks(model: nn.Module) -> List:
    """Sum the sequence-parallel parameters' gradients over the TP group as they arrive."""
    if tensor_parallel_size(model) == 1:
        return []
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()

    def reduce(grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, group=group)
        return grad

    return [p.register_hook(reduce) for p in model.parameters()
            if p.requires_grad and getattr(p, "sequence_parallel", False)]
