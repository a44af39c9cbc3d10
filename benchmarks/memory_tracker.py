"""Peak bytes of live tensors created inside a region, for devices without allocator stats.

On CUDA, ``torch.cuda.max_memory_allocated`` answers "how much memory did this step
need". The CPU allocator keeps no such statistic, so ``LiveTensorTracker`` measures it
from the tensors themselves: a ``TorchDispatchMode`` sees every ATen op that runs inside
the ``with`` block (forward, and autograd's backward, which runs CPU work on the calling
thread and inherits the mode), and for each op output

* counts the output's **untyped storage** once, when it is a fresh allocation: outputs
  that the op's schema declares as aliases (views, in-place and ``out=`` results) and
  storages already counted or belonging to an input are not new memory;
* registers a weakref callback on the storage object that subtracts its bytes when the
  storage dies (PyTorch keeps one Python object per storage alive for as long as the
  C++ storage lives, so the callback fires exactly when the memory is released);
* keeps the running total and its maximum (``peak_bytes``), and, at each new maximum, the
  live bytes per producing op (``peak_by_op``: which ops' outputs make up the peak).

What it measures: the peak of the bytes of live tensors created during the region
(activations saved for backward, gradients, temporaries between ops), above whatever
was alive before it (parameters, the batch). What it does not see: scratch memory inside
one kernel that is never returned as a tensor, and allocator overhead (rounding,
caching, fragmentation). A storage that an op grows in place (``resize_``) is counted at
its largest size.

    with LiveTensorTracker() as mem:
        loss = model(x).sum(); loss.backward()
    print(mem.peak_bytes, mem.live_bytes)
"""
from __future__ import annotations

import weakref
from typing import Dict, Optional, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


def _storage_key(storage: torch.UntypedStorage) -> int:
    """Identity of the C++ storage (stable while it lives; the Python object may differ
    between calls only if the storage had died, which our callback would have seen)."""
    return storage._cdata


class LiveTensorTracker(TorchDispatchMode):
    """Tracks the live bytes of tensors created by ops inside the ``with`` block.

    Attributes (bytes):
        live_bytes: currently alive, created inside the region.
        peak_bytes: the maximum of ``live_bytes`` since entering (or ``reset_peak``).
        peak_by_op: ``{op name: live bytes of its outputs}`` at the moment of the peak.
        allocated_bytes: everything ever counted (a measure of allocation traffic).
    """

    def __init__(self, device: Optional[str] = None) -> None:
        super().__init__()
        self.device = None if device is None else torch.device(device).type
        self.live_bytes = 0
        self.peak_bytes = 0
        self.allocated_bytes = 0
        self.peak_by_op: Dict[str, int] = {}
        self._live_by_op: Dict[str, int] = {}
        # storage key -> (weakref with callback, bytes counted, op name)
        self._tracked: Dict[int, Tuple[weakref.ref, int, str]] = {}
        self._closed = False

    # -- bookkeeping -------------------------------------------------------------------
    def _add(self, key: int, nbytes: int, op: str) -> None:
        self.live_bytes += nbytes
        self.allocated_bytes += nbytes
        self._live_by_op[op] = self._live_by_op.get(op, 0) + nbytes
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_by_op = dict(self._live_by_op)

    def _release(self, key: int) -> None:
        entry = self._tracked.pop(key, None)
        if entry is None or self._closed:
            return
        _, nbytes, op = entry
        self.live_bytes -= nbytes
        self._live_by_op[op] -= nbytes

    def _track(self, storage: torch.UntypedStorage, op: str) -> None:
        nbytes = storage.nbytes()
        key = _storage_key(storage)
        entry = self._tracked.get(key)
        if entry is not None:
            ref, counted, first_op = entry
            if nbytes > counted:  # grown in place (resize_)
                self._tracked[key] = (ref, nbytes, first_op)
                self._add(key, nbytes - counted, first_op)
            return
        ref = weakref.ref(storage, lambda _r, key=key: self._release(key))
        self._tracked[key] = (ref, nbytes, op)
        self._add(key, nbytes, op)

    def reset_peak(self) -> None:
        """Start a new peak from the current live bytes."""
        self.peak_bytes = self.live_bytes
        self.peak_by_op = dict(self._live_by_op)

    # -- the dispatch hook ---------------------------------------------------------------
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        outputs = [t for t in tree_leaves(out) if isinstance(t, torch.Tensor)]
        if not outputs:
            return out
        returns = func._schema.returns
        aliasing = any(r.alias_info is not None for r in returns)
        inputs = {_storage_key(t.untyped_storage())
                  for t in tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor) and t.layout == torch.strided
                  and not t.is_meta}
        op = str(func.overloadpacket.__name__)
        for i, t in enumerate(outputs):
            if t.layout != torch.strided or t.is_meta:
                continue
            if self.device is not None and t.device.type != self.device:
                continue
            storage = t.untyped_storage()
            key = _storage_key(storage)
            if key in self._tracked:
                self._track(storage, op)  # only updates a grown size
                continue
            declared_alias = (returns[i].alias_info is not None if i < len(returns)
                              and len(returns) == len(outputs) else aliasing)
            if declared_alias or key in inputs:
                continue  # a view / in-place result of memory that existed before
            self._track(storage, op)
        return out

    def __exit__(self, exc_type, exc_value, traceback):
        result = super().__exit__(exc_type, exc_value, traceback)
        # Storages still alive (gradients, outputs) keep their weakrefs; dropping the
        # table stops their callbacks from touching this tracker later.
        self._closed = True
        self._tracked.clear()
        return result


def format_mb(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:.1f}"
