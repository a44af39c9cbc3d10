"""The private internals of megatron-core and DeepSpeed that alum patches or reads.

Their public APIs do not cover what CPU runs need (alum.parallel.cpu_compat,
alum.parallel.deepspeed_compat) and two corners of DeepSpeed's engine (alum.pretrain's
mlm_step and pipeline_loop). A private name may change in any release, and a patch
applied to something that changed shape would fail far from its cause, or not at all. So
each use goes through ``require``: it checks that the internal is still there with the
expected shape (attribute present, parameter names as expected) and otherwise raises
``InternalChanged`` with one line naming the distribution, its installed version, the
internal and what changed. ``INTERNALS`` lists every one with the test that shows the
patch is still needed; ``python -m alum.parallel.internals`` prints the list with the
result of each check (docs/upgrading.md: how to move to a new release).
"""
from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import sys
import types
from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

UPGRADE_DOC = "docs/upgrading.md"


class InternalChanged(RuntimeError):
    """A private internal that alum patches or reads is missing or has another shape."""


@dataclass(frozen=True)
class Internal:
    """One private internal of a dependency that alum patches or reads."""

    distribution: str
    """The PyPI distribution that owns it (``megatron-core``, ``deepspeed``)."""
    module: str
    """The module it lives in, as imported (``megatron.core.tensor_parallel.random``)."""
    name: str
    """The attribute of ``module`` (dotted for a class attribute: ``Class.method``)."""
    params: Optional[Tuple[str, ...]] = None
    """The leading parameter names a callable must have (None: any callable or value)."""
    use: str = ""
    """What alum does with it (patches it, calls it, reads it)."""
    needed_by: str = ""
    """The test or benchmark that shows the patch is still needed."""

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


def installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "(not installed)"


def changed(internal: Internal, what: str) -> InternalChanged:
    """The error for an internal that is not what alum expects: one line, with the version."""
    return InternalChanged(
        f"{internal.distribution} {installed_version(internal.distribution)}: "
        f"{internal.qualname} {what}; alum {internal.use or 'uses it'} "
        f"(see {UPGRADE_DOC}, 'Moving to a new release')")


def _signature_names(obj: Any) -> Optional[List[str]]:
    try:
        return list(inspect.signature(obj).parameters)
    except (TypeError, ValueError):
        return None


def require(internal: Internal, module: Any = None) -> Any:
    """The internal's current value, after checking its shape; ``InternalChanged`` if not.

    ``module``: the module object to look in (default: import ``internal.module``)."""
    if module is None:
        try:
            module = importlib.import_module(internal.module)
        except ImportError as err:
            raise changed(internal, f"cannot be imported ({err})") from None
    value = module
    for part in internal.name.split("."):
        if not hasattr(value, part):
            raise changed(internal, "is gone")
        value = getattr(value, part)
    if internal.params is not None:
        if not callable(value):
            raise changed(internal, f"is no longer callable (a {type(value).__name__})")
        names = _signature_names(value)
        if names is not None and names[:len(internal.params)] != list(internal.params):
            raise changed(internal, f"has parameters ({', '.join(names)}), expected them to "
                                    f"start with ({', '.join(internal.params)})")
    return value


def require_instance_attrs(obj: Any, distribution: str, attrs: Tuple[str, ...],
                           use: str) -> None:
    """Check attributes of a live object (a DeepSpeed engine or optimizer), which exist
    only once it is built; ``InternalChanged`` naming the first one missing."""
    for attr in attrs:
        owner = obj
        for part in attr.split("."):
            if not hasattr(owner, part):
                cls = type(obj)
                internal = Internal(distribution, cls.__module__, f"{cls.__name__}.{attr}",
                                    use=use)
                raise changed(internal, "is gone")
            owner = getattr(owner, part)


# -- the list -------------------------------------------------------------------------
_MEGATRON = "megatron-core"
_DEEPSPEED = "deepspeed"

TORCH_GLOBAL_MODULES: Tuple[str, ...] = (
    "megatron.core.utils",
    "megatron.core.tensor_parallel.layers",
    "megatron.core.tensor_parallel.mappings",
    "megatron.core.tensor_parallel.utils",
    "megatron.core.tensor_parallel.data",
    "megatron.core.pipeline_parallel.schedules",
    "megatron.core.pipeline_parallel.p2p_communication",
)
"""megatron-core modules whose ``torch`` global cpu_compat rebinds to a CPU proxy: each
asks CUDA for a device (``torch.cuda.current_device()``, ``device="cuda"``,
``torch.cuda.synchronize``)."""

_RNG = "megatron.core.tensor_parallel.random"
_DATA = "megatron.core.tensor_parallel.data"
_NEEDS_CPU_COMPAT = "tests/parallel/test_internals.py::test_megatron_still_needs_the_cpu_compat"

INTERNALS: Tuple[Internal, ...] = tuple(
    [Internal(_MEGATRON, m, "torch", use="rebinds this module's torch global to a CPU proxy",
              needed_by="tests/parallel/test_internals.py::"
                        "test_each_proxied_module_still_asks_cuda_for_a_device")
     for m in TORCH_GLOBAL_MODULES]
    + [
        Internal(_MEGATRON, _RNG, "CudaRNGStatesTracker",
                 params=("use_cudagraphable_rng", "is_inference_rng_tracker"),
                 use="subclasses it with a tracker that forks the CPU generator",
                 needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _RNG, "CudaRNGStatesTracker.fork", params=("self", "name"),
                 use="overrides it in the CPU tracker", needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _RNG, "CudaRNGStatesTracker.add", params=("self", "name", "seed"),
                 use="overrides it in the CPU tracker", needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _RNG, "_get_cuda_rng_state", params=("device", "clone", "graph_safe"),
                 use="replaces it by a CPU-state getter (activation recomputation)",
                 needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _RNG, "_set_cuda_rng_state",
                 params=("new_state", "device", "graph_safe"),
                 use="replaces it by a CPU-state setter (activation recomputation)",
                 needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _RNG, "initialize_rng_tracker",
                 params=("use_te_rng_tracker", "inference_rng_tracker",
                         "use_cudagraphable_rng", "force_reset"),
                 use="calls it with force_reset=True after replacing the tracker class",
                 needed_by=_NEEDS_CPU_COMPAT),
        Internal(_MEGATRON, _DATA, "broadcast_data", params=("keys", "data", "datatype",
                                                             "tp_group"),
                 use="replaces it by the same function without tensor.cuda()",
                 needed_by="tests/parallel/test_internals.py::"
                           "test_each_proxied_module_still_asks_cuda_for_a_device"),
        Internal(_MEGATRON, _DATA, "_build_key_size_numel_dictionaries",
                 params=("keys", "data", "tp_group"), use="calls it from the CPU broadcast_data",
                 needed_by="tests/parallel/test_internals.py::"
                           "test_each_proxied_module_still_asks_cuda_for_a_device"),
        Internal(_MEGATRON, _DATA, "_check_data_types", params=("keys", "data", "target_dtype"),
                 use="calls it from the CPU broadcast_data",
                 needed_by="tests/parallel/test_internals.py::"
                           "test_each_proxied_module_still_asks_cuda_for_a_device"),
        Internal(_DEEPSPEED, "deepspeed.comm.torch", "build_shm_op", params=(),
                 use="replaces it on CPU by one returning None (a 40-85 s hidden C++ build)",
                 needed_by="tests/parallel/test_internals.py::"
                           "test_deepspeed_would_still_build_its_shm_op_on_cpu"),
        Internal(_DEEPSPEED, "deepspeed.checkpoint.ds_to_universal", "main", params=("args",),
                 use="calls it with an argparse namespace (the converter script's entry "
                     "point) to resume a checkpoint at another layout "
                     "(alum.pretrain.reshard)",
                 needed_by="tests/parallel/test_internals.py::"
                           "test_deepspeed_still_refuses_another_dp_size_natively"),
    ])
"""Every private internal alum patches or reads, checked by ``check_all``. The ZeRO-3
optimizer's ``micro_step_id`` and ``grad_partitions_flat_buffer`` exist only on live
objects: alum.pretrain checks them where it uses them (``require_instance_attrs``)."""


def internal(module: str, name: str) -> Internal:
    """The entry of INTERNALS for ``module.name`` (a KeyError names a missing entry)."""
    for entry in INTERNALS:
        if entry.module == module and entry.name == name:
            return entry
    raise KeyError(f"{module}.{name} is not listed in alum.parallel.internals.INTERNALS")


def require_torch_global(module: Any, entry: Internal, torch_module: Any) -> None:
    """The module's ``torch`` global is the torch package (what cpu_compat rebinds), or
    cpu_compat's proxy of it once applied."""
    value = require(entry, module)
    if value is not torch_module and not (isinstance(value, types.ModuleType)
                                          and value.__name__ == "torch"):
        raise changed(entry, f"is no longer the torch module (a {type(value).__name__})")


def check_all() -> List[Tuple[Internal, Optional[str]]]:
    """(internal, None when it is as expected, else the error line) for each of INTERNALS."""
    import torch

    results: List[Tuple[Internal, Optional[str]]] = []
    for entry in INTERNALS:
        try:
            if entry.name == "torch":
                require_torch_global(importlib.import_module(entry.module), entry, torch)
            else:
                require(entry)
            results.append((entry, None))
        except (InternalChanged, ImportError) as err:
            results.append((entry, str(err)))
    return results


def main() -> int:
    """Print each internal, its check and the test that shows the patch is still needed."""
    results = check_all()
    for dist in (_MEGATRON, _DEEPSPEED):
        print(f"{dist} {installed_version(dist)}")
    for entry, error in results:
        print(f"  {'ok     ' if error is None else 'CHANGED'} {entry.qualname}")
        if error is not None:
            print(f"          {error}")
        print(f"          needed: {entry.needed_by}")
    return 1 if any(error for _, error in results) else 0


if __name__ == "__main__":
    sys.exit(main())
