"""Path selection of alum.kernels.adv_project: the reference on CPU (one warning), the CUDA
kernel on CUDA tensors when the extension is loaded, else the reference with exactly one
clear warning; the extension loader's reasons; the --check report and console script.

CUDA tensors are impersonated by a CPU tensor subclass whose ``is_cuda`` is True, so the
selection logic runs here; the real kernel is tested in test_adv_project_gpu.py.
"""
import importlib.metadata
import json
import re
import os
import subprocess
import sys
import warnings

import pytest
import torch

import alum
import alum.kernels
import alum.kernels.adv_project_dispatch as dispatch
from alum.kernels import KernelFallbackWarning, extension as ext
from alum.kernels.adv_project_op import nonfinite_rows
from alum.kernels.cli import main as cli_main

from .cases import make_adv_case
from .conftest import fake_cuda


def _case(dtype=torch.float32):
    return make_adv_case(2, 5, 13, dtype, "project", "inf", "token", scaled=True)


def test_cpu_tensors_take_the_reference_exactly_with_one_warning():
    case = _case()  # (conftest forgets earlier warnings before each test)
    with pytest.warns(KernelFallbackWarning, match="no CPU kernel"):
        got = alum.kernels.adv_project(case.delta, case.grad, case.config, case.mask, case.scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process
        got2 = alum.kernels.adv_project(case.delta, case.grad, case.config, case.mask,
                                        case.scale)
    flag = nonfinite_rows(case.grad, case.mask)  # the op's flag, reference arithmetic
    expected = alum.adv_project(case.delta, case.grad, case.config, case.mask, case.scale)
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(got2, expected, rtol=0, atol=0)
    assert not bool(flag)


def test_cuda_tensors_without_extension_fall_back_with_one_warning():
    state = ext.extension_state(build=True)
    if state.loaded:
        pytest.skip("the CUDA extension is loaded here")
    case = _case()
    d, g = fake_cuda(case.delta), fake_cuda(case.grad)
    with pytest.warns(KernelFallbackWarning, match="adv_project.*" + re.escape(state.reason[:20])):
        first = alum.kernels.adv_project(d, g, case.config, case.mask, case.scale)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second fallback is silent
        second = alum.kernels.adv_project(d, g, case.config, case.mask, case.scale)
    expected = alum.adv_project(case.delta, case.grad, case.config, case.mask, case.scale)
    torch.testing.assert_close(first.as_subclass(torch.Tensor), expected, rtol=0, atol=0)
    torch.testing.assert_close(second.as_subclass(torch.Tensor), expected, rtol=0, atol=0)
    assert "adv_project" in alum.kernels.report(build=False)["fallback_warnings"]


def test_cuda_tensors_with_extension_call_the_op(monkeypatch):
    calls = []

    def fake_op(delta, grad, config, mask=None, scale=None):
        calls.append(delta.shape)
        return delta * 0 + 7, torch.tensor(False)

    monkeypatch.setattr(dispatch, "extension_loaded", lambda: True)
    monkeypatch.setattr(dispatch, "adv_project_op", fake_op)
    case = _case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = alum.kernels.adv_project(fake_cuda(case.delta), fake_cuda(case.grad), case.config,
                                       case.mask, case.scale)
    assert calls == [case.delta.shape] and bool((out == 7).all())


@pytest.mark.parametrize("problem,expected", [
    ("float64", "dtype torch.float64"),
    ("mixed", "grad dtype"),
    ("requires_grad", "requires grad"),
    ("bad_mask", "mask shape"),
])
def test_inputs_the_kernel_cannot_take_fall_back_with_their_reason(monkeypatch, problem, expected):
    monkeypatch.setattr(dispatch, "extension_loaded", lambda: True)
    monkeypatch.setattr(dispatch, "adv_project_op", lambda *a, **k: pytest.fail("op called"))
    case = _case(torch.float64 if problem == "float64" else torch.float32)
    delta, grad, mask = case.delta, case.grad, case.mask
    if problem == "mixed":
        grad = grad.to(torch.bfloat16)
    if problem == "requires_grad":
        delta = delta.clone().requires_grad_()
    if problem == "bad_mask":
        mask = mask[:, :3]
    with pytest.warns(KernelFallbackWarning, match=expected):
        try:
            alum.kernels.adv_project(fake_cuda(delta), fake_cuda(grad), case.config, mask,
                                     case.scale)
        except ValueError:
            assert problem == "bad_mask"  # the reference raises its usual error


@pytest.mark.parametrize("setting,expected", [
    ({"ALUM_KERNELS_DISABLE": "1"}, "ALUM_KERNELS_DISABLE"),
    ({}, "CPU-only build" if torch.version.cuda is None else None),
])
def test_loader_reasons(monkeypatch, setting, expected):
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    reason = ext.why_not_loadable()
    if expected is None:
        pytest.skip("CUDA build of torch: the CPU-only reason does not apply")
    assert expected in reason


def test_loader_reasons_on_a_cuda_build_without_device_or_compiler(monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA device" in ext.why_not_loadable()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(ext, "prebuilt_libraries", lambda: [])
    monkeypatch.setenv("ALUM_KERNELS_JIT", "0")
    assert "ALUM_KERNELS_JIT=0" in ext.why_not_loadable()
    monkeypatch.setenv("ALUM_KERNELS_JIT", "1")
    monkeypatch.setattr(ext, "nvcc_path", lambda: None)
    assert "no nvcc" in ext.why_not_loadable()
    monkeypatch.setattr(ext, "nvcc_path", lambda: "/usr/bin/true")
    assert ext.why_not_loadable() is None


def test_a_failing_build_is_a_reason_not_an_exception(monkeypatch):
    from torch.utils import cpp_extension
    monkeypatch.setattr(ext, "why_not_loadable", lambda: None)
    monkeypatch.setattr(ext, "prebuilt_libraries", lambda: [])

    def broken_load(**kwargs):
        raise RuntimeError("Error building extension 'alum_adv_project_cuda'\nnvcc failed")

    monkeypatch.setattr(cpp_extension, "load", broken_load)
    ext.reset_extension_state()
    try:
        state = ext.extension_state(build=True)
        assert not state.loaded and "just-in-time build failed: nvcc failed" in state.reason
    finally:
        ext.reset_extension_state()


def test_cli_check_reports_each_op_and_why(capsys):
    assert cli_main(["--check", "--no-build"]) == 0
    out = capsys.readouterr().out
    assert "adv_project" in out and "fused_symmetric_kl" in out and "why:" in out
    assert cli_main(["--check", "--no-build", "--json"]) == 0
    rep = json.loads(capsys.readouterr().out)
    ops = {op["op"]: op for op in rep["ops"]}
    assert ops["adv_project"]["cpu_path"] == "pytorch-reference"
    if not torch.cuda.is_available():
        assert ops["adv_project"]["cuda_path"] == "pytorch-reference"
        assert cli_main(["--check", "--no-build", "--strict"]) == 1


@pytest.mark.slow
def test_module_and_console_script_run(tmp_path):
    env = {**os.environ, "PYTHONPATH": ""}
    out = subprocess.run([sys.executable, "-m", "alum.kernels", "--check", "--no-build"],
                         cwd=tmp_path, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "adv_project" in out.stdout
    scripts = {ep.name: ep.value
               for ep in importlib.metadata.entry_points(group="console_scripts")}
    assert scripts.get("alum-kernels") == "alum.kernels.cli:main"
