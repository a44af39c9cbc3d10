"""Build this rank's part of the model: the parallelize step (torchtitan's term).

The model file knows nothing about ranks; here we pick the spec (TP/SP layers)
and, for pipeline parallelism, this rank's layers and whether it holds the
embeddings (first stage) and the head (last stage), like megatron-core's
``get_model`` with ``pre_process`` / ``post_process``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from ..models.bert import BertMLM
from ..models.config import ModelConfig
from .config import ParallelConfig
from .layer_spec import tensor_parallel_spec


def chunk_layer_range(num_layers: int, chunk: int, num_chunks: int) -> Tuple[int, int]:
    """[start, end) of model chunk ``chunk`` when the layers are split evenly."""
    per_chunk = num_layers // num_chunks
    return chunk * per_chunk, (chunk + 1) * per_chunk


def build_model(model_config: ModelConfig, parallel_config: ParallelConfig,
                params_dtype: torch.dtype = torch.float32) -> List[BertMLM]:
    """This rank's model chunks (one, or ``virtual_pipeline_size`` when interleaved).

    Megatron's interleaved order: chunk ``v`` on pipeline rank ``r`` holds global
    chunk ``v * pp + r``. Needs ``initialize_parallel`` with the same sizes.
    """
    from megatron.core import parallel_state as ps

    tp = ps.get_tensor_model_parallel_world_size()
    pp = ps.get_pipeline_model_parallel_world_size()
    if (tp, pp) != (parallel_config.tensor_parallel_size,
                    parallel_config.pipeline_parallel_size):
        raise ValueError(f"initialize_parallel was called with tp={tp}, pp={pp}, but the "
                         f"ParallelConfig asks for tp={parallel_config.tensor_parallel_size}, "
                         f"pp={parallel_config.pipeline_parallel_size}")
    parallel_config.check_model(model_config)
    spec = tensor_parallel_spec(parallel_config.sequence_parallel, params_dtype)
    rank = ps.get_pipeline_model_parallel_rank()
    virtual = parallel_config.virtual_pipeline_size or 1
    total = parallel_config.model_chunks
    chunks = []
    for v in range(virtual):
        index = v * pp + rank
        chunks.append(BertMLM(
            model_config, spec,
            pre_process=index == 0, post_process=index == total - 1,
            layer_range=chunk_layer_range(model_config.num_layers, index, total)))
    return chunks
