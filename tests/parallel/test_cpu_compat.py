"""The CPU compatibility layer: scoped, idempotent, a no-op with CUDA; the CPU RNG tracker;
megatron's no-pipelining schedule runs on CPU."""
import importlib

import pytest
import torch

from alum.parallel import cpu_compat


@pytest.fixture(scope="module")
def parallel():
    from alum.parallel import destroy_parallel, initialize_parallel

    initialize_parallel(tp=1, pp=1, seed=11)
    yield
    destroy_parallel()


def test_apply_is_idempotent_and_scoped(parallel):
    mappings = importlib.import_module("megatron.core.tensor_parallel.mappings")
    proxy = mappings.torch
    assert cpu_compat.apply_cpu_compat() is True and cpu_compat.is_applied()
    assert mappings.torch is proxy                              # applied once
    assert proxy.cuda.current_device() == "cpu"
    assert proxy.empty(2, device="cuda").device.type == "cpu"
    assert proxy.zeros([], dtype=torch.int, device=torch.device("cuda", 0)).device.type == "cpu"
    assert proxy.Tensor is torch.Tensor and proxy.float32 is torch.float32
    # The real torch.cuda is untouched: other libraries still see no CUDA.
    with pytest.raises((AssertionError, RuntimeError)):
        torch.cuda.current_device()


def test_noop_when_cuda_is_available(monkeypatch):
    utils = importlib.import_module("megatron.core.utils")
    before = utils.torch
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpu_compat, "_APPLIED", False)
    assert cpu_compat.apply_cpu_compat() is False
    assert utils.torch is before


def test_tracker_forks_the_cpu_generator(parallel):
    from megatron.core import tensor_parallel

    tracker = tensor_parallel.get_cuda_rng_tracker()
    assert type(tracker).__name__ == "CpuRNGStatesTracker"
    state = torch.get_rng_state()
    with tracker.fork():
        first = torch.rand(3)
    assert torch.equal(torch.get_rng_state(), state)           # default stream untouched
    with tracker.fork():
        second = torch.rand(3)
    assert not torch.equal(first, second)                      # the forked stream advances
    saved = tracker.get_states()
    saved = {k: v.clone() for k, v in saved.items()}
    with tracker.fork():
        third = torch.rand(3)
    tracker.set_states(saved)
    with tracker.fork():
        assert torch.equal(torch.rand(3), third)               # checkpointable states


def test_no_pipelining_schedule_runs_on_cpu(parallel):
    from alum.models import ModelConfig
    from alum.parallel import ParallelConfig, build_model
    from alum.parallel.pipeline import run_schedule

    cfg = ModelConfig.named("tiny", "bert", vocab_size=500, hidden_dropout=0.0,
                            attention_dropout=0.0)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        ids = torch.randint(1, 500, (2, 8), generator=g)
        labels = torch.full_like(ids, -100)
        labels[:, 1] = ids[:, 1]
        batches.append(dict(input_ids=ids, attention_mask=torch.ones_like(ids),
                            labels=labels))
    model, = build_model(cfg, ParallelConfig())
    out = run_schedule([model], ParallelConfig(), model=cfg, data_iterator=iter(batches),
                       num_microbatches=2, seq_length=8, micro_batch_size=2)
    scheduled = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    losses = []
    for mb in batches:
        loss = model.mlm_loss(model(mb["input_ids"], mb["attention_mask"]), mb["labels"])
        (loss / 2).backward()
        losses.append(loss.detach())
    for a, b in zip(scheduled, (p.grad for p in model.parameters())):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(torch.stack([d["mlm_loss"] for d in out]), torch.stack(losses))
