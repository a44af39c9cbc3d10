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
back-propagates together with its task loss. It drives ``AlumStep``, the same
stages that the pre-training orders call one by one (start, ascent, term,
statistics), each order at its own time.
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
from .split_term import SplitTerm

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
    ``AlumStep(freeze=model)`` does for the ascent. ``loss_scale`` multiplies D
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


def _mean_rows(values: torch.Tensor, m: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of per-row values ([..., 1] or [B, 1, ..., 1]) over the valid rows."""
    if m is None or values.dim() != m.dim():
        return values.mean()
    if values.shape == m.shape:  # token level: one value per token
        return (values * m).sum() / m.sum().clamp_min(1.0)
    return values.mean()  # sequence level: one value per sequence


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


class AlumStep:
    """ALUM's adversarial term for one batch, in the stages of Algorithm 1.

    Every training path drives these stages; the orders differ only in when they call
    them (docs/algorithm.md, "Cost model"):

    1. ``start()``: δ₀, the random start (Algorithm 1, line 1);
    2. K times ``gradient(forward_fn, clean_logits)`` (δ's gradient, the parameters
       frozen) then ``update(grad)`` (the projected step), or ``ascend`` for all K. A
       layout that computes δ's gradient itself (a pipeline schedule) calls
       ``ascent_divergence`` for its loss and ``update`` with the gradient;
    3. the term on ``perturbed_input()``'s logits: whole (``term``, one backward) or split
       into its perturbed and clean halves for two backward passes (``split``, then
       ``perturbed_half()`` and ``clean_half(clean_logits)``);
    4. ``stats(...)``: ``AdversarialStats``, or their parts where a layout holds only some
       of the tensors (``delta_stats`` where δ is, ``flips`` where the logits are).

    α is applied in one place, ``weighted``. A NaN/Inf gradient or term does not raise:
    the stage returns False, the term is 0 and ``stats`` says ``skipped=True``.

    Args (after the config, the clean embedding output ``embeds`` — None on a pipeline
    stage that holds no δ — and δ's padding mask ``mask``):
        init_noise: the random start; N(0, σ²) from ``generator`` when None.
        loss_scale: the fp16 loss scale for the inner gradient (see ``ascent_gradient``).
        divergences: D of the ascent, of the term and the flip rate
            (``Divergences.for_loss(config.loss)`` by default).
        all_finite: whether a gradient or term is usable; a layout whose ranks hold shards
            passes one that agrees across them, so that every rank skips together.
        freeze: the model whose parameters are frozen during the ascent (recommended
            for models with custom autograd functions, e.g. megatron-core's layers).
        update: the perturbation update; the reference by default, the training paths
            pass ``alum.kernels.adv_project`` (the fused kernel on CUDA when built).
        row_weights: the weights of the divergences' rows (the logits' leading dims);
            None: every row counts. ``adversarial_loss`` passes ``mask`` (the rows are
            δ's tokens); a layout whose KL rows are other positions passes its own.
        value_and_grad: (adv, clean, row weights) -> the term's value and gradient with
            respect to adv, no graph, for ``split`` (the symmetric KL's, whose gradient
            with respect to clean is its negative); None: each half is evaluated.
    """

    def __init__(self, config: AlumConfig, embeds: Optional[torch.Tensor],
                 mask: Optional[torch.Tensor] = None, *,
                 init_noise: Optional[torch.Tensor] = None, loss_scale: float = 1.0,
                 generator: Optional[torch.Generator] = None,
                 divergences: Optional[Divergences] = None,
                 all_finite: AllFinite = all_finite_local, freeze: Optional[nn.Module] = None,
                 update: UpdateFn = adv_project,
                 row_weights: Optional[torch.Tensor] = None,
                 value_and_grad: Optional[Callable[..., Tuple[torch.Tensor, torch.Tensor]]]
                 = None):
        self.config, self.embeds, self.mask = config, embeds, mask
        self.row_weights = row_weights
        self.divergences = divergences or Divergences.for_loss(config.loss)
        self.init_noise, self.generator, self.loss_scale = init_noise, generator, loss_scale
        self.all_finite, self.freeze, self.update_fn = all_finite, freeze, update
        self.value_and_grad = value_and_grad
        # δ (no graph, zero on padding): None before ``start`` and where δ is not held.
        self.delta: Optional[torch.Tensor] = None
        # The last ascent gradient (the non-finite one when the ascent was skipped).
        self.grad: Optional[torch.Tensor] = None
        # The gradient's share of the last update (``AdversarialStats.grad_share``).
        self.share = torch.zeros(())
        # ``embedding_scale`` of ``embeds``: the per-row multiplier of σ, η and ε.
        self.scale: Optional[torch.Tensor] = None
        # The term D before α (set by ``term`` or ``split``).
        self.value: Optional[torch.Tensor] = None
        # What was non-finite ("the ascent gradient", "the adversarial term"), and its value.
        self.skipped: Optional[str] = None
        self._bad: Optional[torch.Tensor] = None
        self._split: Optional[SplitTerm] = None

    # -- 1. the random start ----------------------------------------------------
    def start(self) -> torch.Tensor:
        """δ₀ (Algorithm 1, line 1): ``init_noise`` or N(0, σ²I), zero on padding."""
        embeds, noise = self.embeds, self.init_noise
        self.scale = embedding_scale(embeds, self.config, self.mask)
        if noise is None:
            self.delta = initial_noise(embeds, self.config, self.mask, self.scale,
                                       self.generator)
        elif noise.shape != embeds.shape:
            raise ValueError(f"init_noise shape {tuple(noise.shape)} != embeds shape "
                             f"{tuple(embeds.shape)}")
        else:
            delta = noise.detach().to(embeds.dtype)
            m = row_mask(self.mask, delta)
            self.delta = delta if m is None else (delta * m).to(embeds.dtype)
        self.grad = torch.zeros_like(self.delta)
        return self.delta

    # -- 2. the ascent ------------------------------------------------------------
    def ascent_divergence(self, adv_logits: Logits, clean_logits: Logits) -> torch.Tensor:
        """D of the ascent at the KL's rows, for a layout that back-propagates it itself."""
        return self.divergences.ascent(adv_logits, detach_logits(clean_logits),
                                       self.row_weights)

    def gradient(self, forward_fn: ForwardFn, clean_logits: Logits) -> torch.Tensor:
        """∇_δ of the ascent divergence at the current δ, the parameters frozen."""
        with frozen_parameters(self.freeze):
            grad, _ = ascent_gradient(forward_fn, self.embeds, self.delta, clean_logits,
                                      self.config, self.row_weights, self.loss_scale,
                                      self.divergences.ascent, self.divergences.ascent_grad)
        return grad

    def update(self, grad: Optional[torch.Tensor], finite: Optional[bool] = None) -> bool:
        """One ascent step on δ from ``grad`` (Algorithm 1, the δ line); False, δ unchanged
        and the term skipped when the gradient is not finite. ``finite``: the layout's
        verdict, agreed across its ranks (a stage without δ passes ``grad=None``)."""
        if self.delta is not None:  # a rank without δ only follows the verdict
            self.grad = grad
        if not (self.all_finite(grad) if finite is None else finite):
            self.skipped, self._bad = "the ascent gradient", grad
            return False
        if self.delta is not None:
            self.share = gradient_share(self.delta, grad, self.config,
                                        row_mask(self.mask, self.delta), self.scale)
            with torch.no_grad():
                self.delta = self.update_fn(self.delta, grad, self.config, self.mask,
                                            self.scale).detach()
        return True

    def ascend(self, forward_fn: ForwardFn, clean_logits: Logits) -> bool:
        """The K ascent steps of Algorithm 1 (``gradient`` then ``update``, K times);
        False when one was skipped."""
        clean = detach_logits(clean_logits)
        return all(self.update(self.gradient(forward_fn, clean))
                   for _ in range(self.config.steps))

    # -- 3. the term --------------------------------------------------------------
    def perturbed_input(self) -> torch.Tensor:
        """x + δ for the final perturbed pass (``embeds`` detached unless the config says
        the term sends gradient into the embedding layer through it)."""
        base = self.embeds.detach() if self.config.detach_embeddings else self.embeds
        return base + self.delta

    def weighted(self, value: torch.Tensor) -> torch.Tensor:
        """α · ``value``: the one place ALUM's weight is applied."""
        return self.config.alpha * value

    def term(self, adv_logits: Logits, clean_logits: Logits) -> torch.Tensor:
        """α·D(f(x+δ), f(x)) with gradient into both branches (Algorithm 1, the g_θ term);
        a zero when the ascent or the term was not finite."""
        if self.skipped is None:
            value = self.divergences.final(adv_logits, clean_logits, self.row_weights)
            if self._finite(value, self.all_finite):
                return self.weighted(value)
        return torch.zeros((), device=self.embeds.device, dtype=compute_dtype(self.embeds.dtype))

    def split(self, adv_logits: torch.Tensor, clean_logits: torch.Tensor,
              all_finite: Optional[AllFinite] = None) -> bool:
        """The term for two backward passes (alum.split_term): then ``perturbed_half()``
        and ``clean_half(...)``. False (skipped) when it is not finite (``all_finite``: a
        test other than the step's, for a rank that holds the logits alone)."""
        w, both = self.row_weights, self.value_and_grad
        split = SplitTerm(lambda a, c, _m: self.divergences.final(a, c, w),
                          None if both is None else (lambda a, c: both(a, c, w)),
                          adv_logits, clean_logits)
        if not self._finite(split.value, all_finite or self.all_finite):
            return False
        self._split = split
        return True

    def perturbed_half(self) -> torch.Tensor:
        """α·D with gradient into the perturbed logits only (back-propagate it once)."""
        return self.weighted(self._split.perturbed())

    def clean_half(self, clean_logits: torch.Tensor) -> torch.Tensor:
        """α·D with gradient into ``clean_logits`` (recomputed with a graph) only."""
        split, self._split = self._split, None
        return self.weighted(split.clean(clean_logits))

    @property
    def on(self) -> bool:
        """Whether the term counts: computed and finite."""
        return self.value is not None and self.skipped is None

    def run(self, forward_fn: ForwardFn, clean_logits: Logits
            ) -> Tuple[torch.Tensor, AdversarialStats]:
        """Every stage now, the term whole (one backward, with the caller's loss):
        ``(α·D or 0, stats)``. The fine-tuning loss and the fast order call this."""
        self.start()
        adv_logits = None
        if self.ascend(forward_fn, clean_logits):
            adv_logits = forward_fn(self.perturbed_input())  # the final pass, weight gradients on
        loss = self.term(adv_logits, clean_logits)
        return loss, self.stats(adv_logits, clean_logits)

    # -- 4. the statistics ----------------------------------------------------------
    def flips(self, adv_logits: Logits, clean_logits: Logits) -> Optional[torch.Tensor]:
        """Share of predictions δ flips (None: not a classification)."""
        if self.divergences.flips is None:
            return None
        return self.divergences.flips(detach_logits(adv_logits), detach_logits(clean_logits),
                                      self.row_weights)

    def delta_stats(self) -> Dict[str, torch.Tensor]:
        """``AdversarialStats``' fields that describe δ and its gradient."""
        m = row_mask(self.mask, self.delta)
        config, level = self.config, self.config.level
        with torch.no_grad():
            dtype = compute_dtype(self.delta.dtype)
            d, g = self.delta.to(dtype), self.grad.to(dtype)
            g = g if m is None else g * m
            size_norm = config.norm if config.norm != "l1" else "inf"
            dn = row_norm(d, size_norm, level)
            en = row_norm(self.embeds.detach().to(dtype), size_norm, level)
            dims = -1 if level == "token" else tuple(range(1, d.dim()))
            cos = (d * g).sum(dim=dims, keepdim=True) / (
                d.pow(2).sum(dim=dims, keepdim=True).sqrt()
                * g.pow(2).sum(dim=dims, keepdim=True).sqrt()).clamp_min(1e-30)
            return dict(grad_norm=_mean_rows(row_norm(g, config.norm, level), m),
                        delta_norm=_mean_rows(dn, m),
                        delta_rel_norm=_mean_rows(dn / en.clamp_min(1e-30), m),
                        cos_delta_grad=_mean_rows(cos, m), grad_share=self.share.detach())

    def stats(self, adv_logits: Optional[Logits] = None,
              clean_logits: Optional[Logits] = None) -> AdversarialStats:
        """``AdversarialStats`` of the step; NaN with ``skipped=True`` when the ascent or
        the term was dropped (a warning is logged, once per call)."""
        if self.on:
            return AdversarialStats(adv_loss=self.value.detach(), skipped=False,
                                    flip_rate=self.flips(adv_logits, clean_logits),
                                    **self.delta_stats())
        n_bad = int((~torch.isfinite(self._bad.detach())).sum())
        logger.warning("ALUM: %s has %d non-finite value(s); the adversarial term is skipped "
                       "for this step", self.skipped, n_bad)
        nan = torch.tensor(float("nan"))
        zero = torch.zeros((), device=self.embeds.device, dtype=compute_dtype(self.embeds.dtype))
        return AdversarialStats(adv_loss=zero, grad_norm=nan, delta_norm=nan,
                                delta_rel_norm=nan, cos_delta_grad=nan, grad_share=nan,
                                flip_rate=None if self.config.loss == "mse" else nan,
                                skipped=True)

    def _finite(self, value: torch.Tensor, all_finite: AllFinite) -> bool:
        """Keeps ``value`` as the term when ``all_finite`` accepts it, else skips it."""
        if all_finite(value):
            self.value = value
            return True
        self.skipped, self._bad = "the adversarial term", value
        return False


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
        search: ``AlumStep``'s keyword arguments (``init_noise``, ``loss_scale``,
            ``generator``, ``divergences``, ``all_finite``, ``freeze``, ``update``,
            ``row_weights``: the KL's row weights, ``mask`` by default).

    A NaN/Inf gradient or term does not crash: the term is 0 for that step, the stats
    say ``skipped=True`` and a warning is logged; the caller counts these.
    """
    search.setdefault("row_weights", mask)  # per-token logits: the KL's rows are δ's tokens
    return AlumStep(config, embeds, mask, **search).run(forward_fn, clean_logits)
