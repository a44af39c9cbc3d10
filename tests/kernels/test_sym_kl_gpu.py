"""The compiled Triton kernels of the fused symmetric KL on a GPU (skipped without one):
against the float64 reference over odd and ALUM-sized vocabularies and every dtype,
forward and backward; the vocab-parallel simulation; and the memory target
(at most half the eager reference's peak) on one ALUM-shaped case.

Run on a CUDA machine by benchmarks/kernels_gpu_check.sh (``pytest -m gpu tests/kernels``).
"""
import warnings

import pytest
import torch

from alum.divergence import adversarial_divergence
from alum.kernels import fused_symmetric_kl, vocab_parallel_symmetric_kl

from .cases import DTYPES, assert_sym_kl_close, make_logits, reference_sym_kl_float64
from .conftest import needs_cuda

pytestmark = [pytest.mark.gpu, needs_cuda]


def _fwd_bwd(fn, adv, clean, mask=None):
    a = adv.detach().clone().requires_grad_()
    c = clean.detach().clone().requires_grad_()
    loss = fn(a, c, mask)
    loss.backward()
    return loss.detach(), a.grad, c.grad


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 97), (2, 3, 1021), (64, 30522), (33, 50265)])
def test_triton_on_cuda_matches_float64(dtype, shape):
    adv, clean = make_logits(shape, dtype, seed=shape[-1], device="cuda")
    mask = (torch.rand(shape[:-1], device="cuda") > 0.3).float()
    for m in (None, mask):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback on CUDA
            got = _fwd_bwd(fused_symmetric_kl, adv, clean, m)
        assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean, m), dtype,
                            f"{shape} {dtype} masked={m is not None}")


def test_vocab_parallel_on_cuda_without_group_equals_single_device():
    adv, clean = make_logits((16, 1021), torch.bfloat16, seed=3, device="cuda")
    got = _fwd_bwd(vocab_parallel_symmetric_kl, adv, clean)
    assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean), torch.bfloat16, "tp=1")


def _peak_bytes(fn, adv, clean):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    _fwd_bwd(fn, adv, clean)
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def test_fused_peak_memory_is_at_most_half_of_eager():
    adv, clean = make_logits((2048, 30522), torch.bfloat16, seed=4, device="cuda")
    eager = _peak_bytes(lambda a, c, m: adversarial_divergence("sym_kl", a, c, m), adv, clean)
    fused = _peak_bytes(fused_symmetric_kl, adv, clean)
    assert fused <= 0.5 * eager, (fused, eager)
