"""The megatron-core layer spec: tensor parallel (TP) with optional sequence parallel (SP).

Builds the ``alum.models.spec.ModelSpec`` the model is made of, from megatron-core's
``VocabParallelEmbedding``, ``ColumnParallelLinear``, ``RowParallelLinear`` and
``vocab_parallel_cross_entropy``. Call ``initialize_parallel`` first: the layers
read the TP group from megatron's parallel state.

Choices that matter for exactness (docs/model.md):

* ``use_cpu_initialization=True``: megatron then draws the *full* weight on every
  rank and keeps its slice (``_initialize_affine_weight_cpu``), so TP=2 shards are
  slices of the TP=1 weights built from the same seed;
* parameters that see only this rank's sequence shard under SP (LayerNorms, the
  MLM head's dense layer; megatron marks RowParallelLinear's bias itself) get
  ``param.sequence_parallel = True``: their gradients are partial sums that
  ``alum.parallel.grads.allreduce_sequence_parallel_grads`` completes, as
  megatron's ``finalize_model_grads`` does.
"""
from __future__ import annotations

import contextlib
import dataclasses
from typing import Optional, Tuple

import torch
from torch import nn

from ..models.spec import InitMethod, ModelSpec


def _mcore():
    from megatron.core import ModelParallelConfig, parallel_state, tensor_parallel

    return ModelParallelConfig, parallel_state, tensor_parallel


def _mark_sequence_parallel(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.sequence_parallel = True
    return module


class _Column(nn.Module):
    """ColumnParallelLinear returning only its output (bias added inside)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.linear = inner

    def forward(self, x: torch.Tensor, weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        out, _ = self.linear(x, weight=weight)
        return out


class _Row(nn.Module):
    """RowParallelLinear returning only its output (bias added after the reduction)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.linear = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.linear(x)
        return out


class _WordEmbedding(nn.Module):
    """VocabParallelEmbedding: ids ``[b, s]`` -> ``[s_local, b, h]``.

    Without SP megatron all-reduces the partial lookups into ``[b, s, h]`` and we
    transpose; with SP it reduce-scatters along the sequence itself (it transposes
    to ``[s, b, h]`` first), which saves the separate scatter.
    """

    def __init__(self, inner: nn.Module, sequence_parallel: bool):
        super().__init__()
        self.embedding = inner
        self.sequence_parallel = sequence_parallel

    @property
    def weight(self) -> torch.Tensor:
        return self.embedding.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out = self.embedding(ids)
        return out if self.sequence_parallel else out.transpose(0, 1)


def tensor_parallel_spec(sequence_parallel: bool = False,
                         params_dtype: torch.dtype = torch.float32) -> ModelSpec:
    """The spec for megatron-core TP layers over the current TP group (TP=1 included)."""
    ModelParallelConfig, ps, tp_mod = _mcore()
    tp_size = ps.get_tensor_model_parallel_world_size()
    tp_rank = ps.get_tensor_model_parallel_rank()
    tp_group = ps.get_tensor_model_parallel_group()
    if sequence_parallel and tp_size == 1:
        raise ValueError("sequence_parallel needs tensor parallelism (tp > 1)")
    config = ModelParallelConfig(
        tensor_model_parallel_size=tp_size,
        sequence_parallel=sequence_parallel,
        use_cpu_initialization=True,
        perform_initialization=True,
        params_dtype=params_dtype,
    )

    def word_embedding(vocab: int, hidden: int, init: InitMethod) -> nn.Module:
        inner = tp_mod.VocabParallelEmbedding(
            vocab, hidden, init_method=init, config=config,
            reduce_scatter_embeddings=sequence_parallel, tp_group=tp_group)
        return _WordEmbedding(inner, sequence_parallel)

    def column_linear(n_in: int, n_out: int, init: InitMethod) -> nn.Module:
        return _Column(tp_mod.ColumnParallelLinear(
            n_in, n_out, config=config, init_method=init, bias=True, gather_output=False,
            tp_group=tp_group))

    def row_linear(n_in: int, n_out: int, init: InitMethod) -> nn.Module:
        return _Row(tp_mod.RowParallelLinear(
            n_in, n_out, config=config, init_method=init, bias=True,
            input_is_parallel=True, skip_bias_add=False, tp_group=tp_group))

    # The MLM decoder sees the full sequence (gather_from_sequence runs before it), so
    # that the head can be evaluated at the predicted rows only: never an SP layer.
    output_config = dataclasses.replace(config, sequence_parallel=False)

    def output_linear(hidden: int, vocab: int) -> nn.Module:
        # The tied decoder: the weight comes from the word embedding at call time
        # (megatron's skip_weight_param_allocation); the bias is this layer's own.
        return _Column(tp_mod.ColumnParallelLinear(
            hidden, vocab, config=output_config, init_method=nn.init.zeros_, bias=True,
            gather_output=False, skip_weight_param_allocation=True,
            tp_group=tp_group))

    def replicated_linear(n_in: int, n_out: int, init: InitMethod) -> nn.Module:
        linear = nn.Linear(n_in, n_out, dtype=params_dtype)
        with torch.no_grad():
            init(linear.weight)
            linear.bias.zero_()
        return _mark_sequence_parallel(linear) if sequence_parallel else linear

    def layer_norm(hidden: int, eps: float) -> nn.Module:
        norm = nn.LayerNorm(hidden, eps=eps, dtype=params_dtype)
        return _mark_sequence_parallel(norm) if sequence_parallel else norm

    def scatter_to_sequence(x: torch.Tensor) -> torch.Tensor:
        if not sequence_parallel:
            return x
        return tp_mod.scatter_to_sequence_parallel_region(x, group=tp_group)

    def gather_from_sequence(x: torch.Tensor) -> torch.Tensor:
        if not sequence_parallel:
            return x
        # Backward: split, not reduce-scatter: the decoder all-reduces its input gradient.
        return tp_mod.gather_from_sequence_parallel_region(
            x, tensor_parallel_output_grad=False, group=tp_group)

    def tracker_fork():
        return tp_mod.get_cuda_rng_tracker().fork()

    def sequence_region_rng():
        # Under SP each rank holds different tokens: dropout needs its own stream
        # (megatron forks the tracker for the SP embedding dropout likewise).
        return tracker_fork() if sequence_parallel else contextlib.nullcontext()

    def vocab_range(vocab: int) -> Tuple[int, int]:
        from megatron.core.tensor_parallel.utils import VocabUtility

        start, end = VocabUtility.vocab_range_from_global_vocab_size(
            vocab, tp_rank, tp_size)
        return int(start), int(end)

    return ModelSpec(
        tp_size=tp_size, tp_rank=tp_rank, sequence_parallel=sequence_parallel,
        word_embedding=word_embedding, column_linear=column_linear, row_linear=row_linear,
        output_linear=output_linear, replicated_linear=replicated_linear,
        layer_norm=layer_norm, scatter_to_sequence=scatter_to_sequence,
        gather_from_sequence=gather_from_sequence,
        sequence_region_rng=sequence_region_rng, tensor_region_rng=tracker_fork,
        vocab_range=vocab_range, cross_entropy=tp_mod.vocab_parallel_cross_entropy,
    )
