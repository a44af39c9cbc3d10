"""ALUM: adversarial training in the embedding space for BERT/RoBERTa (Liu et al., 2020).

The core is model-agnostic: ``AlumConfig`` holds the hyper-parameters,
``adv_project`` is the perturbation update (the fused kernel's reference), and
``adversarial_loss`` runs Algorithm 1 around any ``forward_fn(embeds) -> logits``.
"""
from .adversarial import AdversarialStats, adversarial_loss, ascent_gradient, initial_noise
from .config import PRESETS, AlumConfig
from .divergence import adversarial_divergence, ascent_divergence
from .perturbation import adv_project

__version__ = "0.1.0"

__all__ = [
    "AlumConfig", "PRESETS", "adv_project", "adversarial_loss", "ascent_gradient",
    "initial_noise", "AdversarialStats", "adversarial_divergence", "ascent_divergence",
]
