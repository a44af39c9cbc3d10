"""Shared inputs and tolerances of the fused-op tests (CPU reference/op and GPU kernels).

The oracle of ``adv_project`` is tests/core/reference64.py, an independent float64
implementation written from docs/algorithm.md; the oracle of the symmetric KL is
``alum.adversarial_divergence`` evaluated in float64.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from alum import AlumConfig
from tests.core import reference64 as ref64

# Relative error bound per storage dtype, against the float64 oracle, measured on the
# tensor's largest element (errors of these rules scale with the row's magnitude): the
# fp32 reductions and divisions cost a few ulps, the final rounding half an ulp of the
# storage dtype (bf16: 2^-8, fp16: 2^-11).
ADV_PROJECT_RTOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.bfloat16: 8e-3,
                    torch.float16: 1e-3}
# Symmetric KL: loss relative error, gradient error relative to the largest gradient.
SYM_KL_LOSS_RTOL = {torch.float32: 2e-5, torch.bfloat16: 2e-5, torch.float16: 2e-5}
SYM_KL_GRAD_RTOL = {torch.float32: 2e-5, torch.bfloat16: 1e-2, torch.float16: 2e-3}

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
HIDDEN_SIZES = (7, 13, 769)  # odd and prime: no power-of-two assumption anywhere

# Every valid (update, norm) pair of the update rules (docs/algorithm.md), at both levels.
RULES = (("project", "inf"), ("project", "l2"), ("normalize", "inf"), ("normalize", "l2"),
         ("normalize", "l1"))
LEVELS = ("token", "sequence")


def config_for(update: str, norm: str, level: str) -> AlumConfig:
    # epsilon well inside the step so that the projection both clips and keeps elements.
    return AlumConfig(update=update, norm=norm, level=level, step_size=1e-2, epsilon=3e-3,
                      normalize_radius=0.5)


def config_dict(cfg: AlumConfig) -> Dict[str, object]:
    return {k: getattr(cfg, k) for k in ("update", "norm", "level", "step_size", "epsilon",
                                         "normalize_radius")}


@dataclass
class AdvCase:
    delta: torch.Tensor
    grad: torch.Tensor
    mask: Optional[torch.Tensor]
    scale: Optional[torch.Tensor]
    config: AlumConfig


def make_adv_case(batch: int, tokens: int, hidden: int, dtype: torch.dtype, update: str,
                  norm: str, level: str, masked: bool = True, scaled: bool = False,
                  seed: int = 0, device: str = "cpu") -> AdvCase:
    gen = torch.Generator().manual_seed(seed)
    delta = (torch.randn(batch, tokens, hidden, generator=gen) * 2e-3).to(dtype)
    # Gradients of very different sizes per row, as real ascent gradients are.
    row_size = torch.exp(torch.randn(batch, tokens, 1, generator=gen) * 2)
    grad = (torch.randn(batch, tokens, hidden, generator=gen) * row_size * 1e-3).to(dtype)
    mask = None
    if masked:
        lengths = torch.randint(1, tokens + 1, (batch,), generator=gen)
        mask = (torch.arange(tokens)[None, :] < lengths[:, None]).to(torch.long)
    cfg = config_for(update, norm, level)
    scale = None
    if scaled:
        shape = (batch, tokens, 1) if level == "token" else (batch, 1, 1)
        # In the compute dtype, as alum.perturbation.embedding_scale returns it.
        scale = (torch.rand(shape, generator=gen, dtype=torch.float64) + 0.5).to(
            torch.promote_types(dtype, torch.float32))
    to = (lambda t: None if t is None else t.to(device))
    return AdvCase(to(delta), to(grad), to(mask), to(scale), cfg)


def oracle_update(case: AdvCase) -> np.ndarray:
    """The new δ in float64 from the (already rounded) inputs, by reference64."""
    mask = None if case.mask is None else case.mask.cpu().numpy()
    scale = None
    if case.scale is not None:
        s = case.scale.double().cpu().numpy()
        batch, tokens = case.delta.shape[:2]
        scale = {(b, t): float(s[b, t if s.shape[1] > 1 else 0, 0])
                 for b in range(batch) for t in range(tokens)}
    return ref64.update(case.delta.double().cpu().numpy(), case.grad.double().cpu().numpy(),
                        config_dict(case.config), mask, scale)


def assert_close_to_oracle(out: torch.Tensor, expected: np.ndarray, dtype: torch.dtype,
                           what: str = "") -> None:
    got = out.double().cpu().numpy()
    err = np.abs(got - expected).max() if got.size else 0.0
    bound = ADV_PROJECT_RTOL[dtype] * max(np.abs(expected).max() if got.size else 0.0, 1e-30)
    assert err <= bound, f"{what}: max error {err:.3e} > {bound:.3e} ({dtype})"


def adv_cases(hidden_sizes=HIDDEN_SIZES, dtypes=DTYPES, device: str = "cpu",
              batch: int = 3, tokens: int = 5) -> Iterator[Tuple[str, AdvCase]]:
    """(name, case) over dtypes × hidden sizes × rules × levels, with masks and scales."""
    for i, (dtype, hidden, (update, norm), level) in enumerate(
            itertools.product(dtypes, hidden_sizes, RULES, LEVELS)):
        scaled = i % 2 == 1  # half the cases with epsilon_scale="relative" multipliers
        case = make_adv_case(batch, tokens, hidden, dtype, update, norm, level, masked=True,
                             scaled=scaled, seed=i, device=device)
        yield f"{dtype}-h{hidden}-{update}-{norm}-{level}-scaled{scaled}", case


def make_logits(shape: Tuple[int, ...], dtype: torch.dtype, seed: int = 0,
                device: str = "cpu", spread: float = 3.0, offset: float = 0.0):
    """Clean and adversarial logits: adv = clean + a perturbation (+ a constant offset)."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randn(shape, generator=gen) * spread
    adv = clean + torch.randn(shape, generator=gen) * 0.5 + offset
    return adv.to(device=device, dtype=dtype), clean.to(device=device, dtype=dtype)


def reference_sym_kl_float64(adv: torch.Tensor, clean: torch.Tensor,
                             mask: Optional[torch.Tensor] = None):
    """(loss, grad_adv, grad_clean) of adversarial_divergence("sym_kl") in float64."""
    from alum.divergence import adversarial_divergence
    a = adv.detach().double().cpu().requires_grad_()
    c = clean.detach().double().cpu().requires_grad_()
    m = None if mask is None else mask.double().cpu()
    loss = adversarial_divergence("sym_kl", a, c, m)
    loss.backward()
    return loss.detach(), a.grad, c.grad


def assert_sym_kl_close(loss, grad_adv, grad_clean, expected, dtype, what: str = "") -> None:
    exp_loss, exp_ga, exp_gc = expected
    loss_err = abs(float(loss) - float(exp_loss))
    assert loss_err <= SYM_KL_LOSS_RTOL[dtype] * max(abs(float(exp_loss)), 1e-6), \
        f"{what}: loss {float(loss)} vs {float(exp_loss)}"
    for name, got, exp in (("grad_adv", grad_adv, exp_ga), ("grad_clean", grad_clean, exp_gc)):
        err = (got.double().cpu() - exp).abs().max().item()
        bound = SYM_KL_GRAD_RTOL[dtype] * max(exp.abs().max().item(), 1e-30)
        assert err <= bound, f"{what}: {name} max error {err:.3e} > {bound:.3e}"
