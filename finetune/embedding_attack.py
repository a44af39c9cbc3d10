"""PGD in the embedding space: the attack that matches ALUM's threat model.

ALUM trains against perturbations δ of the embedding output (after word + position +
type embeddings, LayerNorm and dropout), one δ per token, in a norm ball
(docs/algorithm.md, "Objective"). The attack here searches the same space, but with the
gold label: it maximises the task loss (cross-entropy over classes or choices; start +
end cross-entropy for span QA) with projected gradient ascent (Madry et al., 2018):

    δ ← Π_ε( δ + η · sign(g) )          (L∞)
    δ ← Π_ε( δ + η · g / ‖g‖₂ )         (L2, per token)

Π clamps each element to [−ε, ε] (L∞) or rescales tokens whose norm exceeds ε (L2).
Both are ALUM's own update (``alum.kernels.adv_project``, the ``project`` rule: the fused
kernel on CUDA when built): its step η·g/‖g‖ is the L2 step, and given sign(g), whose
max-norm is 1, it is the L∞ step. ε and η are absolute, or (``relative``) multiples of each token's own embedding norm
in the same norm, like ``AlumConfig.epsilon_scale="relative"``. Padding tokens keep
δ = 0. The model stays in eval mode (no dropout), and δ is injected through
``EmbeddingSite`` without re-running the embeddings, so with ε = 0 the attacked
forward equals the clean one exactly.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

import torch
import torch.nn.functional as F

from alum import AlumConfig
from alum.kernels import adv_project_dispatch
from alum.perturbation import embedding_scale

from .embedding_site import EmbeddingSite
from .trainer import LABEL_KEYS, embedding_mask, head_logits

NORMS = ("inf", "l2")


@dataclass
class AttackConfig:
    radius: float
    """ε: the norm-ball radius per token (absolute, or relative to the token's norm)."""
    norm: str = "inf"
    """``inf`` or ``l2``, per token over the hidden dimension."""
    steps: int = 10
    """PGD iterations."""
    step_size: Optional[float] = None
    """η, in the same units as ε; default 2.5·ε/steps (Madry et al.'s rule of thumb)."""
    relative: bool = False
    """ε and η are multiples of each token's embedding norm (in ``norm``)."""
    random_start: bool = False
    """Start from a uniform point in the ball instead of δ = 0."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"attack norm must be one of {NORMS}, got {self.norm!r}")
        if not self.radius >= 0:
            raise ValueError(f"attack radius must be >= 0, got {self.radius!r}")
        if self.steps < 0:
            raise ValueError(f"attack steps must be >= 0, got {self.steps!r}")
        if self.step_size is not None and not self.step_size >= 0:
            raise ValueError(f"attack step size must be >= 0, got {self.step_size!r}")

    @property
    def eta(self) -> float:
        if self.step_size is not None:
            return self.step_size
        return 2.5 * self.radius / max(self.steps, 1)


def task_loss(outputs: Any, batch: Dict[str, torch.Tensor], mask: Optional[torch.Tensor]
              ) -> torch.Tensor:
    """Summed (not averaged) loss w.r.t. the gold targets, so that each example's δ gets
    its own gradient undiluted by the batch size."""
    if "start_positions" in batch:
        start, end = head_logits(outputs, mask)
        return (F.cross_entropy(start.float(), batch["start_positions"], reduction="sum")
                + F.cross_entropy(end.float(), batch["end_positions"], reduction="sum"))
    logits = outputs.logits.float()
    return F.cross_entropy(logits, batch["labels"], reduction="sum")


def update_rule(config: AttackConfig) -> AlumConfig:
    """The attack's projected step as ALUM's ``project`` rule (per token, in ``norm``)."""
    return AlumConfig(update="project", norm=config.norm, level="token",
                      step_size=config.eta, epsilon=config.radius,
                      epsilon_scale="relative" if config.relative else "absolute")


def attacked_outputs(model: torch.nn.Module, batch: Dict[str, torch.Tensor],
                     config: AttackConfig,
                     loss_fn: Callable[..., torch.Tensor] = task_loss) -> Any:
    """The model's outputs on the batch after a PGD attack in the embedding space.

    ``batch`` holds the model inputs and the gold targets (``labels``, or
    ``start_positions``/``end_positions``). The model must be in eval mode.
    """
    if model.training:
        raise RuntimeError("attack a model in eval mode (dropout would randomise the attack)")
    site = EmbeddingSite(model)
    inputs = {k: v for k, v in batch.items() if k not in LABEL_KEYS}
    with torch.no_grad(), site.capture():
        model(**inputs)
    if site.output is None:
        raise RuntimeError("the model never called its embeddings module")
    embeds = site.output.detach()
    mask = embedding_mask(batch.get("attention_mask"), embeds)
    delta = torch.zeros_like(embeds)
    if config.radius > 0:
        rule = update_rule(config)
        unit = embedding_scale(embeds, rule, mask)  # None for absolute units
        if config.random_start:
            gen = torch.Generator(device=embeds.device).manual_seed(config.seed)
            noise = torch.rand(embeds.shape, generator=gen, device=embeds.device,
                               dtype=embeds.dtype) * 2 - 1
            box = noise * (config.radius if unit is None else config.radius * unit)
            # A zero gradient makes the update a pure projection Π_ε (and zeroes padding).
            delta = adv_project_dispatch.adv_project(box.to(embeds.dtype), torch.zeros_like(
                embeds), rule, mask, unit)
        for _ in range(config.steps):
            d = delta.clone().requires_grad_(True)
            with torch.enable_grad(), site.inject(embeds + d):
                loss = loss_fn(model(**inputs), batch, mask)
                # Gradient w.r.t. δ only: autograd skips the weight-gradient matmuls.
                (g,) = torch.autograd.grad(loss, d)
            direction = g.sign() if config.norm == "inf" else g
            delta = adv_project_dispatch.adv_project(delta, direction, rule, mask, unit)
    with torch.no_grad(), site.inject(embeds + delta):
        return model(**inputs)
