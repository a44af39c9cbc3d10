"""Peak memory of a region on the CPU, where the allocator keeps no peak statistic.

On CUDA, ``torch.cuda.max_memory_allocated`` answers "how much memory did this step
need". The CPU allocator keeps no such statistic. Two tools here measure it:

``AllocatorPeak`` (what benchmarks/alum_step_cost.py reports): the PyTorch profiler with
``profile_memory=True`` records every allocation and free of the CPU allocator with its
size and time; the running sum over the region and its maximum are the CPU analogue of
``max_memory_allocated() - memory_allocated()`` before the region. It sees every byte
the c10 CPU allocator hands out (tensors and kernels' scratch tensors) and changes
nothing in what runs. Each allocation is attributed to the op that made it (and the
autograd node around it, in backward), so the peak can be broken down. One difference
from CUDA's statistic: the profiler reports no size for the free of a block allocated
before it started, so such frees are not subtracted; the numbers are the bytes
allocated inside the region and still alive (a training step frees no older memory
to speak of once its gradients are set to None before it starts).

``LiveTensorTracker``: a ``TorchDispatchMode`` that sees every ATen op run inside the
region (forward, and autograd's backward, which runs CPU work on the calling thread and
inherits the mode), and for each op output

* counts the output's **untyped storage** once, when it is a fresh allocation: outputs
  that the op's schema declares as aliases (views, in-place and ``out=`` results) and
  storages already counted or belonging to an input are not new memory;
* registers a weakref callback on the storage object that subtracts its bytes when the
  storage dies (PyTorch keeps one Python object per storage alive for as long as the
  C++ storage lives, so the callback fires exactly when the memory is released);
* keeps the running total and its maximum (``peak_bytes``), and, at each new maximum, the
  live bytes per producing op (``peak_by_op``).

It measures the peak bytes of live tensors created during the region (activations saved
for backward, gradients, temporaries), but **a dispatch mode changes what autograd
allocates**: while any mode is active, ``at::isTensorSubclassLike`` is true for every
tensor, and backward formulas take their out-of-place, subclass-safe branches. The
backward of ``logits[rows]`` (``index_backward``), for one, then builds the zero
gradient *and* an out-of-place ``index_put`` copy of it: one extra full-size tensor that
a plain run never allocates. So it over-counts steps whose backward has such formulas
(tests/benchmarks/test_memory_tracker.py shows the case); use it for tensor-level
accounting of forward code, ``AllocatorPeak`` for a step's peak.

    with AllocatorPeak() as mem:
        loss = model(x).sum(); loss.backward()
    print(mem.peak_bytes, mem.live_bytes, mem.peak_by_op)
"""
from __future__ import annotations

import weakref
from typing import Dict, List, Optional, Tuple

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


class AllocatorPeak:
    """Peak of the CPU allocator's bytes in use over a region, above its start (profiler).

    Attributes (bytes, set on exit):
        peak_bytes: the maximum of ``live_bytes`` over the region (0 if it only freed).
        live_bytes: allocated minus freed at the end of the region.
        allocated_bytes: the sum of all allocations (traffic).
        peak_by_op: ``{"AutogradNode > aten::op" or "aten::op": bytes}`` still allocated at
            the peak, by the op (and, in backward, the autograd node) that allocated them.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.peak_bytes = 0
        self.live_bytes = 0
        self.allocated_bytes = 0
        self.peak_by_op: Dict[str, int] = {}
        self._prof = None

    def __enter__(self) -> "AllocatorPeak":
        from torch.profiler import ProfilerActivity, profile

        self._prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        self._prof.__enter__()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self._prof.__exit__(exc_type, exc_value, traceback)
        if exc_type is None:
            self._summarise(self._allocation_events())
        return False

    def _allocation_events(self) -> List[Tuple[int, int, int, int, str]]:
        """(time ns, order, size (negative: a free), pointer, owner) of the device's events.

        Frees of blocks allocated before the profiler started carry no event."""
        from torch._C._profiler import _EventType

        events = []
        stack = list(reversed(self._prof.profiler.kineto_results.experimental_event_tree()))
        while stack:
            ev = stack.pop()
            if ev.tag == _EventType.Allocation:
                f = ev.extra_fields
                if f.device.type == self.device:
                    events.append((ev.start_time_ns, len(events), f.alloc_size, f.ptr,
                                   _owner(ev)))
            stack.extend(reversed(ev.children))
        events.sort()
        return events

    def _summarise(self, events) -> None:
        live: Dict[int, Tuple[int, str]] = {}
        by_op: Dict[str, int] = {}
        cur = peak = allocated = 0
        peak_by_op: Dict[str, int] = {}
        for _, _, size, ptr, owner in events:
            cur += size
            if size > 0:
                allocated += size
                live[ptr] = (size, owner)
                by_op[owner] = by_op.get(owner, 0) + size
            else:
                old = live.pop(ptr, None)
                if old is not None:
                    by_op[old[1]] -= old[0]
            if cur > peak:
                peak = cur
                peak_by_op = {k: v for k, v in by_op.items() if v}
        self.peak_bytes, self.live_bytes, self.allocated_bytes = peak, cur, allocated
        self.peak_by_op = peak_by_op


def _owner(event) -> str:
    """``"Node > aten::op"``: the outermost op that made an allocation (below its autograd
    node, in backward) and that node."""
    op, node = None, None
    parent = event.parent
    while parent is not None:
        name = parent.name
        if name.startswith("aten::"):
            op = name
        if "Backward" in name and not name.startswith("aten::"):
            node = name.split(":")[-1].strip()
            break
        parent = parent.parent
    op = op or "(outside ops)"
    return f"{node} > {op}" if node else op


def format_mb(nbytes: float) -> str:
    return f"{nbytes / 2 ** 20:.1f}"
