"""One clear warning the first time a fused op falls back to its reference.

A fallback costs speed (docs/kernels.md, "Targets and measured figures"), so the user
hears about it once per op and process, with the reason (an unbuilt extension, unsuited
inputs; for ``adv_project`` also CPU tensors, which have no kernel), and
``python -m alum.kernels --check`` says more.
"""
from __future__ import annotations

import warnings
from typing import Dict

_WARNED: Dict[str, str] = {}


class KernelFallbackWarning(RuntimeWarning):
    """A fused kernel was not used; the PyTorch reference ran instead."""


def warn_fallback_once(op: str, reason: str) -> None:
    """Warn that ``op`` fell back to the reference on CUDA tensors, once per op."""
    if op in _WARNED:
        return
    _WARNED[op] = reason
    warnings.warn(
        f"alum.kernels.{op}: the fused kernel is not used on these tensors ({reason}); "
        f"running the PyTorch reference instead. This warning is shown once; "
        f"`python -m alum.kernels --check` reports which path is active and why.",
        KernelFallbackWarning, stacklevel=3)


def fallback_warnings_seen() -> Dict[str, str]:
    """The ops that warned so far and why (for the report and the tests)."""
    return dict(_WARNED)


def reset_fallback_warnings() -> None:
    """Forget the warnings already given (tests)."""
    _WARNED.clear()
