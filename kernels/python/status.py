"""Which path each fused op takes on this machine, and why (``alum-kernels --check``)."""
from __future__ import annotations

import platform
from dataclasses import asdict, dataclass
from typing import Dict, List

import torch

from .extension import extension_state, nvcc_path
from .fallback import fallback_warnings_seen
from .sym_kl import triton_interpreter_on, triton_state, triton_unusable_reason


@dataclass(frozen=True)
class OpStatus:
    """The path an op takes on CUDA tensors (``cuda_path``) and on CPU tensors."""

    op: str
    cuda_path: str
    cpu_path: str
    reason: str


def op_statuses(build: bool = True) -> List[OpStatus]:
    """One status per fused op. ``build=True`` may compile the CUDA extension (JIT)."""
    ext = extension_state(build=build)
    adv = OpStatus(
        op="adv_project",
        cuda_path="cuda-kernel" if ext.loaded else "pytorch-reference",
        cpu_path="pytorch-reference",
        reason=ext.reason)
    triton_cuda = triton_unusable_reason(torch.device("cuda"))
    triton_cpu = triton_unusable_reason(torch.device("cpu"))
    ok, triton_why = triton_state()
    if triton_cuda is None and not torch.cuda.is_available():
        sym_reason = f"{triton_why}; no CUDA device visible here"
    else:
        sym_reason = triton_cuda or triton_why
    sym = OpStatus(
        op="fused_symmetric_kl",
        cuda_path="triton" if triton_cuda is None else "pytorch-passes",
        cpu_path="triton-interpreter" if triton_cpu is None else "pytorch-passes",
        reason=sym_reason)
    return [adv, sym]


def environment() -> Dict[str, str]:
    cuda = torch.cuda.is_available()
    ok, triton_why = triton_state()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch.version.cuda": str(torch.version.cuda),
        "device": torch.cuda.get_device_name(0) if cuda else "none (CPU only)",
        "nvcc": nvcc_path() or "not found",
        "triton": triton_why,
        "TRITON_INTERPRET": "1" if triton_interpreter_on() else "0",
    }


def report(build: bool = True) -> Dict[str, object]:
    return {"environment": environment(),
            "ops": [asdict(s) for s in op_statuses(build)],
            "fallback_warnings": fallback_warnings_seen()}


def format_report(rep: Dict[str, object]) -> str:
    lines = ["alum.kernels: environment"]
    for key, value in rep["environment"].items():
        lines.append(f"  {key:18s} {value}")
    lines.append("alum.kernels: active paths (on CUDA tensors / on CPU tensors)")
    for op in rep["ops"]:
        lines.append(f"  {op['op']:20s} cuda: {op['cuda_path']:18s} cpu: {op['cpu_path']}")
        lines.append(f"  {'':20s} why:  {op['reason']}")
    return "\n".join(lines)
