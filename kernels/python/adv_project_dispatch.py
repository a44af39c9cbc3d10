"""``alum.kernels.adv_project``: the fused update on CUDA when built, else the reference.

Same signature and result as ``alum.adv_project`` (alum/perturbation.py, the oracle).
On CUDA tensors it calls the CUDA kernel of ``alum::adv_project`` when the extension is
loaded and the inputs suit it (fp32/bf16/fp16, one dtype and device); otherwise the
reference runs, with one KernelFallbackWarning naming the reason. On CPU tensors the
reference runs too (there is no CPU kernel), with one warning per process that says so.
Every ALUM training path (fine-tuning, the fast and lean orders, the pipeline's passes)
calls this dispatcher.
"""
from __future__ import annotations

from typing import Optional

import torch

from alum.perturbation import adv_project as reference_adv_project

from .adv_project_op import adv_project_op, norm_shape
from .extension import extension_loaded, extension_state
from .fallback import warn_fallback_once

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def unsupported_input_reason(delta: torch.Tensor, grad: torch.Tensor, config,
                             mask: Optional[torch.Tensor] = None,
                             scale: Optional[torch.Tensor] = None) -> Optional[str]:
    """Why these inputs cannot use the CUDA kernel (None if they can).

    Malformed inputs (shape mismatches) also return a reason: the reference then raises
    its usual error.
    """
    if delta.dtype not in KERNEL_DTYPES:
        return f"dtype {delta.dtype} (the kernel takes float32, bfloat16, float16)"
    if grad.dtype != delta.dtype:
        return f"grad dtype {grad.dtype} differs from delta dtype {delta.dtype}"
    if grad.device != delta.device:
        return "delta and grad live on different devices"
    if delta.shape != grad.shape or delta.dim() < 1:
        return "delta and grad shapes differ"
    if config.level == "sequence" and delta.dim() < 2:
        return "level='sequence' needs a [batch, ..., hidden] tensor"
    if mask is not None and tuple(mask.shape) != tuple(delta.shape[:-1]):
        return "the mask shape does not match"
    if scale is not None:
        try:
            torch.broadcast_shapes(tuple(scale.shape), norm_shape(delta, config.level))
        except RuntimeError:
            return "the scale does not broadcast to the row norms"
        if torch.broadcast_shapes(tuple(scale.shape), norm_shape(delta, config.level)) \
                != norm_shape(delta, config.level):
            return "the scale is larger than the row norms"
    if any(t is not None and t.requires_grad for t in (delta, grad)) and torch.is_grad_enabled():
        return "an input requires grad (the kernel has no backward; run the update under no_grad)"
    return None


def _kernel_reason(delta, grad, config, mask, scale) -> Optional[str]:
    """None when the CUDA kernel runs these inputs, else why not (only for CUDA tensors)."""
    reason = unsupported_input_reason(delta, grad, config, mask, scale)
    if reason is not None:
        return reason
    if not extension_loaded():
        return extension_state().reason
    return None


CPU_REASON = "there is no CPU kernel: the inputs are CPU tensors"


def adv_project(delta: torch.Tensor, grad: torch.Tensor, config,
                mask: Optional[torch.Tensor] = None,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One perturbation update (docs/algorithm.md, "Update rules"); returns the new δ.

    Drop-in for ``alum.adv_project``: the fused CUDA kernel on CUDA tensors when built,
    the PyTorch reference elsewhere (see the module docstring).
    """
    if delta.is_cuda:
        reason = _kernel_reason(delta, grad, config, mask, scale)
        if reason is None:
            return adv_project_op(delta, grad, config, mask, scale)[0]
        warn_fallback_once("adv_project", reason)
    else:
        warn_fallback_once("adv_project", CPU_REASON)
    return reference_adv_project(delta, grad, config, mask, scale)
