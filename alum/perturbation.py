"""The perturbation update of ALUM (docs/algorithm.md, "Update rules").

``adv_project`` is the pure-PyTorch reference of the fused kernel: the fused op
must compute exactly this arithmetic. Rows are tokens (``level="token"``, the
norm is taken over the hidden dimension) or whole sequences
(``level="sequence"``, over tokens × hidden). Padding rows (``mask == 0``) are
excluded from every reduction and always come out as δ = 0. The reductions
and the update run in fp32 (or wider, for float64 inputs) and the result is
written back in δ's dtype.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from .config import AlumConfig


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32, or the input's dtype when it is wider (float64 oracles)."""
    return torch.promote_types(dtype, torch.float32)


def reduce_dims(x: torch.Tensor, level: str) -> Tuple[int, ...]:
    """The dimensions one norm is taken over: the hidden size, or everything but the batch."""
    if level == "token":
        return (-1,)
    if x.dim() < 2:
        raise ValueError(f"level='sequence' needs a [batch, ..., hidden] tensor, got shape "
                         f"{tuple(x.shape)}")
    return tuple(range(1, x.dim()))


def row_norm(x: torch.Tensor, norm: str, level: str) -> torch.Tensor:
    """Norm of each row, kept as a broadcastable dimension ([..., 1] or [B, 1, ..., 1])."""
    dims = reduce_dims(x, level)
    if norm == "inf":
        return x.abs().amax(dim=dims, keepdim=True)
    if norm == "l2":
        return x.pow(2).sum(dim=dims, keepdim=True).sqrt()
    if norm == "l1":
        return x.abs().sum(dim=dims, keepdim=True)
    raise ValueError(f"unknown norm {norm!r}")


def row_mask(mask: Optional[torch.Tensor], x: torch.Tensor) -> Optional[torch.Tensor]:
    """The padding mask as a float tensor broadcastable over ``x`` (1 = real token)."""
    if mask is None:
        return None
    if tuple(mask.shape) != tuple(x.shape[:-1]):
        raise ValueError(f"mask shape {tuple(mask.shape)} must equal the perturbation's "
                         f"shape without its hidden dimension, {tuple(x.shape[:-1])}")
    return mask.to(device=x.device, dtype=compute_dtype(x.dtype)).unsqueeze(-1)


def scale_norm(config: AlumConfig) -> str:
    """The embedding norm that ``epsilon_scale="relative"`` measures against.

    The sign rule (``l1``) yields |δ_i| = r, an L-inf radius, so it is scaled by the
    L-inf norm of the embedding.
    """
    return "inf" if config.norm == "l1" else config.norm


def embedding_scale(embeds: torch.Tensor, config: AlumConfig,
                    mask: Optional[torch.Tensor] = None) -> Optional[torch.Tensor]:
    """Per-row multiplier of σ, η, ε and r: None (absolute units) or ‖embedding row‖.

    Padding rows are left out of a sequence's norm, as they are of δ's.
    """
    if config.epsilon_scale == "absolute":
        return None
    x = embeds.detach().to(compute_dtype(embeds.dtype))
    m = row_mask(mask, x)
    if m is not None:
        x = x * m
    return row_norm(x, scale_norm(config), config.level)


def unit_rows(x: torch.Tensor, norm: str, level: str) -> torch.Tensor:
    """x / ‖x‖ for each row, scale-free: a row whose norm is 0 stays 0.

    The zero guard is the only one: no additive γ in the denominator. An absolute γ
    would shrink the step of a row whose ‖g‖ is comparable to it (per-token gradients of
    a mean-reduced KL are ≈ 1e-6 early in fine-tuning) and make δ depend on the batch
    size that the mean divides by. Each row is divided by its largest magnitude first,
    so the L2 sum of squares neither underflows for tiny gradients nor overflows for
    large ones. Non-finite rows stay non-finite (the caller skips the step).
    """
    peak = row_norm(x, "inf", level)
    y = x / torch.where(peak > 0, peak, torch.ones_like(peak))
    if norm == "inf":
        return y  # every non-zero row now has max-norm exactly 1
    n = row_norm(y, norm, level)  # >= 1 on every non-zero row
    return y / torch.where(n > 0, n, torch.ones_like(n))


def ascent_step(grad: torch.Tensor, config: AlumConfig,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The vector added to δ before the projection/normalisation, in the compute dtype.

    ``project``: η·g/‖g‖, the normalised PGD step (every row with a non-zero gradient
    moves by exactly η in the config's norm, whatever ‖g‖ is). ``normalize``: η·g, the
    raw gradient step of the released code. ``grad`` must already be masked.
    """
    g = grad.to(compute_dtype(grad.dtype))
    eta = config.step_size if scale is None else config.step_size * scale
    if config.update == "project":
        return eta * unit_rows(g, config.norm, config.level)
    return eta * g


def adv_project(delta: torch.Tensor, grad: torch.Tensor, config: AlumConfig,
                mask: Optional[torch.Tensor] = None,
                scale: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One perturbation update (docs/algorithm.md, update rules 1 and 2); returns the new δ.

    Args:
        delta: current perturbation, ``[..., hidden]`` (``[batch, ..., hidden]`` for
            ``level="sequence"``).
        grad: ∇_δ of the ascent divergence, same shape as ``delta``.
        config: the rule (``update``), ``norm``, ``level``, η, ε, r and γ.
        mask: optional padding mask of shape ``delta.shape[:-1]``; rows where it is 0
            are excluded from the sequence-level norms and set to 0.
        scale: optional per-row multiplier of η, ε and r (``embedding_scale``), of the
            shape of a row norm.
    """
    if delta.shape != grad.shape:
        raise ValueError(f"delta shape {tuple(delta.shape)} != grad shape {tuple(grad.shape)}")
    dtype = compute_dtype(delta.dtype)
    d = delta.to(dtype)
    g = grad.to(dtype)
    m = row_mask(mask, d)
    if m is not None:
        # Zero the padding rows before any reduction: they must not enter a sequence norm.
        d = d * m
        g = g * m
    u = d + ascent_step(g, config, scale)
    if config.update == "project":
        eps = config.epsilon if scale is None else config.epsilon * scale
        if config.norm == "inf":
            # Π onto the L-inf ball: clamp each element to [-ε, ε].
            eps_t = torch.as_tensor(eps, dtype=dtype, device=u.device)
            new = torch.maximum(torch.minimum(u, eps_t), -eps_t)
        else:
            # Π onto the L2 ball: rescale only the rows whose norm exceeds ε.
            n = row_norm(u, "l2", config.level)
            factor = torch.where(n > eps, eps / n.clamp_min(torch.finfo(dtype).tiny),
                                 torch.ones_like(n))
            new = u * factor
    else:
        radius = config.normalize_radius if scale is None else config.normalize_radius * scale
        if config.norm == "l1":
            # The released code's "l1" is the sign of the step (mt_dnn/perturbation.py).
            new = radius * torch.sign(u)
        else:
            new = radius * unit_rows(u, config.norm, config.level)
    if m is not None:
        new = new * m
    return new.to(delta.dtype)
