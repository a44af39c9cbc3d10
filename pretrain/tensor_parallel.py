"""What the loop adds for megatron-core tensor parallelism: the sequence-parallel
gradients. (Predicted ids from vocabulary-parallel logits: alum.pretrain.alum_layout.)

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

from .alum_layout import tensor_parallel_size


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
