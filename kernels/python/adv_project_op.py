"""The custom op ``alum::adv_project``: schema, reference implementation and fake impl.

The schema is defined here, in Python, so that the op exists (and torch.compile can
trace it through its fake implementation) on every machine. The implementation
registered here is the PyTorch reference (``alum.perturbation.adv_project``) under
``CompositeExplicitAutograd``, so the op runs on any device; the CUDA extension
(kernels/csrc/adv_project_binding.cpp), once loaded, registers a ``CUDA`` kernel, which
the dispatcher prefers for CUDA tensors.

The op returns ``(new_delta, nonfinite)``: the new δ (contiguous, δ's dtype) and a 0-dim
bool tensor that is True when a non-padding row of ``grad`` holds NaN or Inf (skip the
adversarial term of such a step: docs/algorithm.md, "Algorithm 1"). ``scale`` is
flattened to one value per norm group: per token row for ``level="token"``, per sequence
for ``level="sequence"``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import torch

from alum.perturbation import adv_project as reference_adv_project

OP_NAME = "alum::adv_project"
SCHEMA = ("adv_project(Tensor delta, Tensor grad, Tensor? mask, Tensor? scale, str update, "
          "str norm, str level, float step_size, float epsilon, float radius) -> (Tensor, Tensor)")

# FRAGMENT: other parts of alum may add ops to the same namespace.
_LIBRARY = torch.library.Library("alum", "FRAGMENT")
_LIBRARY.define(SCHEMA)


@dataclass(frozen=True)
class UpdateFields:
    """The fields of ``AlumConfig`` that the update reads (the op carries no full config)."""

    update: str
    norm: str
    level: str
    step_size: float
    epsilon: float
    normalize_radius: float


def norm_shape(delta: torch.Tensor, level: str) -> Tuple[int, ...]:
    """The shape of a row norm: ``[..., 1]`` (token) or ``[batch, 1, ..., 1]`` (sequence)."""
    if level == "token":
        return tuple(delta.shape[:-1]) + (1,)
    return (delta.shape[0],) + (1,) * (delta.dim() - 1)


def nonfinite_rows(grad: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """True when a non-padding row of ``grad`` holds NaN or Inf (the kernel's flag)."""
    bad_rows = ~torch.isfinite(grad).all(dim=-1)
    if mask is not None:
        bad_rows = bad_rows & (mask.to(bad_rows.device) != 0)
    return bad_rows.any()


@torch.library.impl(_LIBRARY, "adv_project", "CompositeExplicitAutograd")
def _adv_project_reference(delta, grad, mask, scale, update, norm, level, step_size, epsilon,
                           radius):
    fields = UpdateFields(update, norm, level, step_size, epsilon, radius)
    if scale is not None:
        scale = scale.reshape(norm_shape(delta, level))
    new = reference_adv_project(delta, grad, fields, mask, scale)
    return new.contiguous(), nonfinite_rows(grad, mask)


@torch.library.register_fake(OP_NAME)
def _adv_project_fake(delta, grad, mask, scale, update, norm, level, step_size, epsilon,
                      radius):
    torch._check(delta.shape == grad.shape, lambda: "delta and grad must have one shape")
    return (torch.empty(delta.shape, dtype=delta.dtype, device=delta.device),
            torch.empty((), dtype=torch.bool, device=delta.device))


def adv_project_op(delta: torch.Tensor, grad: torch.Tensor, config,
                   mask: Optional[torch.Tensor] = None,
                   scale: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """Call ``torch.ops.alum.adv_project`` with the fields of ``config`` (an AlumConfig).

    ``scale`` may have any shape that broadcasts to the row norm's; it is flattened to
    one value per norm group here.
    """
    if scale is not None:
        scale = scale.expand(norm_shape(delta, config.level)).reshape(-1)
    return torch.ops.alum.adv_project(
        delta, grad, mask, scale, config.update, config.norm, config.level,
        float(config.step_size), float(config.epsilon), float(config.normalize_radius))
