"""ALUM's adversarial term, independent of any model class (docs/algorithm.md).

The caller runs the clean forward pass itself (it needs the clean logits for its
own task loss) and hands over:

* ``forward_fn(perturbed_embeds) -> logits``: the model from the embedding output
  onwards (after word+position+type embeddings, their LayerNorm and dropout);
* ``embeds``: the clean embedding output that produced ``clean_logits``;
* ``clean_logits``: the clean output, with its graph when the symmetric KL must send
  gradient into it.

``adversarial_loss`` then runs Algorithm 1: a random start, K ascent steps on δ
alone, and the final term α·D(f(x+δ), f(x)) whose gradient the caller
back-propagates together with its task loss.
"""
from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, fields
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from .config import AlumConfig
from .divergence import DivergenceFn, Divergences, Logits, LogitsGradFn, detach_logits
from .perturbation import (adv_project, ascent_step, compute_dtype, embedding_scale,
                           row_mask, row_norm)

logger = logging.getLogger("alum")

ForwardFn = Callable[[torch.Tensor], Logits]
# (delta, grad, config, mask, scale) -> new delta: ``alum.adv_project`` (the reference) or
# a drop-in with the same result, such as ``alum.kernels.adv_project`` (the fused kernel
# on CUDA), which the training paths pass.
UpdateFn = Callable[..., torch.Tensor]


@dataclass
class AdversarialStats:
    """How adversarial one step was, so that a degenerate setting is visible
    (docs/algorithm.md, "Statistics that show a degenerate setting").

    Values are 0-dim tensors (no device sync until ``to_dict``); row means run over the
    unmasked tokens (``level="token"``) or the sequences (``level="sequence"``).
    """

    adv_loss: torch.Tensor
    """The adversarial divergence before α (0 when skipped)."""
    grad_norm: torch.Tensor
    """Mean row norm (the config's norm) of the last ascent gradient."""
    delta_norm: torch.Tensor
    """Mean row norm of the final δ."""
    delta_rel_norm: torch.Tensor
    """Mean of ‖δ‖ / ‖embedding‖ per row: the perturbation's size relative to the input."""
    cos_delta_grad: torch.Tensor
    """Mean cosine between the final δ and the last ascent gradient (≈0: δ is noise)."""
    grad_share: torch.Tensor
    """‖ascent step‖ / (‖ascent step‖ + ‖δ before it‖) at the last step: the share of the
    update that came from the gradient rather than from the random start."""
    flip_rate: Optional[torch.Tensor]
    """Share of predictions that δ flips (None for regression)."""
    skipped: bool
    """True when the gradient or the term was NaN/Inf and the term was dropped."""

    def to_dict(self) -> Dict[str, float]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if v is None:
                continue
            out[f.name] = float(v.item()) if isinstance(v, torch.Tensor) else float(v)
        return out


def initial_noise(embeds: torch.Tensor, config: AlumConfig,
                  mask: Optional[torch.Tensor] = None,
                  scale: Optional[torch.Tensor] = None,
                  generator: Optional[torch.Generator] = None,
                  z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """δ ~ N(0, σ²I) (Algorithm 1, line 1), zero on padding, in the embeddings' dtype.
    ``z``: the standard-normal draw to scale (a layout's own); drawn from ``generator``
    when None."""
    noise = torch.randn(embeds.shape, generator=generator, device=embeds.device,
                        dtype=compute_dtype(embeds.dtype)) if z is None else z
    sigma = config.noise_std if scale is None else config.noise_std * scale
    noise = noise * sigma
    m = row_mask(mask, noise)
    if m is not None:
        noise = noise * m
    return noise.to(embeds.dtype)


AllFinite = Callable[[torch.Tensor], bool]

# ``row_weights``' default: the divergences weight their rows by ``mask`` (δ's padding mask);
# a layout whose KL rows are not δ's tokens passes its own.
ROWS_OF_MASK: Any = object()


@contextlib.contextmanager
def frozen_parameters(model: Optional[nn.Module]) -> Iterator[None]:
    """The model's trainable parameters stop requiring gradients for the duration (the
    ascent's passes): no weight-gradient matmul, and megatron's frozen-weight linears
    save no input activations. ``None``: nothing is frozen."""
    frozen = [p for p in model.parameters() if p.requires_grad] if model is not None else []
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)


def all_finite_local(value: torch.Tensor) -> bool:
    """The default ``all_finite``: every element of this process's tensor is finite."""
    return bool(torch.isfinite(value.detach()).all())


def ascent_gradient(forward_fn: ForwardFn, base: torch.Tensor, delta: torch.Tensor,
                    clean_logits: Logits, config: AlumConfig,
                    mask: Optional[torch.Tensor] = None,
                    loss_scale: float = 1.0,
                    divergence: Optional[DivergenceFn] = None,
                    logits_grad: Optional[LogitsGradFn] = None) -> Tuple[torch.Tensor, Logits]:
    """g = ∇_δ D(f(base + δ), stopgrad f(x)) and the perturbed logits.

    The gradient is taken with respect to δ only: autograd never reaches a parameter's
    gradient hooks (ZeRO's buckets stay untouched), and PyTorch's own ops skip their
    weight-gradient matmuls. A custom autograd function may still compute them (megatron's
    linear layers do, measured: docs/alum_cost.md) unless the parameters are frozen, which
    ``find_perturbation(freeze=model)`` does for the ascent. ``loss_scale`` multiplies D
    before the backward pass and divides g after it: under fp16 the inner gradient would
    otherwise underflow (docs/algorithm.md, "Known faults of the reference code").
    ``mask``: the divergence's row weights. ``divergence`` defaults to the config's
    ``ascent_divergence``. ``logits_grad`` (single-tensor logits): ∂D/∂adv computed
    directly, where the backward pass then starts (see ``Divergences.ascent_grad``).
    """
    if divergence is None:
        divergence = Divergences.for_loss(config.loss).ascent
    d = delta.detach().requires_grad_(True)
    with torch.enable_grad():
        adv = forward_fn(base.detach() + d)
        if logits_grad is not None and isinstance(adv, torch.Tensor):
            start = logits_grad(adv, detach_logits(clean_logits), mask)
            if loss_scale != 1.0:
                start = start * loss_scale
            (g,) = torch.autograd.grad(adv, d, grad_outputs=start)
        else:
            div = divergence(adv, detach_logits(clean_logits), mask)
            (g,) = torch.autograd.grad(div * loss_scale, d)
    if loss_scale != 1.0:
        g = g / loss_scale
    return g, adv


@dataclass
class Perturbation:
    """δ after the K ascent steps of Algorithm 1, and what the statistics need."""

    delta: torch.Tensor
    """The final δ (no graph), zero on padding."""
    grad: torch.Tensor
    """The last ascent gradient."""
    share: torch.Tensor
    """The gradient's share of the last update (``AdversarialStats.grad_share``)."""
    skipped: Optional[str] = None
    """What was non-finite ("the ascent gradient"), or None."""


def _mean_rows(values: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of per-row values ([..., 1] or [B, 1, ..., 1]) over the valid rows."""
    if m is None or values.dim() != m.dim():
        return values.mean()
    if values.shape == m.shape:  # token level: one value per token
        return (values * m).sum() / m.sum().clamp_min(1.0)
    return values.mean()  # sequence level: one value per sequence


def _rows(row_weights: Optional[torch.Tensor],
          mask: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    return mask if row_weights is ROWS_OF_MASK else row_weights


def gradient_share(delta: torch.Tensor, grad: torch.Tensor, config: AlumConfig,
                   m: Optional[torch.Tensor], scale: Optional[torch.Tensor]) -> torch.Tensor:
    """‖ascent step‖ / (‖ascent step‖ + ‖δ‖) averaged over the valid rows (``m``:
    ``row_mask``): how much of the update ``adv_project`` is about to make comes from the
    gradient rather than from δ so far (``AdversarialStats.grad_share``)."""
    g = grad.to(compute_dtype(grad.dtype))
    if m is not None:
        g = g * m
    step = row_norm(ascent_step(g, config, scale), config.norm, config.level)
    before = row_norm(delta.to(step.dtype), config.norm, config.level)
    return _mean_rows(step / (step + before).clamp_min(torch.finfo(step.dtype).tiny), m)


def random_start(embeds: torch.Tensor, config: AlumConfig, mask: Optional[torch.Tensor],
                 scale: Optional[torch.Tensor], init_noise: Optional[torch.Tensor] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """δ₀ (Algorithm 1, line 1): ``init_noise`` (zeroed on padding) or ``initial_noise``."""
    if init_noise is None:
        return initial_noise(embeds, config, mask, scale, generator)
    if init_noise.shape != embeds.shape:
        raise ValueError(f"init_noise shape {tuple(init_noise.shape)} != embeds shape "
                         f"{tuple(embeds.shape)}")
    delta = init_noise.detach().to(embeds.dtype)
    m = row_mask(mask, delta)
    return delta if m is None else (delta * m).to(embeds.dtype)


def ascent_update(delta: torch.Tensor, grad: torch.Tensor, config: AlumConfig,
                  mask: Optional[torch.Tensor], scale: Optional[torch.Tensor],
                  update: UpdateFn = adv_project, all_finite: AllFinite = all_finite_local,
                  ) -> Tuple[torch.Tensor, Optional[torch.Tensor], Optional[str]]:
    """One ascent step on δ from its gradient (Algorithm 1, the δ line; ``mask``: δ's,
    ``scale``: ``embedding_scale``): ``(new δ, gradient share, None)``, or ``(δ, None,
    what was non-finite)`` when ``all_finite(grad)`` refuses it (the term is skipped)."""
    if not all_finite(grad):
        return delta, None, "the ascent gradient"
    share = gradient_share(delta, grad, config, row_mask(mask, delta), scale)
    with torch.no_grad():
        delta = update(delta, grad, config, mask, scale)
    return delta.detach(), share, None


def find_perturbation(forward_fn: ForwardFn, embeds: torch.Tensor, clean_logits: Logits,
                      config: AlumConfig, mask: Optional[torch.Tensor] = None,
                      init_noise: Optional[torch.Tensor] = None,
                      loss_scale: float = 1.0,
                      generator: Optional[torch.Generator] = None,
                      divergences: Optional[Divergences] = None,
                      all_finite: AllFinite = all_finite_local,
                      freeze: Optional[nn.Module] = None,
                      update: UpdateFn = adv_project,
                      row_weights: Optional[torch.Tensor] = ROWS_OF_MASK) -> Perturbation:
    """The random start and the K ascent steps of Algorithm 1 (δ only, no weight gradients).

    Args (after ``adversarial_loss``'s first five):
        init_noise: the random start; N(0, σ²) from ``generator`` when None.
        loss_scale: the fp16 loss scale for the inner gradient (see ``ascent_gradient``).
        all_finite: whether a gradient is usable; a layout whose ranks hold shards of δ
            passes one that agrees across them, so that every rank skips together.
        freeze: the model whose parameters are frozen during the ascent (recommended
            for models with custom autograd functions, e.g. megatron-core's layers).
        update: the perturbation update; the reference by default, the training paths
            pass ``alum.kernels.adv_project`` (the fused kernel on CUDA when built).
        row_weights: the divergences' row weights, when not ``mask`` (``ROWS_OF_MASK``).
    """
    divergences = divergences or Divergences.for_loss(config.loss)
    scale = embedding_scale(embeds, config, mask)
    delta = random_start(embeds, config, mask, scale, init_noise, generator)
    clean_detached = detach_logits(clean_logits)
    grad = torch.zeros_like(delta)
    share = torch.zeros(())
    for _ in range(config.steps):
        with frozen_parameters(freeze):
            grad, _ = ascent_gradient(forward_fn, embeds, delta, clean_detached, config,
                                      _rows(row_weights, mask), loss_scale, divergences.ascent,
                                      divergences.ascent_grad)
        delta, step_share, skipped = ascent_update(delta, grad, config, mask, scale, update,
                                                   all_finite)
        if skipped:
            return Perturbation(delta, grad, share, skipped=skipped)
        share = step_share
    return Perturbation(delta.detach(), grad, share)


def adversarial_loss(forward_fn: ForwardFn, embeds: torch.Tensor, clean_logits: Logits,
                     config: AlumConfig, mask: Optional[torch.Tensor] = None, **search: Any,
                     ) -> Tuple[torch.Tensor, AdversarialStats]:
    """α · D_sym(f(x+δ), f(x)) after K ascent steps on δ (Algorithm 1); returns (loss, stats).

    Args:
        forward_fn: maps a perturbed embedding output ``[B, T, H]`` to logits
            (a tensor, or a tuple of tensors whose divergences are summed).
        embeds: the clean embedding output ``[B, T, H]``.
        clean_logits: the clean forward's logits. Per-token logits ``[B, T, C]`` are
            averaged over ``mask``'s unmasked positions; pooled logits over examples.
        config: see ``AlumConfig``.
        mask: padding mask ``[B, T]`` (1 = token); padding gets δ = 0.
        search: ``find_perturbation``'s keyword arguments (``init_noise``, ``loss_scale``,
            ``generator``, ``divergences``, ``all_finite``, ``freeze``, ``update``,
            ``row_weights``); ``divergences`` (D of the ascent, of the final term and the
            flip rate) defaults to ``Divergences.for_loss(config.loss)``.

    A NaN/Inf gradient or term does not crash: the term is 0 for that step, the stats
    say ``skipped=True`` and a warning is logged; the caller counts these.
    """
    divergences = search.setdefault("divergences", Divergences.for_loss(config.loss))
    pert = find_perturbation(forward_fn, embeds, clean_logits, config, mask, **search)
    if pert.skipped:
        return skipped_term(embeds, pert.skipped, pert.grad, config)

    # The final perturbed pass, with parameter gradients (Algorithm 1, g_θ line).
    perturbed_input = (embeds if not config.detach_embeddings else embeds.detach()) \
        + pert.delta
    adv_logits = forward_fn(perturbed_input)
    row_weights = search.get("row_weights", ROWS_OF_MASK)
    term = divergences.final(adv_logits, clean_logits, _rows(row_weights, mask))
    if not search.get("all_finite", all_finite_local)(term):
        return skipped_term(embeds, "the adversarial term", term, config)
    stats = adversarial_stats(embeds, pert, term, adv_logits, clean_logits, config, mask,
                              divergences, row_weights)
    return config.alpha * term, stats


def adversarial_stats(embeds: torch.Tensor, pert: Perturbation, term: torch.Tensor,
                      adv_logits: Logits, clean_logits: Logits, config: AlumConfig,
                      mask: Optional[torch.Tensor], divergences: Divergences,
                      row_weights: Optional[torch.Tensor] = ROWS_OF_MASK) -> AdversarialStats:
    """The statistics of one adversarial term (see ``AdversarialStats``); ``mask``: δ's,
    ``row_weights``: the flip rate's."""
    flips = None if divergences.flips is None else divergences.flips(
        detach_logits(adv_logits), detach_logits(clean_logits), _rows(row_weights, mask))
    return AdversarialStats(adv_loss=term.detach(), flip_rate=flips, skipped=False,
                            **perturbation_stats(embeds, pert, config, mask))


def perturbation_stats(embeds: torch.Tensor, pert: Perturbation, config: AlumConfig,
                       mask: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    """``AdversarialStats``' fields that describe δ and its gradient (``mask``: δ's)."""
    m = row_mask(mask, pert.delta)
    with torch.no_grad():
        dtype = compute_dtype(pert.delta.dtype)
        d = pert.delta.to(dtype)
        g = pert.grad.to(dtype)
        if m is not None:
            g = g * m
        size_norm = config.norm if config.norm != "l1" else "inf"
        dn = row_norm(d, size_norm, config.level)
        en = row_norm(embeds.detach().to(dtype), size_norm, config.level)
        gn = row_norm(g, config.norm, config.level)
        dims = -1 if config.level == "token" else tuple(range(1, d.dim()))
        dot = (d * g).sum(dim=dims, keepdim=True)
        cos = dot / (d.pow(2).sum(dim=dims, keepdim=True).sqrt()
                     * g.pow(2).sum(dim=dims, keepdim=True).sqrt()).clamp_min(1e-30)
        return dict(grad_norm=_mean_rows(gn, m), delta_norm=_mean_rows(dn, m),
                    delta_rel_norm=_mean_rows(dn / en.clamp_min(1e-30), m),
                    cos_delta_grad=_mean_rows(cos, m), grad_share=pert.share.detach())


def skipped_term(embeds: torch.Tensor, what: str, value: torch.Tensor,
                 config: AlumConfig) -> Tuple[torch.Tensor, AdversarialStats]:
    """A zero term and NaN statistics with ``skipped=True``, logged once per call."""
    nan = torch.tensor(float("nan"))
    n_bad = int((~torch.isfinite(value.detach())).sum())
    logger.warning("ALUM: %s has %d non-finite value(s); the adversarial term is skipped for "
                   "this step", what, n_bad)
    zero = torch.zeros((), device=embeds.device, dtype=compute_dtype(embeds.dtype))
    stats = AdversarialStats(adv_loss=zero.detach(), grad_norm=nan, delta_norm=nan,
                             delta_rel_norm=nan, cos_delta_grad=nan, grad_share=nan,
                             flip_rate=None if config.loss == "mse" else nan, skipped=True)
    return zero, stats
