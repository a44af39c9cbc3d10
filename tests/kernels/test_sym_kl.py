"""alum.kernels.fused_symmetric_kl against adversarial_divergence("sym_kl") in float64:
the PyTorch paths (softmax passes for whole rows, statistics passes for vocabulary
shards; in one row block and in many), the ascent's gradient (symmetric_kl_adv_grad),
the fallback selection and its single warning, and (in a
fresh process with TRITON_INTERPRET=1) the Triton kernels under the interpreter.
Forward and backward, odd and prime vocabularies, every dtype, with and without a mask.
"""
import os
import subprocess
import sys
import warnings

import pytest
import torch

from alum.divergence import adversarial_divergence
from alum.kernels import KernelFallbackWarning, fused_symmetric_kl
from alum.kernels import sym_kl as sym_kl_module
from alum.divergence import ascent_divergence
from alum.kernels.sym_kl import (FusedSymmetricKLFunction, as_rows, block_rows, row_weights,
                                 symmetric_kl_adv_grad, symmetric_kl_value_and_grad)

from .cases import DTYPES, assert_sym_kl_close, make_logits, reference_sym_kl_float64
from .conftest import fake_cuda

HERE = os.path.dirname(os.path.abspath(__file__))
INTERPRETER_TESTS = [os.path.join(HERE, "test_sym_kl_triton_interpreter.py")]

SHAPES = ((5, 97), (2, 3, 1021), (1, 13))


def mask_for(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    m = (torch.rand(shape[:-1], generator=gen) > 0.4).float()
    m.view(-1)[0] = 1.0
    return m


def run_fwd_bwd(fn, adv, clean, mask):
    a = adv.detach().clone().requires_grad_()
    c = clean.detach().clone().requires_grad_()
    loss = fn(a, c, mask)
    loss.backward()
    return loss.detach(), a.grad, c.grad


def _torch_path(a, c, mask, statistics=False):
    """The op without Triton. Whole rows take the softmax passes; a stats reducer (the
    identity here: one vocabulary shard) takes the statistics and gradients passes that
    vocabulary shards use."""
    weight = row_weights(tuple(a.shape[:-1]), mask, a.device)
    reduce = (lambda stats: stats) if statistics else None
    return FusedSymmetricKLFunction.apply(as_rows(a), as_rows(c), weight, False, True, reduce)


TORCH_PATHS = pytest.mark.parametrize("statistics", [False, True],
                                      ids=["softmax-passes", "statistics-passes"])


@TORCH_PATHS
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("masked", [False, True])
def test_pytorch_paths_match_float64(dtype, masked, statistics):
    for i, shape in enumerate(SHAPES):
        adv, clean = make_logits(shape, dtype, seed=i)
        mask = mask_for(shape, i) if masked else None
        got = run_fwd_bwd(lambda a, c, m: _torch_path(a, c, m, statistics), adv, clean, mask)
        assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean, mask), dtype,
                            f"{shape} {dtype}")


@TORCH_PATHS
@pytest.mark.parametrize("dtype", DTYPES)
def test_pytorch_passes_in_row_blocks_match_float64(dtype, statistics, monkeypatch):
    """The PyTorch passes walk the rows in blocks (two rows, then one, with a remainder
    block and idle rows inside blocks): the same loss and gradients as the oracle."""
    for cpu_bytes, shape, rows in ((4 * 97 * 2, (5, 97), 2), (64, (2, 3, 1021), 1)):
        monkeypatch.setitem(sym_kl_module.CHUNK_BYTES, "cpu", cpu_bytes)
        assert block_rows(shape[-1], torch.device("cpu")) == rows
        adv, clean = make_logits(shape, dtype, seed=rows)
        mask = mask_for(shape, rows)

        def op(a, c, m):
            return _torch_path(a, c, m, statistics)

        got = run_fwd_bwd(op, adv, clean, mask)
        assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean, mask), dtype,
                            f"{shape} {dtype}, {rows} row(s) per block")
        assert bool((got[1].reshape(-1, shape[-1])[mask.reshape(-1) == 0] == 0).all())
        # One side's gradient only (the other branch detached): the same values.
        a = adv.detach().clone().requires_grad_()
        op(a, clean, mask).backward()
        torch.testing.assert_close(a.grad, got[1], rtol=0, atol=0)
        c = clean.detach().clone().requires_grad_()
        op(adv, c, mask).backward()
        torch.testing.assert_close(c.grad, got[2], rtol=0, atol=0)


@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("block_bytes", [None, 64], ids=["default-blocks", "one-row-blocks"])
def test_value_and_grad_is_the_op_and_its_gradient(dtype, masked, block_bytes, monkeypatch):
    """symmetric_kl_value_and_grad: the loss and ∂/∂adv without a graph; ∂/∂clean is its
    negative. Without Triton it runs one softmax per branch and row block (float64 takes
    the reference through autograd)."""
    if block_bytes is not None:
        monkeypatch.setitem(sym_kl_module.CHUNK_BYTES, "cpu", block_bytes)
    shape = (2, 3, 1021)
    adv, clean = make_logits(shape, dtype, seed=21)
    mask = mask_for(shape, 21) if masked else None
    a = adv.clone().requires_grad_()  # a graph on the input must not matter
    value, grad = symmetric_kl_value_and_grad(a, clean, mask)
    assert value.grad_fn is None and grad.grad_fn is None
    assert grad.shape == adv.shape and grad.dtype == adv.dtype
    assert a.grad is None
    tol_dtype = torch.float32 if dtype == torch.float64 else dtype
    expected = reference_sym_kl_float64(adv, clean, mask)
    assert_sym_kl_close(value, grad, -grad, expected, tol_dtype, f"value_and_grad {dtype}")
    if masked:  # skipped rows: zero gradient, as the kernels write
        assert bool((grad.reshape(-1, shape[-1])[mask.reshape(-1) == 0] == 0).all())
    if dtype != torch.float64:  # the autograd op agrees within the same bounds
        op = run_fwd_bwd(fused_symmetric_kl, adv, clean, mask)
        assert_sym_kl_close(value, grad, -grad, (op[0].double(), op[1].double(),
                                                 op[2].double()), tol_dtype, "vs the op")


# symmetric_kl_adv_grad against autograd through the ascent's divergence: error bound
# relative to the largest gradient element (the fp32 softmaxes cost a few ulps; the result
# is rounded to the logits' dtype, bf16: 2^-8, fp16: 2^-11).
ADV_GRAD_RTOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 1e-2,
                 torch.float16: 2e-3}


def _ascent_oracle(kind, adv, clean, mask):
    a = adv.detach().double().requires_grad_()
    d = ascent_divergence(kind, a, clean.detach().double(),
                          None if mask is None else mask.double())
    (g,) = torch.autograd.grad(d, a)
    return g


@pytest.mark.parametrize("dtype", list(ADV_GRAD_RTOL))
@pytest.mark.parametrize("shape", [(5, 97), (2, 3, 1021), (40, 30011)],
                         ids=["5x97", "2x3x1021", "40x30011-three-blocks"])
@pytest.mark.parametrize("masked", [False, True])
def test_adv_grad_matches_autograd_through_the_ascent_divergence(dtype, shape, masked):
    adv, clean = make_logits(shape, dtype, seed=shape[-1])
    mask = None
    if masked:
        mask = (torch.rand(shape[:-1], generator=torch.Generator().manual_seed(1)) > 0.3)
        mask = mask.to(torch.float32)
        mask.view(-1)[0] = 1.0
    got = symmetric_kl_adv_grad(adv, clean, mask)
    assert got.shape == adv.shape and got.dtype == adv.dtype
    for kind in ("kl", "sym_kl"):  # the ascent's D is KL(sg p_clean ‖ p_adv) for both
        expected = _ascent_oracle(kind, adv, clean, mask)
        err = (got.double() - expected).abs().max().item()
        assert err <= ADV_GRAD_RTOL[dtype] * expected.abs().max().item(), (kind, err)
    if masked:
        assert bool((got.reshape(-1, shape[-1])[mask.reshape(-1) == 0] == 0).all())


def test_adv_grad_shape_mismatch_is_rejected():
    adv, clean = make_logits((3, 11), torch.float32)
    with pytest.raises(ValueError, match=r"adv \(3, 11\) vs clean \(2, 11\)"):
        symmetric_kl_adv_grad(adv, clean[:2])


def test_tuple_logits_sum_like_the_reference():
    a1, c1 = make_logits((4, 13), torch.float32, seed=7)
    a2, c2 = make_logits((4, 13), torch.float32, seed=8)
    got = fused_symmetric_kl((a1, a2), (c1, c2))
    expected = adversarial_divergence("sym_kl", (a1, a2), (c1, c2))
    torch.testing.assert_close(got, expected)


def _uses_the_passes(loss: torch.Tensor) -> bool:
    return type(loss.grad_fn).__name__ == "FusedSymmetricKLFunctionBackward"


def test_cpu_without_interpreter_runs_the_pytorch_passes(monkeypatch):
    """Without Triton, CPU tensors take the two passes in PyTorch (no softmax saved for
    backward), silently; they equal the float64 oracle like the kernels."""
    monkeypatch.setattr(sym_kl_module, "_TRITON_STATE", (False, "triton is not installed"))
    for dtype in DTYPES:
        adv, clean = make_logits((2, 3, 97), dtype, seed=9)
        mask = mask_for((2, 3, 97))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = run_fwd_bwd(fused_symmetric_kl, adv, clean, mask)
            assert _uses_the_passes(fused_symmetric_kl(adv.requires_grad_(), clean, mask))
        assert_sym_kl_close(*got, reference_sym_kl_float64(adv, clean, mask), dtype, str(dtype))


def test_cuda_tensors_without_triton_fall_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(sym_kl_module, "_TRITON_STATE", (False, "triton is not installed"))
    adv, clean = make_logits((3, 97), torch.float32, seed=11)
    a, c = fake_cuda(adv), fake_cuda(clean)
    with pytest.warns(KernelFallbackWarning,
                      match="fused_symmetric_kl.*triton is not installed; the PyTorch passes"):
        first = fused_symmetric_kl(a, c)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second = fused_symmetric_kl(a, c)
    expected = adversarial_divergence("sym_kl", adv, clean)
    torch.testing.assert_close(first.as_subclass(torch.Tensor), expected)
    torch.testing.assert_close(second.as_subclass(torch.Tensor), expected)


def test_float64_logits_use_the_reference():
    adv, clean = make_logits((3, 13), torch.float64, seed=12)
    torch.testing.assert_close(fused_symmetric_kl(adv, clean),
                               adversarial_divergence("sym_kl", adv, clean), rtol=0, atol=0)


@pytest.mark.slow
def test_triton_interpreter_suite():
    """The Triton kernels on CPU tensors: a fresh process with TRITON_INTERPRET=1 set
    before triton is imported (see conftest.triton_interpreter)."""
    from alum.kernels.sym_kl import triton_interpreter_on, triton_state
    if not triton_state()[0]:
        pytest.skip(f"Triton unavailable: {triton_state()[1]}")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the compiled Triton kernels are tested by the gpu tests")
    if triton_interpreter_on():
        pytest.skip("this session runs the interpreter tests in-process")
    root = os.path.dirname(os.path.dirname(HERE))
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", *INTERPRETER_TESTS], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    assert " skipped" not in proc.stdout.splitlines()[-1], proc.stdout[-3000:]
