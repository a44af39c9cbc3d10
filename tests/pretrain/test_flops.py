"""The FLOP count against torch's own counter on the real model, and the MFU peak table."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from alum.pretrain.flops import (forward_flops, forward_flops_per_sequence, head_flops_per_row,
                                 model_dims, peak_tflops_of, step_flops)


@pytest.fixture(scope="module")
def model():
    from alum.models import ModelConfig
    from alum.parallel import ParallelConfig, build_model, destroy_parallel, initialize_parallel

    initialize_parallel(tp=1, pp=1, seed=3)
    # Odd sizes: 3 heads of 20, MLP 72, vocabulary 211 (padded to 256).
    cfg = ModelConfig.named("tiny", vocab_size=211, hidden_size=60, num_attention_heads=3,
                            ffn_hidden_size=72, num_layers=3, hidden_dropout=0.0,
                            attention_dropout=0.0)
    built, = build_model(cfg, ParallelConfig())
    yield built
    destroy_parallel()


def counted(fn):
    """Matmul FLOPs torch's FlopCounterMode sees (SDPA's math kernel: its bmm's count)."""
    counter = FlopCounterMode(display=False)
    with counter, sdpa_kernel(SDPBackend.MATH):
        out = fn()
    return counter.get_total_flops(), out


@pytest.mark.parametrize("b, s, padded", [(3, 17, False), (2, 24, True)])
def test_forward_and_backward_equal_torch_flop_counter(model, b, s, padded):
    g = torch.Generator().manual_seed(b * s)
    ids = torch.randint(1, 211, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    if padded:
        mask[0, s // 2:] = 0
    rows = torch.rand(b, s, generator=g) < 0.2
    rows[:, 0] = True
    fwd, logits = counted(lambda: model(ids, mask, rows=rows))
    dims = model_dims(model)
    assert dims == dict(hidden=60, layers=3, ffn=72, vocab=256)
    assert fwd == forward_flops(b, s, int(rows.sum()), **dims)
    bwd, _ = counted(lambda: logits.float().sum().backward())
    assert bwd == 2 * fwd                                  # the 3F of a standard step
    assert fwd * 3 == step_flops(b, s, int(rows.sum()), dims)


def test_head_counted_at_its_rows_only(model):
    """The head's cost grows by exactly one row's dense + decoder per extra row."""
    ids = torch.randint(1, 211, (2, 16), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    few = torch.zeros(2, 16, dtype=torch.bool)
    few[0, 3] = True
    more = few.clone()
    more[1, 5:9] = True
    f_few, _ = counted(lambda: model(ids, mask, rows=few))
    f_more, _ = counted(lambda: model(ids, mask, rows=more))
    f_all, _ = counted(lambda: model(ids, mask))
    assert f_more - f_few == 4 * (2 * 60 * 60 + 2 * 60 * 256) == 4 * head_flops_per_row(60, 256)
    assert f_all == 2 * forward_flops_per_sequence(16, **model_dims(model))


def test_alum_step_and_sequence_parallel_dense_rows():
    dims = dict(hidden=768, layers=12, ffn=3072, vocab=30592)
    f = forward_flops(32, 512, 2458, **dims)
    assert step_flops(32, 512, 2458, dims, alum_active=True, alum_steps=1) == 8 * f
    assert step_flops(32, 512, 2458, dims, alum_active=True, alum_steps=3) == 12 * f
    # Under SP the dense layer sees every position; the decoder only the picked rows.
    sp = step_flops(32, 512, 2458, dims, dense_rows=32 * 512)
    assert sp - 3 * f == 3 * (32 * 512 - 2458) * 2 * 768 * 768
    # BERT-base at seq 512, 15% predicted: the head is ~3% of F, not the 19% of a head
    # at every position.
    full = forward_flops(32, 512, 32 * 512, **dims)
    assert (full - f) / full > 0.15


@pytest.mark.parametrize("name, peak", [
    ("NVIDIA H200", 989.0), ("NVIDIA H100 80GB HBM3", 989.0), ("NVIDIA H100 PCIe", 756.0),
    ("NVIDIA A100-SXM4-80GB", 312.0), ("NVIDIA A10G", 125.0), ("NVIDIA L40S", 362.0),
    ("NVIDIA L4", 121.0), ("Some New GPU", None)])
def test_peak_table_matches_the_most_specific_name(name, peak):
    assert peak_tflops_of(name) == peak
