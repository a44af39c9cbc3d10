"""Pipeline-parallel steps of the pre-training loop (standard MLM; docs/pretrain.md
"Pipeline parallel").

megatron-core's schedule (1F1B, or interleaved 1F1B with virtual stages) owns forward
and backward over the accumulation micro-batches, with tensor parallelism (and sequence
parallelism) inside each stage; DeepSpeed only reduces over data parallel and steps the
optimizer. ``PipelineSteps`` is the PP > 1 step strategy of
``alum.pretrain.trainer.Trainer``; ALUM's four schedule passes are
alum.pretrain.pipeline_alum.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from .config import PretrainConfig, TrainConfig
from .data import valid_batches
from .mlm_step import (AlumTotals, all_reduce_sum, clean_head_rows, clean_objective,
                       current_loss_scale, grad_norm, step_metrics, to_device)
from .pipeline_alum import PipelineAlumStep


@dataclass
class PipelineSchedule:
    """megatron-core's schedule for this run: the layout, the micro-batch shape and the
    dtype of the activations sent between stages."""

    parallel: Any
    """The run's ``alum.parallel.ParallelConfig``."""
    seq_length: int
    micro_batch_size: int
    dtype: torch.dtype

    @classmethod
    def of(cls, train: TrainConfig, seq_length: int, precision: str) -> "PipelineSchedule":
        from alum.parallel import ParallelConfig

        parallel = ParallelConfig(tensor_parallel_size=train.tensor_parallel_size,
                                  sequence_parallel=train.sequence_parallel,
                                  pipeline_parallel_size=train.pipeline_parallel_size,
                                  virtual_pipeline_size=train.virtual_pipeline_size
                                  if train.virtual_pipeline_size > 1 else None)
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
        return cls(parallel, seq_length, train.micro_batch_size, dtype)

    def run(self, chunks: List, data_iterator, num_microbatches: int, forward_only: bool,
            forward_step_func: Callable) -> List[Dict]:
        """The schedule over ``num_microbatches``: the last stage's loss dicts."""
        from alum.parallel.pipeline import run_schedule

        return run_schedule(chunks, self.parallel, model=chunks[0].config,
                            data_iterator=data_iterator, num_microbatches=num_microbatches,
                            seq_length=self.seq_length, micro_batch_size=self.micro_batch_size,
                            forward_only=forward_only, forward_step_func=forward_step_func,
                            pipeline_dtype=self.dtype)


def sum_over_pipeline(outputs: List[Dict], device: torch.device) -> List[float]:
    """[loss x tokens, correct, predicted, mean loss] summed over the last stage's loss
    dicts (every TP rank of it holds equal values), on every rank of the pipeline."""
    sums = torch.zeros(4, dtype=torch.float64)
    for out in outputs:
        sums += torch.stack([out["loss_sum"], out["correct"], out["predicted"],
                             out["mean"]]).double().cpu()
    # The loss is only known on the last stage: broadcast it over the pipeline (each TP
    # rank has its own pipeline group, whose last rank holds the same sums).
    sums = sums.to(device)
    dist.broadcast(sums, src=ps.get_pipeline_model_parallel_last_rank(),
                   group=ps.get_pipeline_model_parallel_group())
    return sums.cpu().tolist()


def take_clipping(ds_config: Dict[str, Any], precision: str, zero_stage: int) -> Optional[float]:
    """The clipping norm the pipeline strategy must apply itself, or None when DeepSpeed
    clips. In the first case ``ds_config``'s ``gradient_clipping`` becomes 0, so DeepSpeed
    does not clip again; an absent key means DeepSpeed's default, which the strategy
    then applies.

    fp32 without ZeRO (stage 0): DeepSpeed's own clipping miscounts the pipeline's
    parameters (``PipelineSteps._clip_pipeline_grads``); ZeRO and the mixed-precision
    optimizers apply megatron's rule themselves.
    """
    if zero_stage != 0 or precision != "fp32":
        return None
    from deepspeed.runtime.constants import GRADIENT_CLIPPING, GRADIENT_CLIPPING_DEFAULT

    clip = float(ds_config.get(GRADIENT_CLIPPING, GRADIENT_CLIPPING_DEFAULT) or 0.0)
    ds_config[GRADIENT_CLIPPING] = 0.0
    return clip


class PipelineSteps:
    """The PP > 1 step strategy of alum.pretrain.trainer.Trainer: the optimizer step,
    clipping and validation.

    Args:
        engine: the DeepSpeed engine (its module is this rank's stage).
        cfg: the run's configuration.
        lr_scheduler: the engine's LR schedule (the step reports its rate).
        dp_rank, dp_size: this rank's data-parallel slice of the validation set.
        precision: ``fp32``, ``bf16`` or ``fp16`` (alum.pretrain.ds_config.precision_of).
        clip: the gradient-clipping norm this strategy applies itself (``take_clipping``;
            DeepSpeed's clipping is then off), or None when DeepSpeed clips.
    """

    def __init__(self, engine, cfg: PretrainConfig, lr_scheduler, dp_rank: int, dp_size: int,
                 precision: str, clip: Optional[float] = None):
        self.engine, self.cfg, self.lr_scheduler = engine, cfg, lr_scheduler
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.device = engine.device
        self.schedule = PipelineSchedule.of(cfg.train, cfg.data.seq_length, precision)
        self.clip = clip

    def _run_pipeline(self, batches: Iterator, num_microbatches: int,
                      forward_only: bool) -> List[float]:
        """megatron-core's schedule over ``num_microbatches``; returns [loss x tokens,
        correct, predicted, mean loss] summed over the micro-batches, on every rank of
        the pipeline."""
        from alum.parallel.pipeline import model_chunks

        chunks = model_chunks(self.engine.module)
        if len(chunks) > 1:
            # Interleaved: every model chunk reads the same micro-batches, each through
            # its own iterator (the schedule advances them separately).
            micro = [to_device(next(batches), self.device) for _ in range(num_microbatches)]
            data = [iter(micro) for _ in chunks]
        else:
            data = (to_device(b, self.device) for b in batches)
        outputs = self.schedule.run(chunks, data, num_microbatches, forward_only,
                                    _pipeline_forward_step)
        return sum_over_pipeline(outputs, self.device)

    def optimizer_step(self, batches: Iterator, alum_on: bool = False) -> Dict[str, Any]:
        """One optimizer step under PP: the schedule runs forward and backward over the
        ``grad_accum_steps`` micro-batches (it scales each loss by 1/num_microbatches,
        as DeepSpeed's accumulation would), the tied embedding's gradient is summed
        over the embedding group, then DeepSpeed reduces over data parallel and steps
        (the boundary is forced: the engine did not see the micro-batches).

        The sequence-parallel parameters' gradients are already summed over TP: the
        run's tensor hooks (``register_sequence_parallel_grad_hooks``, registered by
        alum.pretrain.run_setup) fire in the schedule's backward too, so
        ``allreduce_sequence_parallel_grads`` must not run again here."""
        from alum.parallel import allreduce_embedding_grads

        cfg, tc = self.cfg, self.cfg.train
        adv = AlumTotals().vector()
        if alum_on:  # ALUM's four schedule passes (alum.pretrain.pipeline_alum)
            micro = [to_device(next(batches), self.device) for _ in range(tc.grad_accum_steps)]
            step = PipelineAlumStep(self.engine.module, micro, cfg.alum, cfg.alum_positions,
                                    tc.seed, self.schedule, self.device)
            # The loss dicts summed (as ``_run_pipeline``) and the ALUM statistics
            # (``AlumTotals.vector`` of this replica's micro-batches).
            outputs, adv = step.run(current_loss_scale(self.engine))
            per_micro = sum_over_pipeline(outputs, self.device)
        else:
            per_micro = self._run_pipeline(batches, tc.grad_accum_steps, forward_only=False)
        allreduce_embedding_grads(self.engine.module)
        self.engine.set_gradient_accumulation_boundary(True)
        norm = None
        try:
            self.engine.allreduce_gradients()
            if self.clip is not None:
                norm = self._clip_pipeline_grads(self.clip)
            self.engine.step()
        finally:
            self.engine.set_gradient_accumulation_boundary(None)
        # per_micro[3] sums each micro-batch's mean loss (as the PP=1 loop does).
        sums = all_reduce_sum([per_micro[3], per_micro[1], per_micro[2]] + adv)
        return step_metrics(sums, tc.grad_accum_steps * self.dp_size, self.lr_scheduler,
                            norm if norm is not None else grad_norm(self.engine))

    @torch.no_grad()
    def _clip_pipeline_grads(self, max_norm: float) -> float:
        """Gradient clipping over the whole model (TP x PP), for fp32 without ZeRO (stage 0).

        There DeepSpeed's ``clip_grad_norm_`` counts a parameter megatron does not mark
        tensor-parallel only on model-parallel rank 0 (the first pipeline stage: the
        other stages' LayerNorms and biases are missed) and the last stage's copy of
        the tied embedding a second time. We clip here with the true norm; DeepSpeed's
        clipping is off for such runs (``take_clipping``). Megatron's rule (``get_grad_norm_fp32``
        over ``param_is_not_shared`` and ``param_is_not_tensor_parallel_duplicate``):
        a tensor-parallel parameter (a shard) counts on every TP rank, a replicated one
        on TP rank 0 only, the tied embedding's last-stage copy not at all; the squares
        are summed over the model-parallel group (TP x PP). (ZeRO-1 applies the same
        rule itself; both tested to 1e-5.)
        """
        max_norm = float(max_norm or 0.0)
        tp_rank = ps.get_tensor_model_parallel_rank()
        counted = [p.grad for p in self.engine.module.parameters()
                   if p.grad is not None and not getattr(p, "ds_pipe_replicated", False)
                   and (getattr(p, "tensor_model_parallel", False) or tp_rank == 0)]
        total = torch.zeros(1, dtype=torch.float64, device=self.engine.device)
        for g in counted:
            total += g.detach().double().pow(2).sum()
        dist.all_reduce(total, group=ps.get_model_parallel_group())
        norm = float(total.sqrt())
        if max_norm > 0:
            coef = max_norm / (norm + 1e-6)
            if coef < 1.0:
                for p in self.engine.module.parameters():
                    if p.grad is not None:
                        p.grad.mul_(coef)
        return norm

    @torch.no_grad()
    def evaluate(self, valid) -> Optional[Dict[str, float]]:
        """Mean MLM loss and accuracy over the predicted tokens of the first
        ``eval_batches`` validation micro-batches (summed over data-parallel ranks)."""
        tc = self.cfg.train
        batches = list(valid_batches(valid, tc.micro_batch_size, tc.eval_batches,
                                     self.dp_rank, self.dp_size))
        if not batches:
            return None
        pp = tc.pipeline_parallel_size
        if tc.virtual_pipeline_size > 1 and len(batches) % pp:
            # The interleaved schedule runs micro-batches in groups of PP: pad with
            # copies that predict nothing (they add 0 to every sum).
            filler = dict(batches[-1], labels=torch.full_like(batches[-1]["labels"], -100))
            batches += [filler] * (pp - len(batches) % pp)
        self.engine.eval()
        try:
            loss_sum, correct, predicted, _ = self._run_pipeline(iter(batches), len(batches),
                                                                 forward_only=True)
        finally:
            self.engine.train()
        loss_sum, correct, predicted = all_reduce_sum([loss_sum, correct, predicted])
        if predicted == 0:
            return None
        return {"loss": loss_sum / predicted, "accuracy": correct / predicted}


def _pipeline_forward_step(data_iterator, view):
    """megatron ``forward_step_func`` for the loop: the micro-batch's mean MLM loss (what
    the schedule back-propagates) plus, for the metrics, the loss summed over the
    predicted tokens, the correct predictions and the predicted-token count."""
    batch = next(data_iterator)
    model = view.module
    output = model(batch["input_ids"], batch["attention_mask"],
                   token_type_ids=batch.get("token_type_ids"), rows=clean_head_rows(batch, None))

    def loss_func(logits):
        c = clean_objective(model, logits, batch, None)  # mlm: 0 when nothing is predicted
        mean = c.mlm.detach().clone().float()
        n = c.predicted
        # clone: the schedule divides the returned loss in place by num_microbatches.
        return c.mlm, {"loss_sum": mean * n, "correct": c.correct.float(),
                       "predicted": n.float(), "mean": mean}

    return output, loss_func
