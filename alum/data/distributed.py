"""Each data-parallel rank its slice of the sample order.

Megatron's pre-training sampler reads the dataset in order and cuts every
*global* batch (``micro_batch_size * world_size`` samples) into one
micro-batch per rank: rank ``r`` takes positions ``[r * mbs, (r + 1) * mbs)`` of
each global batch. The slices are disjoint and, without ``drop_last``, cover
every index; with ``drop_last`` the final incomplete global batch is dropped so
that every rank gets the same number of samples (DDP and ZeRO need equal step
counts). The same cut makes sample ``i`` belong to step ``i // global_batch``,
which is what :class:`~alum.data.mlm_dataset.MLMDataset` assumes when it derives
the masking-rate step from the index (``samples_per_step``).

Pass the *data-parallel* rank and size (with tensor/pipeline parallelism these
are not the global ones: ``parallel_state.get_data_parallel_rank()``).
"""
from __future__ import annotations

from typing import Iterator, List, Optional

import torch


def _default_rank_world(rank: Optional[int], world_size: Optional[int]):
    if rank is None or world_size is None:
        dist = torch.distributed
        initialized = dist.is_available() and dist.is_initialized()
        if rank is None:
            rank = dist.get_rank() if initialized else 0
        if world_size is None:
            world_size = dist.get_world_size() if initialized else 1
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    return int(rank), int(world_size)


def rank_indices(num_samples: int, rank: Optional[int] = None, world_size: Optional[int] = None,
                 micro_batch_size: int = 1, drop_last: bool = False,
                 consumed_samples: int = 0) -> List[int]:
    """Indices of rank ``rank`` in consumption order (see the module docstring).

    Args:
        num_samples: length of the dataset.
        rank, world_size: data-parallel rank and size (default: torch.distributed's).
        micro_batch_size: samples per rank per step.
        drop_last: drop the last incomplete global batch (equal counts on all ranks).
        consumed_samples: global samples already consumed (resume); a multiple of
            the global batch.
    """
    rank, world_size = _default_rank_world(rank, world_size)
    if micro_batch_size < 1:
        raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
    global_batch = micro_batch_size * world_size
    if consumed_samples % global_batch:
        raise ValueError(f"consumed_samples={consumed_samples} is not a multiple of the "
                         f"global batch {global_batch}")
    out: List[int] = []
    for start in range(consumed_samples, num_samples, global_batch):
        stop = min(start + global_batch, num_samples)
        if stop - start < global_batch:
            if drop_last:
                break
            # Share the tail as evenly as possible, still contiguous per rank.
            tail = stop - start
            base, extra = divmod(tail, world_size)
            lo = start + rank * base + min(rank, extra)
            out.extend(range(lo, lo + base + (1 if rank < extra else 0)))
            break
        lo = start + rank * micro_batch_size
        out.extend(range(lo, lo + micro_batch_size))
    return out


class DataParallelSampler(torch.utils.data.Sampler):
    """A sampler that yields :func:`rank_indices` (use with ``shuffle=False`` datasets order;
    the datasets shuffle themselves, deterministically per epoch)."""

    def __init__(self, num_samples: int, rank: Optional[int] = None,
                 world_size: Optional[int] = None, micro_batch_size: int = 1,
                 drop_last: bool = True, consumed_samples: int = 0) -> None:
        self.indices = rank_indices(num_samples, rank, world_size, micro_batch_size,
                                    drop_last, consumed_samples)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def rank_slice(dataset, rank: Optional[int] = None, world_size: Optional[int] = None,
               micro_batch_size: int = 1, drop_last: bool = False) -> torch.utils.data.Subset:
    """The rank's slice of ``dataset`` as a ``Subset`` (see :func:`rank_indices`)."""
    return torch.utils.data.Subset(
        dataset, rank_indices(len(dataset), rank, world_size, micro_batch_size, drop_last))
