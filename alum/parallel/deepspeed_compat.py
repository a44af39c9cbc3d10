"""What DeepSpeed needs from us before ``deepspeed.init_distributed`` on CPU.

DeepSpeed's torch comm backend builds a shared-memory all-reduce op
(``deepspeed.comm.torch.build_shm_op``) at construction: a hidden C++ build of
40-85 s on a CPU machine (measured on the 2-core development VM). gloo does the collectives without
it, so CPU runs replace the builder by one that returns ``None`` (the value
DeepSpeed itself uses when the op is unavailable). ``build_shm_op`` is private to
DeepSpeed: it is checked first (alum.parallel.internals), and the patch is still needed
while DeepSpeed's CPU accelerator would build the op:
tests/parallel/test_internals.py::test_deepspeed_would_still_build_its_shm_op_on_cpu.
"""
from __future__ import annotations

import importlib

import torch

from .internals import internal, require


def skip_shm_comm_build() -> bool:
    """Make DeepSpeed skip its shared-memory comm op build; True when patched.

    A no-op with CUDA (nccl is used, the op is never built). Idempotent. Call it
    before ``deepspeed.init_distributed`` / ``deepspeed.initialize``.
    """
    if torch.cuda.is_available():
        return False
    # import_module returns the sys.modules entry; ``deepspeed.comm.torch`` as an
    # attribute is the torch package that deepspeed.comm imported under that name.
    module = importlib.import_module("deepspeed.comm.torch")
    require(internal("deepspeed.comm.torch", "build_shm_op"), module)
    module.build_shm_op = lambda: None
    return True
