"""The layer spec: which classes the model is built from (megatron-core's spec idea).

The model file (``bert.py``) holds the math of BERT/RoBERTa; everything that
depends on how the model is split over ranks comes in through a ``ModelSpec``:
the tensor-parallel linear layers, the vocabulary-parallel embedding and output
layer, where sequence parallelism scatters the activations, which RNG stream a
dropout uses, and the vocabulary-parallel cross entropy. ``alum.parallel.layer_spec``
builds the megatron-core spec for any TP size, with or without sequence parallel.

Tensor layouts (megatron-core's): activations inside the model are
``[sequence, batch, hidden]``; under sequence parallel the sequence dimension is
this rank's shard (``s / tp``). Factories return modules that return a single tensor.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, ContextManager, Tuple

import torch
from torch import nn

InitMethod = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class ModelSpec:
    """Factories and functions the model is built from."""

    tp_size: int
    """Tensor-parallel size: the model holds ``heads / tp_size`` heads per layer."""
    tp_rank: int
    """This rank's index in its tensor-parallel group."""
    sequence_parallel: bool
    """Whether activations outside the TP regions are split along the sequence."""
    word_embedding: Callable[[int, int, InitMethod], nn.Module]
    """(padded_vocab, hidden, init) -> module: ids ``[b, s]`` -> ``[s_local, b, h]``
    (vocab-parallel; summed, or reduce-scattered over the sequence under SP)."""
    column_linear: Callable[[int, int, InitMethod], nn.Module]
    """(in, out, init) -> module: ``[s_local, b, in]`` -> ``[s, b, out / tp]`` (with bias)."""
    row_linear: Callable[[int, int, InitMethod], nn.Module]
    """(in, out, init) -> module: ``[s, b, in / tp]`` -> ``[s_local, b, out]`` (with bias)."""
    output_linear: Callable[[int, int], nn.Module]
    """(hidden, padded_vocab) -> module: ``(x [..., h], weight [V/tp, h])`` ->
    ``[..., V / tp]`` logits plus its own bias slice (the tied MLM decoder). Its input is
    the full sequence (or rows picked from it): it never gathers under SP, and the
    gradient of its input is all-reduced over the TP ranks."""
    replicated_linear: Callable[[int, int, InitMethod], nn.Module]
    """(in, out, init) -> a linear layer replicated on the TP ranks (MLM head dense)."""
    layer_norm: Callable[[int, float], nn.Module]
    """(hidden, eps) -> a LayerNorm replicated on the TP ranks."""
    scatter_to_sequence: Callable[[torch.Tensor], torch.Tensor]
    """``[s, b, h]`` -> ``[s_local, b, h]`` (identity without sequence parallel)."""
    gather_from_sequence: Callable[[torch.Tensor], torch.Tensor]
    """``[s_local, b, h]`` -> ``[s, b, h]`` (identity without sequence parallel); its
    backward keeps this rank's shard of a gradient that is already complete on every
    rank (the output layer's input gradient, all-reduced)."""
    sequence_region_rng: Callable[[], ContextManager]
    """RNG context for dropout on ``[s_local, ...]`` activations (a per-rank stream
    under SP, the shared default stream otherwise)."""
    tensor_region_rng: Callable[[], ContextManager]
    """RNG context for dropout on head-split activations (always per rank)."""
    vocab_range: Callable[[int], Tuple[int, int]]
    """padded_vocab -> [start, end) of this rank's vocabulary slice."""
    cross_entropy: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    """(vocab-parallel logits ``[..., V/tp]``, targets ``[...]``) -> per-token loss."""
