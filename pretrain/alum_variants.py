"""ALUM's cheaper variants in the pre-training orders (docs/algorithm.md, "Cheaper
variants"): the batch fraction, and the free direction's two passes.

* **Fraction** (``AlumConfig.fraction``): the adversarial term covers the first
  ceil(fraction × b) sequences of each micro-batch; with ``alum_positions="masked"`` that
  is every masked position of those sequences (sequences, not positions, so that the
  perturbed passes run on fewer sequences: the saving). ``AdversarialPart`` holds those
  sequences' batch, KL rows, embedding output and clean logits. The first sequences
  rather than a random subset: the choice depends on the batch alone, so a resumed run,
  every TP/SP/DP layout and gradient accumulation select the same sequences.
* **Free** (``direction="free"``): one order for both ``fast`` and ``lean``: the clean
  forward and backward of the MLM loss, whose gradient at the embedding output gives δ
  (``AlumStep.take_gradient``), then the perturbed forward and backward of α·D with the
  clean logits detached (the clean graph is gone): two forward and two backward passes,
  one graph alive at a time.

``none`` and ``random`` need nothing here: their step runs no ascent pass (``AlumStep.ascend``
with K = 0) in whichever order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Optional

import torch

from alum import AlumConfig
from alum.adversarial import AlumStep

from .alum_layout import build_alum_step


@dataclass
class AdversarialPart:
    """The sequences of a micro-batch that get the adversarial term, and their tensors."""

    n: int
    """How many (the first ``n`` of the batch)."""
    batch: Dict[str, torch.Tensor]
    """The batch's tensors, their first ``n`` rows."""
    head_rows: Optional[torch.Tensor]
    """``[n, s]`` bool: the KL's positions (``masked``), or None (``all``)."""
    kl_weights: Optional[torch.Tensor]
    """The KL rows' weights, ``[n, s]`` (``all``), or None."""
    rows: int
    """Rows of the clean ALUM logits that belong to these sequences: the first ``rows``
    of ``[positions, V]`` logits (``masked``), or the first ``n`` of ``[b, s, V]``."""
    whole: bool
    """The part is the whole micro-batch (fraction 1, or rounding)."""

    def logits(self, clean: torch.Tensor) -> torch.Tensor:
        """The part's rows of the clean pass's ALUM logits."""
        return clean if self.whole else clean[:self.rows]

    def embeds(self, embeds: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The part's rows of the embedding output (``[b, s_local, h]``)."""
        return embeds if self.whole or embeds is None else embeds[:self.n]

    def full_grad(self, grad: Optional[torch.Tensor], like: torch.Tensor
                  ) -> Optional[torch.Tensor]:
        """A gradient at the part's embedding rows, zero-padded to the whole batch's."""
        if grad is None or self.whole:
            return grad
        out = torch.zeros_like(like)
        out[:self.n] = grad
        return out


def adversarial_part(alum: AlumConfig, batch: Dict[str, torch.Tensor], rows
                     ) -> Optional[AdversarialPart]:
    """The first ceil(fraction × b) sequences (``rows``: the micro-batch's
    ``AlumPositions``); None when those sequences have no masked position."""
    b = batch["input_ids"].shape[0]
    n = alum.adversarial_rows(b)
    if n == b:
        count = int(rows.head_rows.sum()) if rows.head_rows is not None else b
        return AdversarialPart(b, batch, rows.head_rows, rows.kl_weights, count, True)
    part = {k: v[:n] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == b
            else v for k, v in batch.items()}
    head = None if rows.head_rows is None else rows.head_rows[:n]
    weights = None if rows.kl_weights is None else rows.kl_weights[:n]
    if head is not None:
        count = int(head.sum())  # the masked positions are row-major: these come first
        if count == 0:
            return None
        return AdversarialPart(n, part, head, weights, count, False)
    return AdversarialPart(n, part, None, weights, n, False)


def part_step(model, part: AdversarialPart, embeds: Optional[torch.Tensor], alum: AlumConfig,
              run_seed: Optional[int], loss_scale: float) -> AlumStep:
    """The layout's staged step (build_alum_step) on the part's sequences."""
    return build_alum_step(model, part.batch, part.embeds(embeds), alum, part.kl_weights,
                           run_seed, loss_scale)


def part_forward(model, part: AdversarialPart):
    """perturbed embedding output of the part → the KL rows of its logits."""
    from .mlm_step import AlumPositions, perturbed_forward

    return perturbed_forward(model, part.batch, AlumPositions(part.head_rows, part.kl_weights))


def free_micro_batch(runner, batch: Dict[str, torch.Tensor], alum: AlumConfig, rows,
                     loss_scale: float = 1.0, run_seed: Optional[int] = None):
    """One micro-batch with ``direction="free"``, both backward passes included (the
    returned ``loss`` is detached). ``rows``: the micro-batch's ``AlumPositions``."""
    from .mlm_step import MicroBatchResult, clean_objective, clean_pass, clean_pass_args

    model = runner.model
    part = adversarial_part(alum, batch, rows)
    seen: Dict[str, torch.Tensor] = {}

    def keep(grad: torch.Tensor) -> None:
        seen.setdefault("grad", grad.detach())

    embeds, logits = runner.forward(clean_pass(model, on_grad=keep),
                                    *clean_pass_args(batch, rows))
    clean = clean_objective(model, logits, batch, rows)
    del logits
    if part is None:  # no masked position among the part's sequences: a standard step
        runner.backward(clean.mlm, True)
        return MicroBatchResult(clean.mlm.detach(), clean.mlm.detach(), clean.correct,
                                clean.predicted)
    clean_logits = part.logits(clean.alum_logits.detach())
    runner.backward(clean.mlm, False)                          # pass 1: clean fwd + bwd
    step = part_step(model, part, embeds.detach(), alum, run_seed, loss_scale)
    step.start()
    if "grad" not in seen:
        raise RuntimeError("AlumConfig.direction='free': the clean backward sent no gradient "
                           "to the embedding output (are the embeddings frozen?)")
    step.take_gradient(part.embeds(seen["grad"]))
    # Pass 2 runs even when the gradient was not finite (δ = 0 then), so the micro-batch
    # always ends in the same backward passes, as DeepSpeed's boundary expects.
    adv_logits = runner.forward(model.forward_from_embeddings, step.perturbed_input(),
                                part.batch["attention_mask"], part.head_rows)
    term = step.term(adv_logits, clean_logits)
    stats = step.stats(adv_logits, clean_logits)
    if not step.on:  # a zero with the pass's graph
        term = torch.nan_to_num(adv_logits.float()).sum() * 0.0
    runner.backward(term, True)                                # pass 2: perturbed fwd + bwd
    total = clean.mlm.detach() + (step.weighted(step.value.detach()) if step.on else 0.0)
    return MicroBatchResult(total, clean.mlm.detach(), clean.correct, clean.predicted, stats)
