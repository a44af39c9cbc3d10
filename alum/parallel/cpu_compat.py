"""The CPU compatibility megatron-core needs: active only when CUDA is absent.

megatron-core 0.16 assumes a GPU in a few places that the CPU/gloo runs (CI,
the equivalence tests) go through (docs/model.md):

* ``torch.cuda.current_device()`` as the device of new buffers
  (``GlobalMemoryBuffer`` for the sequence-parallel all-gather, the gather /
  reduce-scatter helpers of ``tensor_parallel.mappings``, p2p shape exchange);
* ``device="cuda"`` hard-coded in ``pipeline_parallel/schedules.py``
  (``total_num_tokens``) and ``tensor_parallel/data.py``, whose ``broadcast_data``
  also calls ``tensor.cuda()`` (replaced by the same function without it);
* ``torch.cuda.synchronize()`` after batched p2p;
* the RNG tracker (``get_cuda_rng_tracker`` / ``model_parallel_cuda_manual_seed``)
  forks the CUDA generator, which does not exist on the CPU wheel.

We do not patch ``torch.cuda`` globally (DeepSpeed and transformers probe it).
Instead each megatron module listed in ``_MODULES_USING_CUDA`` gets its own
``torch`` name rebound to a thin proxy of the real module whose ``cuda``
attribute answers ``current_device() -> "cpu"`` and ``synchronize()`` as a no-op,
and whose tensor factories map ``device="cuda"`` to the CPU. The RNG tracker
class is replaced by one that forks the CPU generator, so that
``get_cuda_rng_tracker().fork()`` keeps its meaning: a separate stream of random
numbers per tensor-parallel rank for dropout in the split regions.

``apply_cpu_compat()`` is idempotent and a no-op when CUDA is available. Everything it
patches is private to megatron-core: each is checked first (alum.parallel.internals,
which names the test showing the patch is still needed), and a changed one stops the
run with a line naming the installed megatron-core and the internal.
"""
from __future__ import annotations

import contextlib
import importlib
import types
from typing import Any, Callable, Dict, List

import torch

from .internals import (TORCH_GLOBAL_MODULES, internal, require, require_instance_attrs,
                        require_torch_global)

# Modules whose ``torch`` global is rebound. Only these see the proxy. Still needed while
# each asks CUDA for a device: tests/parallel/test_internals.py::
# test_each_proxied_module_still_asks_cuda_for_a_device.
_MODULES_USING_CUDA: List[str] = list(TORCH_GLOBAL_MODULES)
_RANDOM = "megatron.core.tensor_parallel.random"
_DATA = "megatron.core.tensor_parallel.data"

# Tensor factories megatron calls with device="cuda" or device=current_device().
_FACTORIES = ("empty", "zeros", "ones", "tensor", "full", "arange")

_APPLIED = False
_ORIGINALS: Dict[str, Any] = {}


def cpu_compat_needed() -> bool:
    """True when the shims must be active: the process has no usable CUDA device."""
    return not torch.cuda.is_available()


def is_applied() -> bool:
    """Whether ``apply_cpu_compat`` has patched megatron-core in this process."""
    return _APPLIED


def _cpu_device(device: Any) -> Any:
    """Map a CUDA device request (``"cuda"``, ``"cuda:0"``, an int, a cuda device) to the CPU."""
    if device is None:
        return None
    if isinstance(device, int):
        return torch.device("cpu")
    if isinstance(device, str) and device.startswith("cuda"):
        return torch.device("cpu")
    if isinstance(device, torch.device) and device.type == "cuda":
        return torch.device("cpu")
    return device


def _cpu_factory(factory: Callable) -> Callable:
    def wrapped(*args, **kwargs):
        if "device" in kwargs:
            kwargs["device"] = _cpu_device(kwargs["device"])
        return factory(*args, **kwargs)

    wrapped.__name__ = factory.__name__
    wrapped.__doc__ = factory.__doc__
    return wrapped


class _CpuCuda(types.ModuleType):
    """``torch.cuda`` as megatron's CPU run should see it: the current device is the CPU."""

    def __init__(self) -> None:
        super().__init__("torch.cuda")

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def synchronize(*_args, **_kwargs) -> None:
        # CPU collectives on gloo are synchronous once waited on: nothing to fence.
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cuda, name)


class _CpuTorch(types.ModuleType):
    """A proxy of the ``torch`` module for selected megatron modules (see module docstring)."""

    def __init__(self) -> None:
        super().__init__("torch")
        self.cuda = _CpuCuda()
        for name in _FACTORIES:
            setattr(self, name, _cpu_factory(getattr(torch, name)))

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)


def _cpu_rng_tracker_class(base: type) -> type:
    """A subclass of megatron's ``CudaRNGStatesTracker`` that forks the CPU generator.

    It keeps megatron's bookkeeping (named states, one seed per name, ``get_states``
    / ``set_states`` for checkpoints and activation recomputation) and swaps only
    the generator: states are ``torch.get_rng_state()`` byte tensors.
    """

    class CpuRNGStatesTracker(base):  # type: ignore[misc, valid-type]
        def add(self, name, seed):
            self._is_initialized = True
            if seed in self.seeds_:
                raise Exception(f"seed {seed} already exists")
            self.seeds_.add(seed)
            if name in self.states_:
                raise Exception(f"cpu rng state {name} already exists")
            orig = torch.get_rng_state()
            torch.manual_seed(seed)
            self.states_[name] = torch.get_rng_state()
            torch.set_rng_state(orig)

        @contextlib.contextmanager
        def fork(self, name="model-parallel-rng"):
            # Same protocol as megatron's fork (nested forks save the outer named
            # state), minus its "CPU RNG changed" warning: here the CPU generator
            # is the one being forked, so it changes by design.
            if name not in self.states_:
                raise Exception(f"cpu rng state {name} is not added")
            orig_state = torch.get_rng_state()
            orig_name = self._current_state_name
            if orig_name != "default-rng":
                self.states_[orig_name] = orig_state
            torch.set_rng_state(self.states_[name])
            self._current_state_name = name
            try:
                yield
            finally:
                self.states_[name] = torch.get_rng_state()
                if orig_name != "default-rng":
                    orig_state = self.states_[orig_name]
                torch.set_rng_state(orig_state)
                self._current_state_name = orig_name

    CpuRNGStatesTracker.__qualname__ = "CpuRNGStatesTracker"
    return CpuRNGStatesTracker


def _check_rng(random_mod: types.ModuleType) -> None:
    for name in ("CudaRNGStatesTracker", "CudaRNGStatesTracker.add",
                 "CudaRNGStatesTracker.fork", "_get_cuda_rng_state", "_set_cuda_rng_state",
                 "initialize_rng_tracker"):
        require(internal(_RANDOM, name), random_mod)
    # The bookkeeping the CPU tracker's add/fork keep in megatron's own attributes.
    require_instance_attrs(random_mod.CudaRNGStatesTracker(), "megatron-core",
                           ("states_", "seeds_", "_current_state_name", "_is_initialized"),
                           use="keeps the CPU tracker's states in them")


def _patch_rng(random_mod: types.ModuleType) -> None:
    """Still needed while megatron's tracker forks the CUDA generator:
    tests/parallel/test_internals.py::test_megatron_still_needs_the_cpu_compat."""
    base = random_mod.CudaRNGStatesTracker
    _ORIGINALS["CudaRNGStatesTracker"] = base
    _ORIGINALS["_get_cuda_rng_state"] = random_mod._get_cuda_rng_state
    _ORIGINALS["_set_cuda_rng_state"] = random_mod._set_cuda_rng_state
    # initialize_rng_tracker looks the class up at call time.
    random_mod.CudaRNGStatesTracker = _cpu_rng_tracker_class(base)

    # Used by CheckpointFunction (activation recomputation) to save and restore the
    # "cuda" state around the recomputed forward: on CPU that is the CPU state.
    def _get_state(device="cuda", clone=False, graph_safe=False):
        return torch.get_rng_state()

    def _set_state(new_state, device=-1, graph_safe=False):
        torch.set_rng_state(new_state)

    random_mod._get_cuda_rng_state = _get_state
    random_mod._set_cuda_rng_state = _set_state
    # A tracker built before the patch is of the CUDA class: rebuild it lazily.
    random_mod.initialize_rng_tracker(force_reset=True)


def _patch_broadcast_data(data_mod: types.ModuleType) -> None:
    """``broadcast_data`` calls ``tensor.cuda()`` (a Tensor method no proxy reaches):
    the same function with the packing left on the CPU. Still needed while it does:
    tests/parallel/test_internals.py::test_each_proxied_module_still_asks_cuda_for_a_device."""
    _ORIGINALS["broadcast_data"] = data_mod.broadcast_data

    def broadcast_data(keys, data, datatype, tp_group=None):
        from megatron.core.parallel_state import get_tensor_model_parallel_group

        tp_group = tp_group or get_tensor_model_parallel_group()
        key_size, key_numel, total_numel = data_mod._build_key_size_numel_dictionaries(
            keys, data, tp_group=tp_group)
        if tp_group.rank() == 0:
            data_mod._check_data_types(keys, data, datatype)
            flat = torch.cat([data[key].contiguous().view(-1) for key in keys], dim=0)
        else:
            flat = torch.empty(total_numel, dtype=datatype)
        src = torch.distributed.get_process_group_ranks(group=tp_group)[0]
        torch.distributed.broadcast(flat, src, group=tp_group)
        output, offset = {}, 0
        for key in keys:
            output[key] = flat.narrow(0, offset, key_numel[key]).view(key_size[key])
            offset += key_numel[key]
        return output

    data_mod.broadcast_data = broadcast_data
    importlib.import_module("megatron.core.tensor_parallel").broadcast_data = broadcast_data


def apply_cpu_compat() -> bool:
    """Patch megatron-core for CPU runs; returns True when the shims are active.

    A no-op (returning False) when CUDA is available; idempotent otherwise.
    Call it before building megatron layers or running its schedules;
    ``alum.parallel.state.initialize_parallel`` does.
    """
    global _APPLIED
    if not cpu_compat_needed():
        return False
    if _APPLIED:
        return True
    proxy = _CpuTorch()
    modules = [importlib.import_module(name) for name in _MODULES_USING_CUDA]
    random_mod, data_mod = importlib.import_module(_RANDOM), importlib.import_module(_DATA)
    # Every check before the first patch: a changed internal leaves megatron untouched.
    for name, module in zip(_MODULES_USING_CUDA, modules):
        require_torch_global(module, internal(name, "torch"), torch)
    _check_rng(random_mod)
    for name in ("broadcast_data", "_build_key_size_numel_dictionaries", "_check_data_types"):
        require(internal(_DATA, name), data_mod)
    for name, module in zip(_MODULES_USING_CUDA, modules):
        _ORIGINALS[name] = module.torch
        module.torch = proxy
    _patch_rng(random_mod)
    _patch_broadcast_data(data_mod)
    _APPLIED = True
    return True


def model_parallel_manual_seed(seed: int) -> None:
    """CPU/GPU-agnostic ``model_parallel_cuda_manual_seed``.

    Seeds the default generator with ``seed`` (equal on the ranks of a tensor-
    parallel group, as megatron's "data parallel" default state) and registers
    megatron's named tracker states (``seed + 2718 + tp_rank`` for the split
    regions). On CPU the tracker is the CPU-forking one installed by
    ``apply_cpu_compat``.
    """
    from megatron.core import tensor_parallel

    torch.manual_seed(seed)
    tensor_parallel.model_parallel_cuda_manual_seed(seed)
