"""The custom op alum::adv_project on CPU: its reference implementation against the
float64 oracle, its non-finite flag, strided inputs, the fake impl and torch.compile.

On CPU the op runs the registered PyTorch reference; the CUDA kernel implements the same
schema and is compared with the same oracle in test_adv_project_gpu.py.
"""
import numpy as np
import pytest
import torch

from alum import adv_project as reference_adv_project
from alum.kernels.adv_project_op import adv_project_op

from .cases import DTYPES, adv_cases, assert_close_to_oracle, make_adv_case, oracle_update


@pytest.mark.parametrize("dtype", DTYPES + (torch.float64,))
def test_op_matches_float64_oracle_over_odd_shapes_rules_and_levels(dtype):
    for name, case in adv_cases(dtypes=(dtype,)):
        new, nonfinite = adv_project_op(case.delta, case.grad, case.config, case.mask, case.scale)
        assert new.dtype == dtype and new.shape == case.delta.shape and new.is_contiguous()
        assert not bool(nonfinite), name
        assert_close_to_oracle(new, oracle_update(case), dtype, name)
        # Padding rows come out as exactly zero (docs/algorithm.md: padding gets delta = 0).
        assert bool((new[case.mask == 0] == 0).all()), name


def test_op_equals_the_reference_function_exactly_on_cpu():
    for name, case in adv_cases(dtypes=(torch.float32,), hidden_sizes=(13,)):
        new, _ = adv_project_op(case.delta, case.grad, case.config, case.mask, case.scale)
        expected = reference_adv_project(case.delta, case.grad, case.config, case.mask, case.scale)
        torch.testing.assert_close(new, expected, rtol=0, atol=0, msg=name)


@pytest.mark.parametrize("where,flag", [("padding", False), ("token", True)])
def test_nonfinite_flag_counts_only_non_padding_rows(where, flag):
    case = make_adv_case(2, 6, 13, torch.float32, "project", "inf", "token")
    case.mask[1, 4:] = 0
    grad = case.grad.clone()
    grad[1, 5 if where == "padding" else 0, 3] = float("nan")
    _, nonfinite = adv_project_op(case.delta, grad, case.config, case.mask, case.scale)
    assert nonfinite.dtype == torch.bool and nonfinite.shape == ()
    assert bool(nonfinite) is flag
    grad[0, 0, 0] = float("inf")
    assert bool(adv_project_op(case.delta, grad, case.config, case.mask)[1])


def test_strided_rows_and_transposed_inputs():
    case = make_adv_case(3, 5, 769, torch.float32, "project", "l2", "token")
    wide_d = torch.zeros(3, 5, 800)
    wide_g = torch.zeros(3, 5, 800)
    wide_d[..., 7:776] = case.delta
    wide_g[..., 7:776] = case.grad
    d, g = wide_d[..., 7:776], wide_g[..., 7:776]          # strided rows
    assert not d.is_contiguous()
    new, _ = adv_project_op(d, g, case.config, case.mask)
    assert_close_to_oracle(new, oracle_update(case), torch.float32, "strided")
    dt = case.delta.transpose(0, 1).contiguous().transpose(0, 1)  # non-collapsible rows
    new_t, _ = adv_project_op(dt, case.grad, case.config, case.mask)
    torch.testing.assert_close(new_t, new, rtol=0, atol=0)


def test_fake_impl_gives_shape_and_dtype_on_meta_tensors():
    case = make_adv_case(2, 3, 7, torch.bfloat16, "normalize", "l2", "sequence", scaled=True)
    meta = [None if t is None else t.to("meta") for t in (case.delta, case.grad, case.mask,
                                                            case.scale)]
    new, nonfinite = adv_project_op(meta[0], meta[1], case.config, meta[2], meta[3])
    assert new.device.type == "meta" and new.shape == case.delta.shape
    assert new.dtype == torch.bfloat16 and nonfinite.dtype == torch.bool and nonfinite.dim() == 0


def test_opcheck_schema_fake_impl_and_dispatch():
    case = make_adv_case(2, 4, 13, torch.float32, "project", "inf", "sequence", scaled=True)
    scale = case.scale.reshape(-1)
    args = (case.delta, case.grad, case.mask, scale, "project", "inf", "sequence", 1e-2, 3e-3,
            0.5)
    torch.library.opcheck(torch.ops.alum.adv_project.default, args,
                          test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))


def test_torch_compile_traces_the_op_through_its_fake_impl():
    """fullgraph=True fails on any graph break: the op must be traceable as one node."""
    case = make_adv_case(2, 5, 13, torch.float32, "project", "l2", "token", scaled=True)
    cfg = case.config

    def step(delta, grad, mask, scale):
        new, nonfinite = adv_project_op(delta, grad, cfg, mask, scale)
        return new * 2, nonfinite

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    got, flag = compiled(case.delta, case.grad, case.mask, case.scale)
    expected, _ = step(case.delta, case.grad, case.mask, case.scale)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert not bool(flag)
    assert np.isfinite(got.numpy()).all()
