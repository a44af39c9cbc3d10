"""ALUM's free direction in the pre-training orders (docs/algorithm.md, "Cheaper
variants"): ``direction="free"`` runs one order for both ``fast`` and ``lean``: the clean
forward and backward of the MLM loss, whose gradient at the embedding output gives δ
(``AlumStep.take_gradient``), then the perturbed forward and backward of α·D with the
clean logits detached (the clean graph is gone): two forward and two backward passes,
one graph alive at a time.

The batch fraction (``AlumConfig.fraction``) is one of ALUM's positions
(alum.pretrain.mlm_step, ``adversarial_part``); ``none`` and ``random`` need nothing
here: their step runs no ascent pass (``AlumStep.ascend`` with K = 0) in whichever order.
"""
from __future__ import annotations

from typing import Dict, Optional

import torch

from alum import AlumConfig

from .mlm_step import (MicroBatchResult, adversarial_part, clean_objective, clean_pass,
                       clean_pass_args, part_step)


def free_micro_batch(runner, batch: Dict[str, torch.Tensor], alum: AlumConfig, positions,
                     loss_scale: float = 1.0, run_seed: Optional[int] = None):
    """One micro-batch with ``direction="free"``, both backward passes included (the
    returned ``loss`` is detached). ``positions``: the micro-batch's ``AlumPositions``."""
    model = runner.model
    part = adversarial_part(alum, batch, positions)
    seen: Dict[str, torch.Tensor] = {}

    def keep(grad: torch.Tensor) -> None:
        seen.setdefault("grad", grad.detach())

    embeds, logits = runner.forward(clean_pass(model, on_grad=keep),
                                    *clean_pass_args(batch, positions))
    clean = clean_objective(model, logits, batch, positions)
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
