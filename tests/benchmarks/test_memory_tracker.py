"""benchmarks/memory_tracker.py: the CPU peak-memory tool of benchmarks/alum_step_cost.py
counts exactly the bytes of live tensors created inside its region (hand-computed cases)."""
import importlib.util
import os

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def Tracker():
    spec = importlib.util.spec_from_file_location(
        "memory_tracker", os.path.join(ROOT, "benchmarks", "memory_tracker.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LiveTensorTracker


def test_allocations_and_frees(Tracker):
    with Tracker() as mem:
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


def test_views_in_place_and_out_are_not_new_memory(Tracker):
    before = torch.ones(100, 10)                      # exists before the region
    with Tracker() as mem:
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


def test_storage_grown_in_place_counts_at_its_size(Tracker):
    with Tracker() as mem:
        t = torch.empty(0)
        t.resize_(250)
        assert mem.live_bytes == 1_000
        del t
        assert mem.live_bytes == 0


def test_backward_activations_and_gradients(Tracker):
    n = 1000
    x = torch.randn(n, requires_grad=True)
    with Tracker() as mem:
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
    with Tracker() as mem:
        # (inp @ w) is freed as soon as sum() has read it (mm's backward for w needs inp,
        # not the product); the peak is w's gradient plus the two scalars.
        (inp @ w).sum().backward()
        assert mem.peak_bytes == 64 * 32 * 4 + 4 + 4
        assert mem.live_bytes == 64 * 32 * 4


def test_callbacks_stop_after_the_region(Tracker):
    with Tracker() as mem:
        kept = torch.ones(10)
    assert mem.live_bytes == 40
    del kept
    assert mem.live_bytes == 40  # the region is over: its numbers are final


def test_device_filter(Tracker):
    with Tracker(device="cuda") as mem:
        torch.ones(100)
    assert mem.peak_bytes == 0
