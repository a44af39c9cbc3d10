"""The divergences D of ALUM's adversarial term (docs/algorithm.md, "Divergences").

KL(p ‖ q) = Σ p (log p − log q), summed over the class dimension (the last one)
and averaged over examples, or over the unmasked positions when the logits are
per token. Every softmax runs in fp32 (or wider), whatever the model's dtype.

A model output may be one logits tensor or a tuple of them (span QA: start and
end logits); the divergence of a tuple is the sum over its members.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from .perturbation import compute_dtype

Logits = Union[torch.Tensor, Sequence[torch.Tensor]]


def as_tuple(logits: Logits) -> Tuple[torch.Tensor, ...]:
    if isinstance(logits, torch.Tensor):
        return (logits,)
    return tuple(logits)


def detach_logits(logits: Logits) -> Logits:
    if isinstance(logits, torch.Tensor):
        return logits.detach()
    return tuple(t.detach() for t in logits)


def _row_mean(values: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of per-row values; over the mask's 1-positions when it matches the rows."""
    if mask is not None and tuple(mask.shape) == tuple(values.shape):
        w = mask.to(device=values.device, dtype=values.dtype)
        return (values * w).sum() / w.sum().clamp_min(1.0)
    return values.mean()


def kl_rows(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax p ‖ softmax q) per row, in fp32 or wider."""
    dtype = compute_dtype(torch.promote_types(p_logits.dtype, q_logits.dtype))
    log_p = F.log_softmax(p_logits.to(dtype), dim=-1)
    log_q = F.log_softmax(q_logits.to(dtype), dim=-1)
    return (log_p.exp() * (log_p - log_q)).sum(dim=-1)


def mse_rows(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared error per row for regression outputs ([B] or [B, k])."""
    dtype = compute_dtype(torch.promote_types(a.dtype, b.dtype))
    diff = a.to(dtype) - b.to(dtype)
    if diff.dim() == 1:
        return diff.pow(2)
    return diff.pow(2).sum(dim=-1)


def ascent_divergence(kind: str, adv: Logits, clean: Logits,
                      mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """D inside the ascent loop: KL(stopgrad p_clean ‖ p_adv), or squared error for ``mse``."""
    total = None
    for a, c in zip(as_tuple(adv), as_tuple(clean)):
        c = c.detach()
        rows = mse_rows(a, c) if kind == "mse" else kl_rows(c, a)
        term = _row_mean(rows, mask)
        total = term if total is None else total + term
    return total


def adversarial_divergence(kind: str, adv: Logits, clean: Logits,
                           mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The final adversarial term (before α).

    ``sym_kl``: KL(stopgrad p_clean ‖ p_adv) + KL(stopgrad p_adv ‖ p_clean); the second
    term sends gradient into the clean logits. ``kl``: the first term only. ``mse``:
    squared error, with gradient into both branches.
    """
    total = None
    for a, c in zip(as_tuple(adv), as_tuple(clean)):
        if kind == "mse":
            rows = mse_rows(a, c)
        elif kind == "kl":
            rows = kl_rows(c.detach(), a)
        elif kind == "sym_kl":
            rows = kl_rows(c.detach(), a) + kl_rows(a.detach(), c)
        else:
            raise ValueError(f"unknown adversarial loss {kind!r}")
        term = _row_mean(rows, mask)
        total = term if total is None else total + term
    return total


def flip_rate(adv: Logits, clean: Logits,
              mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Share of predictions (argmax over the class dimension) that the perturbation flips."""
    rates = []
    for a, c in zip(as_tuple(adv), as_tuple(clean)):
        flipped = (a.detach().argmax(dim=-1) != c.detach().argmax(dim=-1)).float()
        rates.append(_row_mean(flipped, mask))
    return torch.stack(rates).mean()


DivergenceFn = Callable[[Logits, Logits, Optional[torch.Tensor]], torch.Tensor]
LogitsGradFn = Callable[[torch.Tensor, torch.Tensor, Optional[torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class Divergences:
    """The three functions of (adv, clean, mask) that ALUM's term is built from.

    The defaults (``for_loss``) take whole logits. A layout that splits the class
    dimension (vocabulary-parallel MLM logits under tensor parallelism) supplies
    functions that reduce across its shards; the core never looks inside the logits.
    """

    ascent: DivergenceFn
    """D in the ascent loop; only its gradient with respect to ``adv`` is used."""
    final: DivergenceFn
    """The final term (before α), with gradient into both branches where the loss has it."""
    flips: Optional[DivergenceFn]
    """Share of predictions the perturbation flips (None: not a classification)."""
    ascent_grad: Optional[LogitsGradFn] = None
    """∂ascent/∂adv computed directly (e.g. ``alum.kernels.sym_kl.symmetric_kl_adv_grad``),
    from which the ascent starts its backward pass; None: autograd through ``ascent``."""

    @classmethod
    def for_loss(cls, kind: str) -> "Divergences":
        def ascent(adv, clean, mask):
            return ascent_divergence(kind, adv, clean, mask)

        def final(adv, clean, mask):
            return adversarial_divergence(kind, adv, clean, mask)

        return cls(ascent, final, None if kind == "mse" else flip_rate)
