"""How much ALUM's perturbation changes the model's predictions, against dropout's own noise.

ALUM's flip rate (the share of predicted tokens whose argmax the perturbed pass changes)
compares two passes that also draw different dropout masks, so part of it is dropout's.
At the paper's absolute radius (ε = 1e-5 on embeddings of norm ≈ 10) δ itself moves
nothing and the whole flip rate is dropout's: the term is then R-Drop's consistency loss
(Liang et al., 2021) at ALUM's price. This check measures both on the same batches at
the end of a run, in training mode, with the final weights:

* ``dropout``: the share of predicted positions whose argmax differs between two clean
  passes (δ = 0, two dropout masks);
* ``alum``: the flip rate of ALUM's own step (random start, K ascent steps, perturbed
  pass), as the core's statistics compute it during training.

It runs under the caller's RNG fork, so the training stream is left untouched (a resumed
run stays bit-for-bit equal to an uninterrupted one).
"""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch
from torch import nn

from alum import AlumConfig

from .alum_layout import predicted_ids
from .mlm_step import clean_pass, clean_pass_args, mlm_micro_batch, module_runner


def flip_rates(model: nn.Module, batches: Iterable[Dict[str, torch.Tensor]],
               alum: AlumConfig, positions: str, run_seed: Optional[int],
               to_device: Callable[[Dict[str, torch.Tensor]], Dict[str, torch.Tensor]],
               all_reduce_sum: Callable) -> Optional[Dict[str, float]]:
    """``{"dropout": share, "alum": share, "positions": n}`` over ``batches`` (summed over
    data-parallel ranks by ``all_reduce_sum``); None when no position is predicted."""
    runner = module_runner(model)  # like validation: the module's hooks, not the engine's
    was_training = model.training
    model.train()  # dropout on: the noise ALUM's passes see
    dropout_flips = alum_flips = count = 0.0
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
            dropout_flips += float((first != second).sum())
            result = mlm_micro_batch(runner, batch, alum, True, positions, run_seed=run_seed)
            if result.adv is not None and not result.adv.skipped \
                    and result.adv.flip_rate is not None:
                alum_flips += float(result.adv.flip_rate) * n
            count += n
            del result
    if not was_training:
        model.eval()
    dropout_flips, alum_flips, count = all_reduce_sum([dropout_flips, alum_flips, count])
    if count == 0:
        return None
    return {"dropout": dropout_flips / count, "alum": alum_flips / count,
            "positions": int(count)}
