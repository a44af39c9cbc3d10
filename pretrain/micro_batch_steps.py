"""The optimizer step and validation without pipeline parallelism (PP = 1): each
micro-batch through the DeepSpeed engine, ALUM in the fast order
(alum.pretrain.mlm_step) or the lean order (alum.pretrain.lean_order).

One optimizer step = ``grad_accum_steps`` micro-batches, each: the clean forward
(through the DeepSpeed engine), the MLM loss, ALUM's adversarial term when the
curriculum has switched it on, ``engine.backward`` and ``engine.step`` (DeepSpeed steps
the optimizer and the LR schedule at the accumulation boundary, with clipping and, for
fp16, dynamic loss scaling).

Why the clean pass goes through ``engine(...)`` and the ALUM passes do not:
DeepSpeed's forward registers hooks on its outputs that start its backward
bookkeeping (ZeRO's backward prologue, gradient-accumulation scaling of direct
``tensor.backward`` calls). The loss's backward must see them once; ALUM's
ascent takes ``autograd.grad`` w.r.t. δ alone and must not (it would enter
ZeRO's backward and scale δ's gradient). The ascent and final perturbed passes
start from ``embeds.detach() + δ``, so they never reach the clean outputs' hooks.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, Optional

import torch

from .config import PretrainConfig
from .data import valid_batches
from .lean_order import lean_micro_batch
from .mlm_step import (clean_head_rows, clean_objective, engine_runner, mlm_micro_batch,
                       to_device)
from .run_stats import ADV_KEYS, AlumTotals, all_reduce_sum, current_loss_scale, grad_norm


class MicroBatchSteps:
    """The PP = 1 step strategy of alum.pretrain.trainer.Trainer.

    Args:
        engine: the DeepSpeed engine (its module, device, backward and step).
        cfg: the run's configuration (the order, ALUM's positions, batch sizes, seed).
        lr_scheduler: the engine's LR schedule (the step reports its rate).
        dp_rank, dp_size: this rank's data-parallel slice of the validation set.
    """

    def __init__(self, engine, cfg: PretrainConfig, lr_scheduler, dp_rank: int, dp_size: int):
        self.engine, self.cfg, self.lr_scheduler = engine, cfg, lr_scheduler
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.device = engine.device
        # The order is the run's: chosen once (PretrainConfig.resolved_alum_order).
        # The free direction has one order (its two passes, alum.pretrain.alum_variants),
        # which lean_micro_batch runs.
        free = cfg.alum is not None and cfg.alum.direction == "free"
        self.micro_batch = lean_micro_batch if cfg.resolved_alum_order == "lean" or free \
            else mlm_micro_batch

    def optimizer_step(self, batches: Iterator, alum_on: bool) -> Dict[str, Any]:
        """grad_accum_steps micro-batches and the optimizer step; per-step metrics
        (``adv_skipped``: the micro-batches whose term was dropped, over data parallel)."""
        cfg, tc = self.cfg, self.cfg.train
        runner = engine_runner(self.engine)
        micro_batch = self.micro_batch
        loss_sum = correct = predicted = 0.0
        totals = AlumTotals()
        for _ in range(tc.grad_accum_steps):
            batch = to_device(next(batches), self.device)
            result = micro_batch(runner, batch, cfg.alum, alum_on, cfg.alum_positions,
                                 current_loss_scale(self.engine), run_seed=tc.seed)
            if micro_batch is mlm_micro_batch:  # the lean order ran its backward passes
                self.engine.backward(result.loss)
            self.engine.step()
            loss_sum += float(result.mlm_loss)
            correct += float(result.correct)
            predicted += float(result.predicted)
            if result.adv is not None:
                totals.skipped += int(result.adv.skipped)
                if not result.adv.skipped:  # a skipped term's statistics are NaN: not averaged
                    stats = result.adv.to_dict()
                    for k in ADV_KEYS:
                        totals.add(k, stats.get(k))
        sums = all_reduce_sum([loss_sum, correct, predicted] + totals.vector())
        n_micro = tc.grad_accum_steps * self.dp_size
        out: Dict[str, Any] = {"loss": sums[0] / n_micro,
                               "accuracy": sums[1] / max(sums[2], 1.0),
                               "lr": float(self.lr_scheduler.get_last_lr()[0]),
                               "grad_norm": grad_norm(self.engine), "predicted": sums[2]}
        out.update(AlumTotals.means(sums[3:]))
        return out

    @torch.no_grad()
    def evaluate(self, valid) -> Optional[Dict[str, float]]:
        """Mean MLM loss and accuracy over the predicted tokens of the first
        ``eval_batches`` validation micro-batches (summed over data-parallel ranks)."""
        model = self.engine.module
        was_training = model.training
        self.engine.eval()
        loss_sum = correct = predicted = 0.0
        tc = self.cfg.train
        for batch in valid_batches(valid, tc.micro_batch_size, tc.eval_batches, self.dp_rank,
                                   self.dp_size):
            batch = to_device(batch, self.device)
            logits = model(batch["input_ids"], batch["attention_mask"],
                           batch.get("token_type_ids"), rows=clean_head_rows(batch, None))
            c = clean_objective(model, logits, batch, None)
            n = float(c.predicted)
            loss_sum += float(c.mlm) * n
            correct += float(c.correct)
            predicted += n
        if was_training:
            self.engine.train()
        loss_sum, correct, predicted = all_reduce_sum([loss_sum, correct, predicted])
        if predicted == 0:
            return None
        return {"loss": loss_sum / predicted, "accuracy": correct / predicted}
