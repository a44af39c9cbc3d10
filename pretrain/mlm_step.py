"""The loss of one MLM micro-batch, standard or with ALUM's adversarial term (TP=1, PP=1).

The clean forward runs in two halves (``embed``, then ``forward_from_embeddings``)
so that ALUM gets the embedding output that produced the clean logits; the
adversarial term (alum.adversarial_loss, Algorithm 1) then perturbs that output.

The model's tensors are only passed between its own methods, so a model whose
activations are ``[seq, batch, hidden]`` works too, provided its
``embedding_mask(attention_mask)`` returns the padding mask in the embedding
output's leading dimensions (default: ``attention_mask`` itself, ``[b, s]``) and
its logits are batch-first like ``labels``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

from alum import AlumConfig, AdversarialStats, adversarial_loss

from .tensor_parallel import predicted_ids


CleanForward = Callable[[Dict[str, torch.Tensor]], Tuple[torch.Tensor, torch.Tensor]]


def call_through_hooks(model: nn.Module, method: Callable, *args: torch.Tensor):
    """``method(*args)`` invoked as ``model(*args)``, so the module's own hooks run.

    ZeRO-3 gathers partitioned parameters in forward hooks; a parameter used by a
    module that does not own it (the MLM decoder reading the tied word embedding) is
    gathered only by the root module's hooks, which a plain method call skips.
    """
    model.forward = method
    try:
        return model(*args)
    finally:
        del model.forward


def embedding_mask(model: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """The padding mask ALUM uses for δ: ``model.embedding_mask(...)`` if the model has it."""
    fn = getattr(model, "embedding_mask", None)
    return fn(attention_mask) if callable(fn) else attention_mask


@dataclass
class MicroBatchResult:
    """What one micro-batch's forward produced (losses keep their graphs)."""

    loss: torch.Tensor
    """The objective to back-propagate: MLM loss (+ α·adversarial term)."""
    mlm_loss: torch.Tensor
    """The clean MLM cross entropy (detached)."""
    correct: torch.Tensor
    """Predicted positions whose argmax equals the label."""
    predicted: torch.Tensor
    """Predicted positions (labels != -100)."""
    adv: Optional[AdversarialStats] = None
    """ALUM's statistics, when the adversarial term ran."""


def mlm_accuracy_counts(model: nn.Module, logits: torch.Tensor, labels: torch.Tensor):
    """(correct, predicted) over labels != -100; vocabulary-parallel logits under TP."""
    selected = labels.ne(-100)
    with torch.no_grad():
        hits = predicted_ids(model, logits[selected]).eq(labels[selected]).sum()
    return hits, selected.sum()


def mlm_micro_batch(model: nn.Module, batch: Dict[str, torch.Tensor],
                    alum: Optional[AlumConfig], alum_active: bool, positions: str = "masked",
                    loss_scale: float = 1.0,
                    clean_forward: Optional[CleanForward] = None) -> MicroBatchResult:
    """Forward one micro-batch and build its loss.

    Args:
        model: the unwrapped module (``engine.module``): embed / forward_from_embeddings /
            mlm_loss.
        batch: ``input_ids``, ``attention_mask``, ``labels`` (and ``token_type_ids``).
        alum: ALUM's config, or None for standard MLM.
        alum_active: the curriculum's decision for this optimizer step.
        positions: ``masked`` (KL at labels != -100, the authors' code) or ``all``
            (every non-padding position).
        loss_scale: DeepSpeed's current fp16 loss scale, so the inner gradient does
            not underflow (1 otherwise).
        clean_forward: ``batch -> (embedding output, logits)``; default: the model's
            ``embed`` then ``forward_from_embeddings``. The trainer passes one that goes
            through the DeepSpeed engine (see alum.pretrain.trainer.engine_clean_forward).
    """
    input_ids = batch["input_ids"]
    attention_mask = batch["attention_mask"]
    labels = batch["labels"]
    if clean_forward is None:
        embeds = model.embed(input_ids, batch.get("token_type_ids"))
        logits = model.forward_from_embeddings(embeds, attention_mask)
    else:
        embeds, logits = clean_forward(batch)
    mlm = model.mlm_loss(logits, labels)
    correct, predicted = mlm_accuracy_counts(model, logits, labels)
    if alum is None or not alum_active:
        return MicroBatchResult(mlm, mlm.detach(), correct, predicted)

    delta_mask = embedding_mask(model, attention_mask)
    if positions == "masked":
        selected = labels.ne(-100)
        if not bool(selected.any()):  # nothing predicted: no KL positions either
            return MicroBatchResult(mlm, mlm.detach(), correct, predicted)

        def forward_fn(perturbed: torch.Tensor) -> torch.Tensor:
            # [N, V]: only the predicted rows; the core averages the KL over its rows.
            return call_through_hooks(model, model.forward_from_embeddings, perturbed,
                                      attention_mask)[selected]

        clean = logits[selected]
    else:
        # The core averages per-token KL rows over its mask when the shapes agree; with
        # a [seq, batch] embedding mask and batch-first logits they would not, and the
        # mean would silently include padding.
        if tuple(delta_mask.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"alum_positions='all' needs the embedding mask "
                             f"{tuple(delta_mask.shape)} to match the logits' leading "
                             f"dimensions {tuple(logits.shape[:-1])}")

        def forward_fn(perturbed: torch.Tensor) -> torch.Tensor:
            return call_through_hooks(model, model.forward_from_embeddings, perturbed,
                                      attention_mask)

        clean = logits
    adv_term, stats = adversarial_loss(forward_fn, embeds, clean, alum, mask=delta_mask,
                                       loss_scale=loss_scale)
    return MicroBatchResult(mlm + adv_term, mlm.detach(), correct, predicted, stats)
