"""Typed configuration of ALUM's adversarial term (spec: docs/algorithm.md).

Every field has one docstring and is validated in ``__post_init__``; an
invalid value raises ``ValueError`` naming the field, so a bad combination is
rejected when the config is built, not half-way through a training run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict

from .config_base import ConfigMixin, check_bool, check_choice, check_int, check_number

NORMS = ("inf", "l2", "l1")
LEVELS = ("token", "sequence")
UPDATES = ("project", "normalize")
LOSSES = ("sym_kl", "kl", "mse")
EPSILON_SCALES = ("absolute", "relative")
DIRECTIONS = ("ascent", "none", "random", "free")


@dataclass
class AlumConfig(ConfigMixin):
    """Hyper-parameters of ALUM's adversarial regulariser (Algorithm 1 of the paper)."""

    alpha: float = 1.0
    """Weight α of the adversarial term. The paper uses 10 for pre-training, 1 for fine-tuning."""

    noise_std: float = 1e-5
    """σ of the random start δ ~ N(0, σ²I) (Algorithm 1, line 1). Relative to each
    token's embedding norm when ``epsilon_scale == "relative"``."""

    step_size: float = 1e-3
    """Ascent step η (Algorithm 1, the δ update). Relative to each token's embedding
    norm when ``epsilon_scale == "relative"``."""

    epsilon: float = 1e-5
    """Radius ε of the perturbation ball for the ``project`` rule (unused by ``normalize``)."""

    epsilon_scale: str = "absolute"
    """``"absolute"``: σ, η and ε are in embedding units. ``"relative"``: each is multiplied
    by the norm (``norm``, over the ``level``'s reduction) of the clean embedding of that
    token or sequence, so a radius means the same across models (docs/algorithm.md, "A measured warning")."""

    steps: int = 1
    """Number K of ascent steps (the paper uses K = 1). Used by ``direction="ascent"``
    only; the other directions run no ascent and ignore it."""

    norm: str = "inf"
    """Norm of the update: ``"inf"`` or ``"l2"``; ``"l1"`` (sign) only for ``normalize``."""

    level: str = "token"
    """Reduction of the norm: ``"token"`` (over the hidden size, per token) or
    ``"sequence"`` (over tokens × hidden, per sequence)."""

    update: str = "project"
    """``"project"``: δ ← Π_ε(δ + η·g/‖g‖), the default. ``"normalize"``:
    δ ← r·(δ + η·g)/‖δ + η·g‖, what the authors' released code does. Both divisions are
    scale-free: only a zero norm is guarded (that row then gets a zero step)."""

    normalize_radius: float = 1.0
    """Radius r of the ``normalize`` rule (the released code uses 1)."""

    loss: str = "sym_kl"
    """Adversarial term: ``"sym_kl"`` (symmetric KL, the paper), ``"kl"``
    (KL(stopgrad p_clean ‖ p_adv) only) or ``"mse"`` (regression heads)."""

    detach_embeddings: bool = True
    """If True the perturbed branch sees ``embeds.detach() + δ``: the adversarial term
    sends no gradient into the embedding layer through the perturbed input."""

    start_step: int = 0
    """Curriculum: the adversarial term is off before this optimizer step (0 = from the start)."""

    direction: str = "ascent"
    """Where δ comes from (docs/algorithm.md, "Cheaper variants"): ``"ascent"``: Algorithm 1
    (random start, K ascent steps); ``"none"``: δ = 0, the term compares two dropout passes
    (R-Drop); ``"random"``: the random start mapped into the ball by the update rule, no
    ascent; ``"free"``: the task loss's gradient at the embedding output from the clean
    backward, mapped into the ball by the update rule, no extra pass (the term then sends
    gradient into the perturbed branch only)."""

    fraction: float = 1.0
    """Share of the batch's sequences (examples) that get the adversarial term: the first
    ceil(fraction × rows) of each micro-batch; the term is averaged over those (0 < f <= 1)."""

    def __post_init__(self) -> None:
        for name in ("alpha", "noise_std", "step_size", "epsilon"):
            check_number(self, name, minimum=0.0)
        check_number(self, "normalize_radius", minimum=0.0, strict=True)
        check_choice(self, "norm", NORMS)
        check_choice(self, "level", LEVELS)
        check_choice(self, "update", UPDATES)
        check_choice(self, "loss", LOSSES)
        check_choice(self, "epsilon_scale", EPSILON_SCALES)
        check_choice(self, "direction", DIRECTIONS)
        check_number(self, "fraction", minimum=0.0, strict=True, maximum=1.0)
        check_int(self, "steps", 1)
        check_int(self, "start_step", 0)
        check_bool(self, "detach_embeddings")
        if self.norm == "l1" and self.update == "project":
            raise ValueError(
                "AlumConfig.norm='l1' (sign) exists only for update='normalize'; "
                "the project rule takes norm='inf' or norm='l2'")
        if self.direction == "free" and not self.detach_embeddings:
            raise ValueError(
                "AlumConfig.detach_embeddings=False does not fit direction='free': the clean "
                "graph is consumed by the clean backward that gives δ its direction, so the "
                "perturbed branch cannot send gradient into the embedding layer")
        if self.update == "project" and self.epsilon == 0.0 and self.alpha > 0.0:
            raise ValueError(
                "AlumConfig.epsilon must be > 0 for update='project' (a zero radius "
                "projects every perturbation to zero)")

    def active(self, step: int) -> bool:
        """Whether the adversarial term is on at optimizer step ``step`` (the curriculum)."""
        return self.alpha > 0.0 and step >= self.start_step

    @property
    def ascent_steps(self) -> int:
        """The ascent passes a step runs: K for ``direction="ascent"``, else 0."""
        return self.steps if self.direction == "ascent" else 0

    def adversarial_rows(self, rows: int) -> int:
        """How many of a micro-batch's ``rows`` sequences get the term: ceil(fraction × rows),
        at least 1 (the leading ones)."""
        # Rounded first so that e.g. 0.3 × 10 = 3.0000000000000004 gives 3, not 4.
        return max(1, min(rows, math.ceil(round(self.fraction * rows, 9))))

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "AlumConfig":
        """One of ``PRESETS`` with some fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown ALUM preset {name!r}; known: {sorted(PRESETS)}")
        values = dict(PRESETS[name])
        values.update(overrides)
        return cls(**values)


PRESETS: Dict[str, Dict[str, Any]] = {
    # The paper's settings (Section 3 and 4): sigma = eps = 1e-5, eta = 1e-3, K = 1, L-inf,
    # alpha = 10 for pre-training and 1 for fine-tuning, projected (normalised) ascent.
    "paper-pretrain": dict(alpha=10.0, noise_std=1e-5, step_size=1e-3, epsilon=1e-5, steps=1,
                           norm="inf", level="token", update="project", loss="sym_kl"),
    "paper-finetune": dict(alpha=1.0, noise_std=1e-5, step_size=1e-3, epsilon=1e-5, steps=1,
                           norm="inf", level="token", update="project", loss="sym_kl"),
    # What namisan/mt-dnn's released fine-tuning code does (mt_dnn/perturbation.py, after
    # Dec 2020): noise 1e-5, step 1e-5, per-token inf norm, delta renormalised to norm 1.
    "released-finetune": dict(alpha=1.0, noise_std=1e-5, step_size=1e-5, epsilon=1e-5, steps=1,
                              norm="inf", level="token", update="normalize",
                              normalize_radius=1.0, loss="sym_kl"),
    # The released pre-training criterion (alum/adv_masked_lm.py): same rule, eta = 1e-3, alpha 10.
    "released-pretrain": dict(alpha=10.0, noise_std=1e-5, step_size=1e-3, epsilon=1e-5, steps=1,
                              norm="inf", level="token", update="normalize",
                              normalize_radius=1.0, loss="sym_kl"),
    # A perturbation that is actually adversarial at any model scale: an L2 ball of 10% of
    # each token's embedding norm, reached in one normalised step (docs/algorithm.md, "A measured warning").
    "relative": dict(alpha=1.0, noise_std=1e-3, step_size=0.1, epsilon=0.1, steps=1,
                     norm="l2", level="token", update="project", epsilon_scale="relative",
                     loss="sym_kl"),
    # alum-finetune's default: the same at 5% of each token's norm, the adversarial term
    # weighted alpha = 0.5. On the robustness study (MiniLM, tweets, 5 seeds, paired with
    # standard) it costs 0.6 points of clean accuracy and keeps +19 points under embedding
    # PGD at 5%; with alpha = 1 the same ball costs 1.4 points for +27, outside the +-1
    # point band of clean accuracy (docs/robustness_study.md).
    "relative-finetune": dict(alpha=0.5, noise_std=1e-3, step_size=0.05, epsilon=0.05, steps=1,
                              norm="l2", level="token", update="project",
                              epsilon_scale="relative", loss="sym_kl"),
}
# Cheaper variants of the default (docs/algorithm.md, "Cheaper variants"; their cost per
# step is in docs/alum_cost.md): the same ball and weight, less work per step.
PRESETS["rdrop"] = dict(PRESETS["relative-finetune"], direction="none")
PRESETS["random-start"] = dict(PRESETS["relative-finetune"], direction="random")
PRESETS["free"] = dict(PRESETS["relative-finetune"], direction="free")
PRESETS["half-batch"] = dict(PRESETS["relative-finetune"], fraction=0.5)
