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
   gradient at the embedding output (alum.pretrain.split_term.add_gradient), so the
   embedding layer runs one backward, as in the fast order.

Passes 3 and 4 split Algorithm 1's g_θ exactly: with the other branch detached, each
pass's divergence has the gradient of one of the two KL terms, so the two backward passes
sum to the fast order's gradient, for one forward more (alum.pretrain.split_term).

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
from alum.adversarial import adversarial_stats, find_perturbation, skipped_term

from .alum_layout import build_alum_layout
from .checkpoint import capture_rng_state, restore_rng_state
from .mlm_step import (MicroBatchResult, clean_objective, clean_pass, clean_pass_args, kl_rows,
                       mlm_micro_batch, perturbed_forward)
from .pass_runner import PassRunner


def lean_micro_batch(runner: PassRunner, batch: Dict[str, torch.Tensor],
                     alum: Optional[AlumConfig], alum_active: bool, positions: str = "masked",
                     loss_scale: float = 1.0,
                     run_seed: Optional[int] = None) -> MicroBatchResult:
    """One micro-batch in the lean order, backward passes included (see the module doc).

    Same arguments as alum.pretrain.mlm_step.mlm_micro_batch; the returned ``loss`` is
    detached (its gradients are already accumulated).
    """
    model = runner.model
    rows = kl_rows(batch, positions) if alum is not None and alum_active else None
    if rows is None:  # a standard step
        result = mlm_micro_batch(runner, batch, None, False, positions)
        runner.backward(result.loss, True)
        return replace(result, loss=result.loss.detach())
    clean = clean_pass(model)
    args = clean_pass_args(batch, rows)

    replay = capture_rng_state()  # pass 1's randomness, which pass 4 replays
    with torch.no_grad():                                               # pass 1
        # The head runs at the KL's rows (masked) or everywhere (all): these are the rows.
        embeds0, clean_rows = runner.forward(clean, *args)
    layout = build_alum_layout(model, batch, embeds0, alum, rows.rows_mask, run_seed)
    pert = find_perturbation(perturbed_forward(model, batch, rows), embeds0, clean_rows,  # pass 2
                             alum, layout.delta_mask, layout.init_noise, loss_scale,
                             divergences=layout.divergences, all_finite=layout.all_finite,
                             freeze=model, update=layout.update,
                             row_weights=layout.row_weights)
    split = None
    term = torch.zeros((), device=embeds0.device)
    if pert.skipped:
        _, stats = skipped_term(embeds0, pert.skipped, pert.grad, alum)
    else:
        # Pass 1's embedding output is the one pass 4 recomputes: pass 3 perturbs it.
        perturbed = (embeds0 + pert.delta).requires_grad_(not alum.detach_embeddings)
        adv_rows = runner.forward(model.forward_from_embeddings, perturbed,   # pass 3
                                  batch["attention_mask"], rows.head_rows)
        split = layout.split_term(adv_rows, clean_rows)
        term = split.value
        if not layout.all_finite(term):
            _, stats = skipped_term(embeds0, "the adversarial term", term, alum)
            split = None
        else:
            stats = adversarial_stats(embeds0, pert, term, adv_rows, clean_rows, alum,
                                      layout.delta_mask, layout.divergences, layout.row_weights)
        # Neither backward reads the two [rows, V] logits (the split term keeps what it
        # needs, pass 4 recomputes the clean ones with a graph): two fewer at the peaks.
        del adv_rows
    del clean_rows
    embeds_grad = None
    if split is not None:
        runner.backward(alum.alpha * split.perturbed(), False)          # pass 3's backward
        embeds_grad = perturbed.grad
    after = capture_rng_state()
    restore_rng_state(replay)
    _, logits = runner.forward(clean_pass(model, embeds_grad), *args)   # pass 4
    c = clean_objective(model, logits, batch, rows)
    del logits  # with `all` positions, backward needs only c's predicted rows and KL rows
    loss = c.mlm
    if split is not None:
        loss = c.mlm + alum.alpha * split.clean(c.kl_rows)
    runner.backward(loss, True)
    restore_rng_state(after)
    total = c.mlm.detach() + (alum.alpha * term.detach() if split is not None else 0.0)
    return MicroBatchResult(total, c.mlm.detach(), c.correct, c.predicted, stats)
