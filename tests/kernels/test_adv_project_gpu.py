"""The CUDA kernel of alum::adv_project on a GPU (skipped without one): built and loaded,
against the float64 oracle over odd shapes, every dtype, rule, norm and level, strided
rows, the grouped path, the non-finite flag, and torch.compile through the op.

Run on a CUDA machine by benchmarks/kernels_gpu_check.sh (``pytest -m gpu tests/kernels``).
"""
import warnings

import pytest
import torch

import alum
import alum.kernels
from alum.kernels.adv_project_op import adv_project_op
from alum.kernels.extension import extension_state

from .cases import DTYPES, adv_cases, assert_close_to_oracle, make_adv_case, oracle_update
from .conftest import needs_cuda

pytestmark = [pytest.mark.gpu, needs_cuda]


@pytest.fixture(scope="module", autouse=True)
def built_extension():
    state = extension_state(build=True)
    assert state.loaded, f"the CUDA extension did not load: {state.reason}"
    return state


def _cuda(case):
    for name in ("delta", "grad", "mask", "scale"):
        t = getattr(case, name)
        if t is not None:
            setattr(case, name, t.cuda())
    return case


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_float64_oracle(dtype):
    # 769 and 13/7: odd rows (scalar path); 768/4096: 16-byte vectors; 8209: grouped path.
    for name, case in adv_cases(hidden_sizes=(7, 13, 769, 768, 4096, 8209), dtypes=(dtype,)):
        case = _cuda(case)
        new, nonfinite = adv_project_op(case.delta, case.grad, case.config, case.mask, case.scale)
        assert new.is_cuda and new.dtype == dtype and not bool(nonfinite), name
        assert_close_to_oracle(new, oracle_update(case), dtype, name)
        assert bool((new[case.mask == 0] == 0).all()), name


@pytest.mark.parametrize("dtype", DTYPES)
def test_kernel_matches_the_reference_on_cuda_and_warns_nothing(dtype):
    for name, case in adv_cases(hidden_sizes=(769,), dtypes=(dtype,), batch=4, tokens=33):
        case = _cuda(case)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = alum.kernels.adv_project(case.delta, case.grad, case.config, case.mask,
                                           case.scale)
        expected = alum.adv_project(case.delta, case.grad, case.config, case.mask, case.scale)
        assert_close_to_oracle(got, expected.double().cpu().numpy(), dtype, name)


def test_strided_and_non_collapsible_rows():
    case = _cuda(make_adv_case(3, 5, 768, torch.bfloat16, "project", "l2", "token"))
    wide_d = torch.zeros(3, 5, 800, dtype=torch.bfloat16, device="cuda")
    wide_g = torch.zeros_like(wide_d)
    wide_d[..., 8:776] = case.delta
    wide_g[..., 8:776] = case.grad
    expected = oracle_update(case)
    new, _ = adv_project_op(wide_d[..., 8:776], wide_g[..., 8:776], case.config, case.mask)
    assert_close_to_oracle(new, expected, torch.bfloat16, "strided, 16-byte aligned rows")
    new, _ = adv_project_op(wide_d[..., 1:769].copy_(case.delta), wide_g[..., 1:769].copy_(case.grad),
                            case.config, case.mask)
    assert_close_to_oracle(new, expected, torch.bfloat16, "strided, unaligned rows")
    dt = case.delta.transpose(0, 1).contiguous().transpose(0, 1)
    new, _ = adv_project_op(dt, case.grad, case.config, case.mask)
    assert_close_to_oracle(new, expected, torch.bfloat16, "non-collapsible rows")


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_nonfinite_flag(level):
    case = _cuda(make_adv_case(2, 6, 769, torch.float16, "project", "inf", level))
    case.mask[1, 4:] = 0
    grad = case.grad.clone()
    grad[1, 5, 3] = float("nan")  # padding row: ignored
    assert not bool(adv_project_op(case.delta, grad, case.config, case.mask)[1])
    grad[0, 0, 0] = float("inf")
    new, flag = adv_project_op(case.delta, grad, case.config, case.mask)
    assert bool(flag)
    assert bool((new[case.mask == 0] == 0).all())  # padding stays zero even then


def test_no_mask_no_scale_and_empty_inputs():
    case = _cuda(make_adv_case(2, 4, 13, torch.float32, "normalize", "l1", "token", masked=False))
    new, _ = adv_project_op(case.delta, case.grad, case.config)
    assert_close_to_oracle(new, oracle_update(case), torch.float32, "no mask")
    empty = torch.empty(0, 3, 13, device="cuda")
    assert adv_project_op(empty, empty, case.config)[0].shape == empty.shape


def test_torch_compile_fullgraph_on_cuda():
    case = _cuda(make_adv_case(4, 16, 768, torch.bfloat16, "project", "inf", "token", scaled=True))
    cfg = case.config

    def step(delta, grad, mask, scale):
        new, flag = adv_project_op(delta, grad, cfg, mask, scale)
        return new.float() * 2, flag

    compiled = torch.compile(step, fullgraph=True)
    got, flag = compiled(case.delta, case.grad, case.mask, case.scale)
    expected, _ = step(case.delta, case.grad, case.mask, case.scale)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not bool(flag)


def test_sequence_level_with_long_sequences_is_deterministic():
    case = _cuda(make_adv_case(4, 512, 1024, torch.bfloat16, "project", "l2", "sequence",
                               scaled=True))
    first = adv_project_op(case.delta, case.grad, case.config, case.mask, case.scale)[0]
    second = adv_project_op(case.delta, case.grad, case.config, case.mask, case.scale)[0]
    assert torch.equal(first, second)
    assert_close_to_oracle(first, oracle_update(case), torch.bfloat16, "long sequences")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("norm", ["inf", "l2"])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("magnitude", [1e-12, 1e-6, 1.0, 1e6])
def test_kernel_step_is_scale_free(dtype, norm, level, magnitude):
    # A row with a non-zero gradient moves by exactly eta whatever the gradient's size
    # (epsilon far above eta: no clipping), as in the reference.
    cfg = alum.AlumConfig(update="project", norm=norm, level=level, step_size=0.25,
                          epsilon=10.0)
    g = torch.Generator().manual_seed(7)
    grad = (torch.randn(3, 5, 768, generator=g, dtype=torch.float64) * magnitude).to(dtype)
    new, _ = adv_project_op(torch.zeros_like(grad).cuda(), grad.cuda(), cfg)
    x = new.double().cpu()
    if level == "sequence":
        x = x.reshape(3, -1)
    got = x.abs().amax(-1) if norm == "inf" else x.pow(2).sum(-1).sqrt()
    rtol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(got, torch.full_like(got, 0.25), rtol=rtol, atol=0)
