"""Fused symmetric KL over a vocabulary split across tensor-parallel ranks.

Each TP rank holds the logits of its vocabulary slice ([rows, vocab / tp], as megatron's
vocab-parallel output layer leaves them). The per-row statistics of sym_kl_triton.py
(running max m, Z = Σ exp(x − m), S = Σ exp(x − m)(c − a)) combine across slices like
megatron's vocab_parallel_cross_entropy: one all-reduce MAX of the two maxima, then each
rank rescales its Z and S to the global max and one all-reduce SUM adds them. The loss
is then the same on every rank, and each rank's backward writes the gradient of its own
slice from the global log-normalisers, with no further communication.

The offset k of the single-device kernel is off here (k = 0): it would have to be the
same on every rank, and the first column lives on rank 0 only.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.distributed as dist

from .sym_kl import (FusedSymmetricKLFunction, as_rows, idle_stats, row_weights,
                     sym_kl_value_and_grad_rows, triton_unusable_reason,
                     unsupported_input_reason)


def _rescaled(stats: torch.Tensor, m_a: torch.Tensor, m_c: torch.Tensor) -> torch.Tensor:
    """[..., 4] = Z_a, S_a, Z_c, S_c of ``stats`` rescaled from its own maxima to m_a, m_c."""
    # Skipped rows have m = -inf on every rank: exp(-inf - -inf) is NaN, and they add 0.
    r_a = torch.exp(stats[..., 0] - m_a).nan_to_num(0.0)
    r_c = torch.exp(stats[..., 3] - m_c).nan_to_num(0.0)
    return torch.stack([stats[..., 1] * r_a, stats[..., 2] * r_a,
                        stats[..., 4] * r_c, stats[..., 5] * r_c], dim=-1)


def _assemble(m_a: torch.Tensor, m_c: torch.Tensor, sums: torch.Tensor) -> torch.Tensor:
    out = torch.stack([m_a, sums[..., 0], sums[..., 1], m_c, sums[..., 2], sums[..., 3]], dim=-1)
    skipped = torch.isneginf(m_a)
    return torch.where(skipped[:, None], idle_stats(out.dtype, out.device), out)


def combine_shard_stats(shards: Sequence[torch.Tensor]) -> torch.Tensor:
    """The statistics of whole rows from those of their vocabulary shards (one process)."""
    stacked = torch.stack(list(shards))
    m_a = stacked[..., 0].amax(0)
    m_c = stacked[..., 3].amax(0)
    return _assemble(m_a, m_c, _rescaled(stacked, m_a, m_c).sum(0))


def all_reduce_shard_stats(stats: torch.Tensor, group=None) -> torch.Tensor:
    """``combine_shard_stats`` across the ranks of ``group``: two all-reduces."""
    maxima = stats[:, [0, 3]].contiguous()
    dist.all_reduce(maxima, op=dist.ReduceOp.MAX, group=group)
    m_a, m_c = maxima[:, 0], maxima[:, 1]
    sums = _rescaled(stats, m_a, m_c).contiguous()
    dist.all_reduce(sums, op=dist.ReduceOp.SUM, group=group)
    return _assemble(m_a, m_c, sums)


def _prepared(adv_shard: torch.Tensor, clean_shard: torch.Tensor,
              mask: Optional[torch.Tensor], group):
    """(the stats reducer, whether Triton runs, the row weights) of one call."""
    reason = unsupported_input_reason(adv_shard, clean_shard)
    if reason is not None:
        raise ValueError(f"vocab_parallel_symmetric_kl: {reason}")
    distributed = dist.is_available() and dist.is_initialized() \
        and dist.get_world_size(group) > 1
    reduce_stats = (lambda s: all_reduce_shard_stats(s, group)) if distributed else None
    use_triton = triton_unusable_reason(adv_shard.device) is None
    weight = row_weights(tuple(adv_shard.shape[:-1]), mask, adv_shard.device)
    return reduce_stats, use_triton, weight


def vocab_parallel_symmetric_kl(adv_shard: torch.Tensor, clean_shard: torch.Tensor,
                                mask: Optional[torch.Tensor] = None,
                                group=None) -> torch.Tensor:
    """ALUM's symmetric KL when each rank of ``group`` holds a vocabulary slice.

    Equals ``adversarial_divergence("sym_kl", adv, clean, mask)`` of the full logits, on
    every rank. ``mask`` (the rows' shape) must be the same on every rank. Triton runs
    the passes where it can; otherwise PyTorch computes the same statistics (with fp32
    temporaries of the slice's size). Without an initialised process group (or with one
    rank) it is the single-device op.
    """
    reduce_stats, use_triton, weight = _prepared(adv_shard, clean_shard, mask, group)
    return FusedSymmetricKLFunction.apply(as_rows(adv_shard), as_rows(clean_shard), weight,
                                          use_triton, False, reduce_stats)


def vocab_parallel_symmetric_kl_value_and_grad(adv_shard: torch.Tensor,
                                               clean_shard: torch.Tensor,
                                               mask: Optional[torch.Tensor] = None,
                                               group=None):
    """(value, ∂value/∂adv_shard) of ``vocab_parallel_symmetric_kl``, computed now without
    a graph (alum.kernels.sym_kl.symmetric_kl_value_and_grad for vocabulary shards): the
    value on every rank, each rank's gradient for its own slice; ∂/∂clean is its negative.
    """
    adv, clean = adv_shard.detach(), clean_shard.detach()
    reduce_stats, use_triton, weight = _prepared(adv, clean, mask, group)
    value, grad = sym_kl_value_and_grad_rows(as_rows(adv), as_rows(clean), weight,
                                            use_triton, False, reduce_stats)
    return value, grad.view(adv.shape)
