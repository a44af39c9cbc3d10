"""ALUM: adversarial training in the embedding space for BERT/RoBERTa (Liu et al., 2020).

The core is model-agnostic: ``AlumConfig`` holds the hyper-parameters,
``adv_project`` is the perturbation update (the fused kernel's reference), and
``adversarial_loss`` runs Algorithm 1 around any ``forward_fn(embeds) -> logits``.
"""
import importlib

# Exported names, imported on first use (PEP 562) so that `import alum.tools...`
# (the data tools' command lines) does not pay for importing torch.
_EXPORTS = {
    "AdversarialStats": "adversarial", "adversarial_loss": "adversarial",
    "ascent_gradient": "adversarial", "initial_noise": "adversarial",
    "PRESETS": "config", "AlumConfig": "config",
    "adversarial_divergence": "divergence", "ascent_divergence": "divergence",
    "adv_project": "perturbation",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AlumConfig", "PRESETS", "adv_project", "adversarial_loss", "ascent_gradient",
    "initial_noise", "AdversarialStats", "adversarial_divergence", "ascent_divergence",
]
