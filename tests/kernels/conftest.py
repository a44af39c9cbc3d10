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
def triton_interpreter(monkeypatch):
    """Run the Triton kernels on CPU tensors with TRITON_INTERPRET=1.

    Triton reads the variable when a kernel is defined, so it must be set before
    alum.kernels.sym_kl_triton is first imported; on a CUDA machine the compiled kernels
    are tested by the gpu tests instead (one process cannot hold both).
    """
    from alum.kernels.sym_kl import triton_state
    ok, why = triton_state()
    if not ok:
        pytest.skip(f"Triton unavailable: {why}")
    if torch.cuda.is_available():
        pytest.skip("CUDA present: the compiled Triton kernels are tested by the gpu tests")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import alum.kernels.sym_kl_triton as kernels
    if type(kernels._sym_kl_stats_kernel).__name__ != "InterpretedFunction":
        pytest.skip("alum.kernels.sym_kl_triton was imported before TRITON_INTERPRET=1")
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
                                       "on the GPU machine)")
