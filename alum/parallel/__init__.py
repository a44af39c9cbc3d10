"""Parallelism for the models: process groups, the megatron-core layer spec, the
parallelize step, gradient reductions, and the CPU compatibility megatron-core needs.

Nothing here imports megatron-core at package import time; each function does.
"""
from .build import build_model, chunk_layer_range
from .config import ParallelConfig
from .cpu_compat import apply_cpu_compat, model_parallel_manual_seed
from .deepspeed_compat import skip_shm_comm_build
from .grads import (allreduce_embedding_grads, allreduce_sequence_parallel_grads,
                    finalize_model_parallel_grads)
from .layer_spec import tensor_parallel_spec
from .state import MegatronMpu, destroy_parallel, initialize_parallel, is_initialized, mpu

__all__ = [
    "ParallelConfig", "build_model", "chunk_layer_range", "tensor_parallel_spec",
    "initialize_parallel", "destroy_parallel", "is_initialized", "mpu", "MegatronMpu",
    "apply_cpu_compat", "model_parallel_manual_seed", "skip_shm_comm_build",
    "allreduce_sequence_parallel_grads", "allreduce_embedding_grads",
    "finalize_model_parallel_grads",
]
