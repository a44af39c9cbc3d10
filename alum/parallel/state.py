"""Process groups: one call that sets up torch.distributed and megatron-core's parallel state.

``initialize_parallel(tp, pp, seed)`` works in three settings:

* under ``torchrun`` or the ``deepspeed`` launcher: both export RANK, WORLD_SIZE,
  LOCAL_RANK, MASTER_ADDR and MASTER_PORT, which ``init_process_group`` reads;
* in a single plain process (tests, notebooks): a world of one on a free port;
* after someone else initialised torch.distributed (``deepspeed.init_distributed``):
  the existing default group is reused.

Data parallelism is what is left: ``dp = world_size / (tp * pp)``, with
megatron-core's rank order (tp fastest, then dp, then pp by default).
"""
from __future__ import annotations

import datetime
import os
import socket
from typing import Optional

import torch
import torch.distributed as dist

from .cpu_compat import apply_cpu_compat, model_parallel_manual_seed


def free_port() -> int:
    """A TCP port on the loopback that is free now (for a rendezvous)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_backend() -> str:
    """nccl when CUDA is available, gloo on CPU."""
    return "nccl" if torch.cuda.is_available() else "gloo"


def _init_process_group(backend: str, timeout_minutes: float) -> bool:
    """Initialise the default group if needed; True when this call created it."""
    if dist.is_initialized():
        return False
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        # A single plain process: a world of one.
        os.environ.setdefault("RANK", "0")
        os.environ.setdefault("WORLD_SIZE", "1")
        os.environ.setdefault("LOCAL_RANK", "0")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend,
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    return True


_CREATED_DEFAULT_GROUP = False


def initialize_parallel(tp: int = 1, pp: int = 1, seed: int = 1234,
                        backend: Optional[str] = None, *,
                        virtual_pp: Optional[int] = None,
                        timeout_minutes: float = 10.0) -> None:
    """Set up torch.distributed and megatron-core's tensor/pipeline/data groups, and seed.

    Args:
        tp: tensor-parallel size (ranks that split each layer).
        pp: pipeline-parallel size (stages).
        seed: seeds the default generator (equal across a TP group, as megatron's
            "data parallel" RNG state) and megatron's tracker states for dropout in
            the split regions (``seed + 2718 + tp_rank``).
        backend: torch.distributed backend; default gloo on CPU, nccl on GPU.
        virtual_pp: model chunks per stage for the interleaved schedule.
        timeout_minutes: collective timeout.

    Raises ValueError when the world size is not a multiple of ``tp * pp``.
    """
    global _CREATED_DEFAULT_GROUP
    from megatron.core import parallel_state

    apply_cpu_compat()
    backend = backend or default_backend()
    created = _init_process_group(backend, timeout_minutes)
    _CREATED_DEFAULT_GROUP = _CREATED_DEFAULT_GROUP or created
    world = dist.get_world_size()
    if tp < 1 or pp < 1 or world % (tp * pp) != 0:
        raise ValueError(f"world size {world} is not a multiple of tp ({tp}) x pp ({pp})")
    if parallel_state.model_parallel_is_initialized():
        _destroy_megatron_groups(parallel_state)
    parallel_state.initialize_model_parallel(
        tensor_model_parallel_size=tp,
        pipeline_model_parallel_size=pp,
        virtual_pipeline_model_parallel_size=virtual_pp,
        # megatron's own groups (TP, DP, PP, embedding: the ones every step's collectives
        # use) take their timeout from here, not from the default group.
        distributed_timeout_minutes=timeout_minutes,
    )
    model_parallel_manual_seed(seed)


def _megatron_groups(parallel_state) -> list:
    """Every process group megatron-core's parallel state holds (module globals, alone or
    in lists, tuples and dicts), the default group excepted, each once."""
    found = {}
    for value in vars(parallel_state).values():
        if isinstance(value, dict):
            candidates = list(value.values())
        elif isinstance(value, (list, tuple)):
            candidates = list(value)
        else:
            candidates = [value]
        for group in candidates:
            if isinstance(group, dist.ProcessGroup) and group is not dist.GroupMember.WORLD:
                found[id(group)] = group
    return list(found.values())


def _destroy_megatron_groups(parallel_state) -> None:
    """megatron-core's ``destroy_model_parallel``, and the groups it forgets destroyed too.

    ``destroy_model_parallel`` only drops its references to most groups; torch.distributed
    still holds them, and with gloo every group keeps its own threads (about fifty per
    ``initialize_parallel`` call at TP = PP = 1), so a process that sets up its layout
    many times (a test session) would collect thousands of idle threads.
    """
    groups = _megatron_groups(parallel_state)
    parallel_state.destroy_model_parallel()
    for group in groups:
        try:
            dist.destroy_process_group(group)
        except ValueError:
            pass  # already destroyed (destroy_model_parallel does its gloo data-parallel groups)


def is_initialized() -> bool:
    """Whether ``initialize_parallel`` (megatron's model-parallel state) is set up."""
    from megatron.core import parallel_state

    return dist.is_initialized() and parallel_state.model_parallel_is_initialized()


def destroy_parallel(destroy_process_group: bool = True) -> None:
    """Tear down megatron's groups and, if this module created it, the default group.

    Also resets megatron's global memory buffer and RNG tracker, so that a later
    ``initialize_parallel`` in the same process starts clean (tests do this).
    """
    global _CREATED_DEFAULT_GROUP
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel import random as mp_random

    if parallel_state.model_parallel_is_initialized():
        _destroy_megatron_groups(parallel_state)
    mp_random.initialize_rng_tracker(force_reset=True)
    if destroy_process_group and _CREATED_DEFAULT_GROUP and dist.is_initialized():
        dist.destroy_process_group()
        _CREATED_DEFAULT_GROUP = False


class MegatronMpu:
    """The ``mpu`` object DeepSpeed expects, over megatron-core's parallel state.

    DeepSpeed (``deepspeed.initialize(mpu=...)``, its ZeRO optimizers, gradient
    clipping and checkpoint naming) calls the names of the original Megatron-LM
    ``mpu`` module. "Model parallel" there means every rank holding a different
    part of the model: megatron-core's model-parallel group (TP x PP). Sequence-
    parallel names are deliberately absent: DeepSpeed reads them as Ulysses
    sequence parallelism, which is not Megatron's sequence parallelism.
    """

    @staticmethod
    def _ps():
        from megatron.core import parallel_state

        return parallel_state

    # Model parallel (TP x PP).
    def get_model_parallel_group(self):
        return self._ps().get_model_parallel_group()

    def get_model_parallel_world_size(self) -> int:
        return dist.get_world_size(self.get_model_parallel_group())

    def get_model_parallel_rank(self) -> int:
        return dist.get_rank(self.get_model_parallel_group())

    # Tensor parallel.
    def get_tensor_model_parallel_group(self):
        return self._ps().get_tensor_model_parallel_group()

    def get_tensor_model_parallel_world_size(self) -> int:
        return self._ps().get_tensor_model_parallel_world_size()

    def get_tensor_model_parallel_rank(self) -> int:
        return self._ps().get_tensor_model_parallel_rank()

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self._ps().get_tensor_model_parallel_src_rank()

    # Data parallel.
    def get_data_parallel_group(self):
        return self._ps().get_data_parallel_group()

    def get_data_parallel_world_size(self) -> int:
        return self._ps().get_data_parallel_world_size()

    def get_data_parallel_rank(self) -> int:
        return self._ps().get_data_parallel_rank()

    def get_data_parallel_group_ranks(self):
        return dist.get_process_group_ranks(self.get_data_parallel_group())

    # Pipeline parallel (both the megatron and the DeepSpeed "pipe" spellings).
    def get_pipeline_model_parallel_group(self):
        return self._ps().get_pipeline_model_parallel_group()

    def get_pipeline_model_parallel_world_size(self) -> int:
        return self._ps().get_pipeline_model_parallel_world_size()

    def get_pipeline_model_parallel_rank(self) -> int:
        return self._ps().get_pipeline_model_parallel_rank()

    get_pipe_parallel_group = get_pipeline_model_parallel_group
    get_pipe_parallel_world_size = get_pipeline_model_parallel_world_size
    get_pipe_parallel_rank = get_pipeline_model_parallel_rank

    # Embedding group (first and last stage share the tied word embedding).
    def get_embedding_group(self):
        return self._ps().get_embedding_group()


mpu = MegatronMpu()
"""The adapter instance to pass as ``deepspeed.initialize(..., mpu=mpu)``."""
