"""The Triton kernels of the fused symmetric KL on CPU tensors (TRITON_INTERPRET=1).

Run by test_sym_kl.py::test_triton_interpreter_suite in a fresh process with the variable
set before triton is imported; in a session without it these tests skip. Small shapes:
the interpreter executes every program instance in Python.
"""
import pytest
import torch

from alum.kernels import fused_symmetric_kl
from alum.kernels.sym_kl import sym_kl_stats_torch
from alum.kernels.sym_kl_vocab_parallel import combine_shard_stats

from .cases import DTYPES, assert_sym_kl_close, make_logits, reference_sym_kl_float64
from .test_sym_kl import SHAPES, mask_for, run_fwd_bwd


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_kernels_match_float64_under_the_interpreter(triton_interpreter, dtype):
    for i, shape in enumerate(SHAPES):
        for masked in (False, True):
            adv, clean = make_logits(shape, dtype, seed=10 + i)
            mask = mask_for(shape, i) if masked else None
            got = run_fwd_bwd(fused_symmetric_kl, adv, clean, mask)
            assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean, mask), dtype,
                                f"triton {shape} {dtype} masked={masked}")


def test_triton_kernels_handle_offsets_tiny_perturbations_and_blocks(triton_interpreter):
    """A constant offset between the rows (removed by k), a perturbation so small that the
    two expectations nearly cancel, and a vocabulary over several 4096-wide blocks."""
    adv, clean = make_logits((3, 97), torch.float32, seed=3, offset=40.0)
    got = run_fwd_bwd(fused_symmetric_kl, adv, clean, None)
    assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean), torch.float32, "offset")
    clean = torch.randn(4, 211) * 3
    adv = clean + torch.randn(4, 211) * 1e-3
    loss, _, _ = run_fwd_bwd(fused_symmetric_kl, adv, clean, None)
    expected = reference_sym_kl_float64(adv, clean)[0]
    assert abs(float(loss) - float(expected)) <= 1e-3 * float(expected), (loss, expected)
    adv, clean = make_logits((2, 9001), torch.bfloat16, seed=4)
    got = run_fwd_bwd(fused_symmetric_kl, adv, clean, None)
    assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean), torch.bfloat16, "blocks")


def test_triton_kernel_skips_masked_rows_and_handles_all_masked(triton_interpreter):
    adv, clean = make_logits((4, 97), torch.float32, seed=5)
    adv[2] = float("nan")  # a masked-out row is never read
    mask = torch.tensor([1.0, 1.0, 0.0, 1.0])
    loss, ga, gc = run_fwd_bwd(fused_symmetric_kl, adv, clean, mask)
    assert torch.isfinite(loss) and bool((ga[2] == 0).all()) and bool((gc[2] == 0).all())
    keep = [0, 1, 3]
    expected = reference_sym_kl_float64(adv[keep], clean[keep])
    assert_sym_kl_close(loss, ga[keep], gc[keep], expected, torch.float32, "masked rows")
    zero = run_fwd_bwd(fused_symmetric_kl, adv, clean, torch.zeros(4))
    assert float(zero[0]) == 0.0 and bool((zero[1] == 0).all())


def test_triton_gradient_only_where_needed(triton_interpreter):
    adv, clean = make_logits((3, 97), torch.float32, seed=6)
    a = adv.clone().requires_grad_()
    fused_symmetric_kl(a, clean, None).backward()  # clean needs no gradient
    expected = reference_sym_kl_float64(adv, clean)
    assert (a.grad.double() - expected[1]).abs().max() <= 2e-5 * expected[1].abs().max()


@pytest.mark.parametrize("dtype", DTYPES)
def test_triton_statistics_equal_the_pytorch_statistics(triton_interpreter, dtype):
    adv, clean = make_logits((6, 1021), dtype, seed=20)
    weight = torch.tensor([1.0, 0.0, 0.5, 1.0, 1.0, 2.0])
    for shift in (True, False):
        got = triton_interpreter.sym_kl_stats(adv, clean, weight, shift)
        expected = sym_kl_stats_torch(adv, clean, weight, shift)
        torch.testing.assert_close(got, expected, rtol=2e-5, atol=1e-5)


def test_triton_shard_statistics_combine_to_the_whole_rows(triton_interpreter):
    """Two vocabulary shards (TP = 2) simulated in one process, odd split of 1021."""
    adv, clean = make_logits((5, 1021), torch.float32, seed=21)
    weight = torch.ones(5)
    shards = [triton_interpreter.sym_kl_stats(adv[:, sl].contiguous(), clean[:, sl].contiguous(),
                                              weight, False)
              for sl in (slice(0, 510), slice(510, None))]
    whole = triton_interpreter.sym_kl_stats(adv, clean, weight, False)
    torch.testing.assert_close(combine_shard_stats(shards), whole, rtol=2e-5, atol=1e-5)
