"""Fixtures of the fused-kernel tests: fresh fallback warnings, the Triton interpreter."""
import pytest
import torch


@pytest.fixture(autouse=True)
def fresh_fallback_warnings():
    from alum.kernels.fallback import reset_fallback_warnings
    reset_fallback_warnings()
    yield
    reset_fallback_warnings()


@pytest.fixture
def triton_interpreter():
    """The Triton kernels module, running on CPU tensors through the interpreter.

    TRITON_INTERPRET=1 must be set before triton is first imported (torch.compile or
    deepspeed may import it earlier in a pytest session), so these tests run in-process
    only in a session started with it; test_sym_kl.py runs them in a fresh process with
    the variable set. On a CUDA machine the compiled kernels are tested by the gpu tests.
    """
    from alum.kernels.sym_kl import triton_interpreter_on, triton_state
    ok, why = triton_state()
    if not ok:
        pytest.skip(f"Triton unavailable: {why}")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the compiled Triton kernels are tested by the gpu tests")
    if not triton_interpreter_on():
        pytest.skip("triton was imported without TRITON_INTERPRET=1; "
                    "test_sym_kl.py::test_triton_interpreter_suite runs these in a fresh process")
    import alum.kernels.sym_kl_triton as kernels
    yield kernels


class FakeCudaTensor(torch.Tensor):
    """A CPU tensor that claims to be on CUDA: drives the path selection without a GPU."""

    @property
    def is_cuda(self):
        return True


def fake_cuda(t):
    return t.as_subclass(FakeCudaTensor)


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA device (run benchmarks/kernels_gpu_check.sh "
                                       "on a CUDA machine)")
