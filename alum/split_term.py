"""ALUM's final term back-propagated in two passes: the perturbed branch, then the clean one.

An order that keeps one activation graph alive at a time (the lean order, docs/algorithm.md
"Cost model") splits the gradient of D_sym(f(x+δ), f(x)) (Algorithm 1: the term in g_θ)
between two backward passes: pass 3 sends the term's gradient into the perturbed logits,
pass 4 (which recomputes the clean graph) into the clean logits. ``AlumStep.split``
(alum.adversarial) builds a ``SplitTerm`` and weights its halves by α.

For the symmetric KL with ALUM's stop-gradients, KL(sg p_clean ‖ p_adv) + KL(sg p_adv ‖
p_clean), the two gradients are one tensor and its negative: w·(p_adv − p_clean) with
respect to the perturbed logits (w: the row weight). So the term is evaluated once, value
and gradient (alum.kernels.symmetric_kl_value_and_grad, or its vocabulary-parallel
variant), and each pass injects its gradient. Other divergences (``kl``, ``mse``) are
evaluated in each pass with the other branch detached. Pass 3's gradient at the
embedding output is handed to pass 4's recomputation of it (``add_gradient``).
"""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch

from alum.divergence import DivergenceFn

ValueAndGrad = Callable[[torch.Tensor, torch.Tensor], Tuple[torch.Tensor, torch.Tensor]]


class _InjectGradient(torch.autograd.Function):
    """A scalar equal to ``value`` whose gradient with respect to ``x`` is ``sign·grad``."""

    @staticmethod
    def forward(ctx, x, value, grad, sign: float, consume: bool):
        ctx.save_for_backward(grad)
        ctx.sign, ctx.consume = sign, consume
        return value.detach().clone()

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        factor = grad_output * ctx.sign
        # consume: the last use of ``grad``, scaled in place instead of copied.
        out = grad.mul_(factor) if ctx.consume else grad * factor
        return out, None, None, None, None


class _AddGradient(torch.autograd.Function):
    """The identity, whose backward adds ``grad`` to the incoming gradient."""

    @staticmethod
    def forward(ctx, x, grad):
        ctx.save_for_backward(grad)
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        (grad,) = ctx.saved_tensors
        return grad_output + grad, None


def add_gradient(x: torch.Tensor, grad: Optional[torch.Tensor]) -> torch.Tensor:
    """``x``, which also receives ``grad`` (an earlier pass's gradient into a tensor equal to
    ``x``) in the backward pass; ``x`` itself when ``grad`` is None."""
    return x if grad is None else _AddGradient.apply(x, grad)


def with_gradient(x: torch.Tensor, value: torch.Tensor, grad: torch.Tensor,
                  sign: float = 1.0, consume: bool = False) -> torch.Tensor:
    """``value`` (a scalar) as a function of ``x`` whose gradient is ``sign · grad``.

    ``consume``: ``grad`` is not needed afterwards and may be overwritten by the backward.
    """
    return _InjectGradient.apply(x, value, grad, sign, consume)


class SplitTerm:
    """The divergence between the perturbed and the clean logits, for two backward passes.

    ``perturbed()`` is the term with gradient into the perturbed logits only; after its
    backward, ``clean(clean_logits)`` is the term with gradient into the (recomputed)
    clean logits only. Their gradients sum to the term's full gradient.
    """

    def __init__(self, final: DivergenceFn, value_and_grad: Optional[ValueAndGrad],
                 adv: torch.Tensor, clean: torch.Tensor):
        self._final = final
        self._adv: Optional[torch.Tensor] = adv
        self._grad: Optional[torch.Tensor] = None
        if value_and_grad is not None:
            self.value, self._grad = value_and_grad(adv, clean)
            self._perturbed = with_gradient(adv, self.value, self._grad)
        else:
            self._perturbed = final(adv, clean.detach(), None)
            self.value = self._perturbed.detach()

    def perturbed(self) -> torch.Tensor:
        """The term (to back-propagate once), gradient into the perturbed logits only.
        Drops this object's reference to the perturbed graph."""
        term, self._perturbed = self._perturbed, None
        if self._grad is not None:
            self._adv = None  # pass 4 needs only the gradient
        else:
            self._adv = self._adv.detach()
        return term

    def clean(self, clean: torch.Tensor) -> torch.Tensor:
        """The term, gradient into ``clean`` (the clean logits, recomputed with a graph)."""
        if self._grad is not None:
            grad, self._grad = self._grad, None
            if grad.shape != clean.shape:
                raise ValueError(f"SplitTerm.clean: clean logits of shape {tuple(clean.shape)}"
                                 f" for a gradient of shape {tuple(grad.shape)}")
            return with_gradient(clean, self.value, grad, sign=-1.0, consume=True)
        return self._final(self._adv, clean, None)
