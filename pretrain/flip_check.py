"""How much ALUM's perturbation changes the model's predictions, against dropout's own noise.

ALUM's flip rate (the share of predicted tokens whose argmax the perturbed pass changes)
compares two passes that also draw different dropout masks, so part of it is dropout's.
At the paper's absolute radius (ε = 1e-5 on embeddings of norm ≈ 10) δ itself moves
nothing and the whole flip rate is dropout's: the term is then R-Drop's consistency loss
(Liang et al., 2021) at ALUM's price. This check measures both on the same batches at
the end of a run, in training mode, with the final weights:

* ``alum``: the flip rate of ALUM's own step (random start, K ascent steps, perturbed
  pass), as the core's statistics compute it during training;
* ``dropout``: the same two passes with δ = 0: what dropout alone flips there;
* ``two_clean_passes``: two whole clean passes (embedding dropout redrawn as well), for
  reference: ALUM's perturbed pass reuses the clean embedding output, so this is not the
  baseline.

It runs under the caller's RNG fork, so the training stream is left untouched (a resumed
run stays bit-for-bit equal to an uninterrupted one).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Iterable, Optional

import torch
from torch import nn

from alum import AlumConfig

from .alum_layout import predicted_ids
from .mlm_step import clean_pass, clean_pass_args, mlm_micro_batch, module_runner


def flip_rates(model: nn.Module, batches: Iterable[Dict[str, torch.Tensor]],
               alum: AlumConfig, alum_positions: str, run_seed: Optional[int],
               to_device: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]],
               all_reduce_sum: Callable) -> Optional[Dict[str, float]]:
    """Shares of the predicted positions of ``batches`` (summed over data-parallel ranks by
    ``all_reduce_sum``) whose argmax differs between:

    * ``alum``: the clean pass and ALUM's perturbed pass (its random start, K ascent steps);
    * ``dropout``: the clean pass and the same perturbed pass with δ = 0 (σ = η = 0): it
      starts from the clean pass's embedding output, as ALUM's does, and differs from the
      clean pass only by the encoder's dropout masks: the baseline for ``alum``;
    * ``two_clean_passes``: two whole clean passes (the embedding dropout redrawn too).

    Also ``positions``, the count. None when no position is predicted.
    """
    runner = module_runner(model)  # like validation: the module's hooks, not the engine's
    was_training = model.training
    model.train()  # dropout on: the noise ALUM's passes see
    # The baseline is Algorithm 1's passes with δ = 0, whatever direction ALUM uses.
    no_delta = dataclasses.replace(alum, noise_std=0.0, step_size=0.0, direction="ascent")
    sums = {"alum": 0.0, "dropout": 0.0, "two_clean_passes": 0.0}
    count = 0.0
    with torch.random.fork_rng(devices=[]):
        for batch in batches:
            batch = to_device(batch)
            args = clean_pass_args(batch, None)  # the head at the predicted positions
            n = float(args[-1].sum())
            if n == 0:
                continue
            with torch.no_grad():
                first = predicted_ids(model, runner.forward(clean_pass(model), *args)[1])
                second = predicted_ids(model, runner.forward(clean_pass(model), *args)[1])
            sums["two_clean_passes"] += float((first != second).sum())
            for key, config in (("alum", alum), ("dropout", no_delta)):
                result = _alum_pass(model, runner, batch, config, alum_positions, run_seed)
                if result is not None and result.adv is not None and not result.adv.skipped \
                        and result.adv.flip_rate is not None:
                    sums[key] += float(result.adv.flip_rate) * n
                del result
            count += n
    if not was_training:
        model.eval()
    keys = sorted(sums)
    reduced = all_reduce_sum([sums[k] for k in keys] + [count])
    count = reduced[-1]
    if count == 0:
        return None
    out = {k: v / count for k, v in zip(keys, reduced)}
    out["positions"] = int(count)
    return out


def _alum_pass(model: nn.Module, runner, batch: Dict[str, torch.Tensor], config: AlumConfig,
               alum_positions: str, run_seed: Optional[int]):
    """One micro-batch's ALUM passes, for their statistics. The free direction needs its
    clean backward (δ comes from it): the parameters' gradients are put back afterwards,
    so the check leaves the model as it found it."""
    if config.direction != "free":
        return mlm_micro_batch(runner, batch, config, True, alum_positions, run_seed=run_seed)
    from .alum_variants import free_micro_batch
    from .mlm_step import kl_positions

    positions = kl_positions(batch, alum_positions)
    if positions is None:
        return None
    saved = [(p, None if p.grad is None else p.grad.clone()) for p in model.parameters()]
    try:
        return free_micro_batch(runner, batch, config, positions, run_seed=run_seed)
    finally:
        for p, grad in saved:
            p.grad = grad
