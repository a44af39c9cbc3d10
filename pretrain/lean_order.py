"""ALUM's lean order: one activation graph alive at a time (docs/algorithm.md).

The fast order (alum.pretrain.mlm_step) keeps the clean graph alive through the
ascent and the final perturbed pass: ≈ 2× a standard step's activations. The lean
order runs, per micro-batch:

1. the clean forward without a graph (its logits are the KL's target);
2. the K ascent steps on δ with the parameters frozen (δ-only gradients; megatron's
   frozen-weight linears then save no input activations);
3. the perturbed forward and backward of α·KL(stopgrad p_clean ‖ p_adv) from pass 1's
   embedding output + δ: the gradient into the perturbed branch, down to the embedding
   output, where it is kept;
4. the clean forward and backward of MLM + α·KL(stopgrad p_adv ‖ p_clean): the
   gradient the symmetric KL's second term sends into the clean branch, plus pass 3's
   gradient at the embedding output (alum.split_term.add_gradient), so the
   embedding layer runs one backward, as in the fast order.

Passes 3 and 4 split Algorithm 1's g_θ exactly: with the other branch detached, each
pass's divergence has the gradient of one of the two KL terms, so the two backward passes
sum to the fast order's gradient, for one forward more (alum.split_term).

The stages are the core's (alum.adversarial.AlumStep: ``start``, ``ascend``, ``split``,
``perturbed_half``, ``clean_half``, ``stats``); this file only says when each runs.

The cheaper variants (docs/algorithm.md, "Cheaper variants"): ``none`` and ``random`` run
no pass 2; with ``fraction`` < 1 passes 2 and 3 run on the first sequences of the
micro-batch (``adversarial_part``, alum.pretrain.mlm_step), whose pass-3 gradient pass 4 receives padded
with zeros; ``free`` runs its own two passes instead (``free_micro_batch``).

Randomness: pass 4 replays pass 1's generator state (captured once), so the clean
logits whose gradient is taken are the ones the ascent aimed at, and its embedding
output is pass 1's, the one pass 3 perturbed (same dropout masks). Pass 3's encoder
continues with fresh draws, as the fast order's perturbed pass does; the generators are
left where pass 3 left them.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Dict, Optional

import torch

from alum import AlumConfig

from .alum_variants import free_micro_batch
from .checkpoint import capture_rng_state, restore_rng_state
from .mlm_step import (MicroBatchResult, PassRunner, adversarial_part, kl_positions,
                       clean_objective, clean_pass, clean_pass_args, mlm_micro_batch,
                       part_forward, part_step)


def lean_micro_batch(runner: PassRunner, batch: Dict[str, torch.Tensor],
                     alum: Optional[AlumConfig], alum_active: bool, alum_positions: str = "masked",
                     loss_scale: float = 1.0,
                     run_seed: Optional[int] = None) -> MicroBatchResult:
    """One micro-batch in the lean order, backward passes included (see the module doc).

    Same arguments as alum.pretrain.mlm_step.mlm_micro_batch; the returned ``loss`` is
    detached (its gradients are already accumulated).
    """
    model = runner.model
    positions = kl_positions(batch, alum_positions) if alum is not None and alum_active else None
    if positions is not None and alum.direction == "free":  # its own two passes, in either order
        return free_micro_batch(runner, batch, alum, positions, loss_scale, run_seed)
    # AlumConfig.fraction's sequences: the ascent and pass 3 run on these alone. None: none
    # of them has a masked position, so this micro-batch has no term.
    part = None if positions is None else adversarial_part(alum, batch, positions)
    if part is None:  # a standard step
        result = mlm_micro_batch(runner, batch, None, False, alum_positions)
        runner.backward(result.loss, True)
        return replace(result, loss=result.loss.detach())
    args = clean_pass_args(batch, positions)

    replay = capture_rng_state()  # pass 1's randomness, which pass 4 replays
    with torch.no_grad():                                                   # pass 1
        # The head runs at the KL's positions (masked) or everywhere (all): these are the
        # logits' rows.
        embeds, clean_logits = runner.forward(clean_pass(model), *args)
    clean_logits = part.logits(clean_logits)
    step = part_step(model, part, embeds, alum, run_seed, loss_scale)
    step.start()
    adv_logits = perturbed = None
    if step.ascend(part_forward(model, part), clean_logits):                 # pass 2
        # Pass 1's embedding output is the one pass 4 recomputes: pass 3 perturbs it.
        perturbed = step.perturbed_input().requires_grad_(not alum.detach_embeddings)
        adv_logits = runner.forward(model.forward_from_embeddings, perturbed,  # pass 3
                                    part.batch["attention_mask"], part.head_rows)
        step.split(adv_logits, clean_logits)
    stats = step.stats(adv_logits, clean_logits)
    # Neither backward reads the two [rows, V] logits (the split term keeps what it needs,
    # pass 4 recomputes the clean ones with a graph): two fewer at the peaks.
    del adv_logits, clean_logits
    embeds_grad = None
    if step.on:
        runner.backward(step.perturbed_half(), False)                       # pass 3's backward
        embeds_grad = part.full_grad(perturbed.grad, embeds)
    after = capture_rng_state()
    restore_rng_state(replay)
    _, logits = runner.forward(clean_pass(model, embeds_grad), *args)       # pass 4
    c = clean_objective(model, logits, batch, positions)
    del logits  # with `all` positions, backward needs only c's predicted rows and KL rows
    adv_term = step.clean_half(part.logits(c.alum_logits)) if step.on else None
    runner.backward(c.mlm if adv_term is None else c.mlm + adv_term, True)
    restore_rng_state(after)
    total = c.mlm.detach() + (step.weighted(step.value.detach()) if step.on else 0.0)
    return MicroBatchResult(total, c.mlm.detach(), c.correct, c.predicted, stats)
