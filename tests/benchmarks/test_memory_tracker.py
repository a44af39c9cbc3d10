"""benchmarks/memory_tracker.py, the CPU peak-memory tools of benchmarks/alum_step_cost.py:
AllocatorPeak (the allocator's events) and LiveTensorTracker (live tensors by storage) count
exactly the bytes allocated inside their region (hand-computed cases), and the tensor
tracker's known over-count in backward is what its documentation says."""

import pytest
import torch

from . import load_script


@pytest.fixture(scope="module")
def tools():
    return load_script("memory_tracker")


@pytest.fixture(scope="module", params=["LiveTensorTracker", "AllocatorPeak"])
def Tracker(request, tools):
    return getattr(tools, request.param)


@pytest.fixture(scope="module")
def LiveTensorTracker(tools):
    return tools.LiveTensorTracker


def test_allocations_and_frees(LiveTensorTracker):
    with LiveTensorTracker() as mem:
        a = torch.ones(1000)                          # 4,000 bytes
        b = torch.zeros(1000, dtype=torch.float64)    # 8,000
        assert (mem.live_bytes, mem.peak_bytes) == (12_000, 12_000)
        del a
        assert (mem.live_bytes, mem.peak_bytes) == (8_000, 12_000)
        c = torch.empty(500, dtype=torch.int32)       # 2,000
        assert (mem.live_bytes, mem.peak_bytes) == (10_000, 12_000)
        d = torch.ones(3000)                          # 12,000: a new peak
        assert (mem.live_bytes, mem.peak_bytes) == (22_000, 22_000)
        assert mem.peak_by_op == {"ones": 12_000, "zeros": 8_000, "empty": 2_000}
        del b, c, d
        assert mem.live_bytes == 0
    assert mem.peak_bytes == 22_000
    assert mem.allocated_bytes == 26_000


def test_views_in_place_and_out_are_not_new_memory(LiveTensorTracker):
    before = torch.ones(100, 10)                      # exists before the region
    with LiveTensorTracker() as mem:
        a = torch.ones(100, 10)                       # 4,000
        views = [a.view(1000), a[::2], a.t(), a.transpose(0, 1)[3], a.unsqueeze(0),
                 before.view(1000), before.detach(), *a.chunk(4)]
        a.add_(1).mul_(2)
        torch.add(a, 1, out=before)                   # written into existing memory
        assert (mem.live_bytes, mem.peak_bytes) == (4_000, 4_000)
        del a
        assert mem.live_bytes == 4_000                # the views keep the storage alive
        del views
        assert mem.live_bytes == 0                    # counted once, released once
        twice = before * 2                            # an op on old memory: new memory
        assert mem.live_bytes == 4_000
        del twice


def test_storage_grown_in_place_counts_at_its_size(LiveTensorTracker):
    with LiveTensorTracker() as mem:
        t = torch.empty(0)
        t.resize_(250)
        assert mem.live_bytes == 1_000
        del t
        assert mem.live_bytes == 0


def test_backward_activations_and_gradients(LiveTensorTracker):
    n = 1000
    x = torch.randn(n, requires_grad=True)
    with LiveTensorTracker() as mem:
        y = x * 3                    # n floats (not saved: the factor is a constant)
        loss = y.sum()               # 4 bytes
        loss.backward()              # ones_like (4 bytes, freed), x.grad (n floats)
        assert mem.peak_bytes == 4 * n + 4 + 4 + 4 * n
        assert mem.live_bytes == 4 * n + 4 + 4 * n   # y, loss, x.grad
        del y, loss
        assert mem.live_bytes == 4 * n
        x.grad = None
        assert mem.live_bytes == 0

    w = torch.randn(64, 32, requires_grad=True)
    inp = torch.randn(16, 64)
    with LiveTensorTracker() as mem:
        # (inp @ w) is freed as soon as sum() has read it (mm's backward for w needs inp,
        # not the product); the peak is w's gradient plus the two scalars.
        (inp @ w).sum().backward()
        assert mem.peak_bytes == 64 * 32 * 4 + 4 + 4
        assert mem.live_bytes == 64 * 32 * 4


def test_callbacks_stop_after_the_region(LiveTensorTracker):
    with LiveTensorTracker() as mem:
        kept = torch.ones(10)
    assert mem.live_bytes == 40
    del kept
    assert mem.live_bytes == 40  # the region is over: its numbers are final


def test_device_filter(LiveTensorTracker):
    with LiveTensorTracker(device="cuda") as mem:
        torch.ones(100)
    assert mem.peak_bytes == 0


# Both tools, read after the region (AllocatorPeak summarises on exit).
def _known_region():
    a = torch.ones(1000)                              # 4,000 bytes
    b = torch.zeros(1000, dtype=torch.float64)        # 8,000
    v = a.view(10, 100)                               # views and in-place ops: nothing new
    v.add_(1)
    del a, b                                          # v keeps a's storage: live 4,000
    c = torch.ones(3000)                              # 12,000: peak 16,000
    del c, v                                          # live 0
    x = torch.randn(256, requires_grad=True)          # 1,024
    y = x * 3                                         # 1,024
    y.sum().backward()                                # 4 + 4, then x.grad 1,024
    return x, y                                       # live at the end: 3,072


def test_both_trackers_on_a_known_region(Tracker):
    with Tracker() as mem:
        kept = _known_region()
    assert (mem.peak_bytes, mem.live_bytes) == (16_000, 3_072)
    del kept


def test_allocator_peak_counts_memory_allocated_inside_the_region(tools):
    old = torch.ones(2500)                            # 10,000 bytes, before the region
    with tools.AllocatorPeak() as mem:
        del old                                       # not seen: the profiler knows no size
        new = torch.ones(1000)                        # 4,000
    assert (mem.peak_bytes, mem.live_bytes) == (4_000, 4_000)
    del new


def test_allocator_peak_sees_kernel_scratch_and_attributes_it(tools):
    w = torch.randn(64, 32, requires_grad=True)
    inp = torch.randn(16, 64)
    with tools.AllocatorPeak() as mem:
        (inp @ w).sum().backward()
    grad_w, product = 64 * 32 * 4, 16 * 32 * 4
    # w.grad and the two scalars; mm's backward may also materialise the expanded
    # output gradient (a scratch copy the tensor tracker cannot see).
    assert grad_w + 8 <= mem.peak_bytes <= grad_w + 8 + product
    assert mem.live_bytes == grad_w
    owners = [k for k, v in mem.peak_by_op.items() if v >= grad_w]
    assert owners == ["MmBackward0 > aten::mm"]


def test_tensor_tracker_over_counts_index_backward(tools):
    """Under a dispatch mode autograd's index_backward runs out of place (the subclass-safe
    branch): one more full-size tensor than a plain run allocates (memory_tracker's doc)."""
    x = torch.randn(1000, 250, requires_grad=True)    # 1,000,000 bytes
    rows = torch.arange(0, 1000, 10)

    def step():
        x[rows].sum().backward()

    peaks = {}
    for name in ("AllocatorPeak", "LiveTensorTracker"):
        x.grad = None
        with getattr(tools, name)() as mem:
            step()
        peaks[name] = mem.peak_bytes
    full = 1000 * 250 * 4
    assert peaks["AllocatorPeak"] < 1.2 * full
    assert peaks["LiveTensorTracker"] > 1.9 * full
