"""The pre-training loop: MLM (+ ALUM) under DeepSpeed (docs/pretrain.md).

``Trainer(cfg)`` gets the built run from alum.pretrain.run_setup (``build_run``: the
engine, the data, the step strategy, the checkpoints, resumed where they say) and loops
over optimizer steps, logging, validating and saving as configured. A step strategy runs
each step: ``MicroBatchSteps`` (alum.pretrain.mlm_step: PP = 1, the fast or the lean
order) or ``PipelineSteps`` (alum.pretrain.pipeline_loop: PP > 1, megatron-core's
schedule, ALUM's passes in alum.pretrain.pipeline_alum). ALUM runs under every layout:
TP > 1 (megatron-core, sequence parallel optional) through the vocabulary-parallel
divergences of alum.pretrain.alum_layout. The curriculum (``AlumConfig.start_step``)
decides per step whether the adversarial term is on. What a checkpoint saves besides
DeepSpeed's state: alum.pretrain.run_state; the HF export: alum.pretrain.export_hf.
"""
from __future__ import annotations

import json
import os
import time
from functools import partial
from typing import Any, Dict, List, Optional

import numpy as np

from alum.atomic_write import atomic_write_text

from .config import PretrainConfig
from .data import train_batches, valid_batches
from .export_hf import export_hf
from .flops import device_peak_tflops, model_dims, step_flops
from .metrics_log import format_metrics, memory_scalars
from .mlm_step import ADV_KEYS, all_reduce_sum, to_device
from .run_setup import build_run
from .run_state import client_state
from .run_stats import TrainSummary, Window


class Trainer:
    """The training loop over a run built from a ``PretrainConfig``."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        run = build_run(cfg)
        self.run = run
        self.engine, self.steps, self.data, self.log = run.engine, run.steps, run.data, run.log
        self.lr_scheduler = run.lr_scheduler
        self.rank, self.world, self.dp_size = run.rank, run.world, run.dp_size
        self.layout_change = run.layout_change
        self.progress = run.progress
        self._throughput = Window()  # every logged window of this invocation
        self.model_dims = model_dims(self.engine.module)
        self.peak_tflops = cfg.logging.peak_tflops or device_peak_tflops()

    @property
    def step(self) -> int:
        """Optimizer steps taken so far (resumed runs count from their checkpoint)."""
        return self.progress.step

    @property
    def consumed_samples(self) -> int:
        """Training sequences read so far over all data-parallel ranks (the data
        position a resume continues from)."""
        return self.progress.consumed_samples

    def client_state(self) -> Dict[str, Any]:
        """The loop's state saved with every checkpoint (alum.pretrain.run_state)."""
        return client_state(self.progress, self.cfg, self.data, self.world, self.engine.module)

    # -- validation -----------------------------------------------------------
    def evaluate(self) -> Optional[Dict[str, float]]:
        """Mean MLM loss and accuracy over the predicted tokens of the first
        ``eval_batches`` validation micro-batches (summed over data-parallel ranks)."""
        if self.data.valid is None:
            return None
        return self.steps.evaluate(self.data.valid)

    def flip_check(self) -> Optional[Dict[str, float]]:
        """ALUM's flip rate against dropout's, on the validation batches with the final
        weights (alum.pretrain.flip_check); None without ALUM, validation data or under
        pipeline parallelism (whose stages hold no whole forward)."""
        cfg = self.cfg
        if cfg.alum is None or cfg.alum.alpha == 0.0 or self.data.valid is None \
                or cfg.train.pipeline_parallel_size > 1:
            return None
        from .flip_check import flip_rates

        batches = valid_batches(self.data.valid, cfg.train.micro_batch_size,
                                cfg.train.eval_batches, self.run.dp_rank, self.dp_size)
        return flip_rates(self.engine.module, batches, cfg.alum, cfg.alum_positions,
                          cfg.train.seed, partial(to_device, device=self.engine.device),
                          all_reduce_sum)

    def export_hf(self, directory: str) -> str:
        """Writes the live model in Hugging Face format, with the tokenizer, to
        ``directory`` (alum.pretrain.export_hf); every rank calls it."""
        return export_hf(self.engine.module, self.data.tokenizer, directory, self.rank,
                         self.log)

    # -- training -------------------------------------------------------------
    def train(self) -> TrainSummary:
        cfg, tc = self.cfg, self.cfg.train
        state, global_batch = self.progress, self.run.global_batch
        start = state.step
        stop = tc.train_steps if tc.max_steps is None else min(tc.train_steps,
                                                                start + tc.max_steps)
        summary = TrainSummary(start_step=start, end_step=start)
        t_begin = time.time()
        batches = train_batches(self.data.train, tc.micro_batch_size, state.consumed_samples,
                                self.run.dp_rank, self.dp_size, cfg.data.num_workers)
        bar = None
        if self.rank == 0 and cfg.logging.progress_bar and stop > start:
            from tqdm import tqdm

            bar = tqdm(total=stop - start, initial=0, desc="alum-pretrain",
                       unit="step", dynamic_ncols=True, mininterval=1.0)
        window = Window()
        adv_totals: Dict[str, List[float]] = {k: [] for k in ADV_KEYS}
        tokens_per_step = global_batch * cfg.data.seq_length
        self.engine.train()
        while state.step < stop:
            alum_on = cfg.alum is not None and cfg.alum.active(state.step)
            t0 = time.time()
            step_stats = self.steps.optimizer_step(batches, alum_on)
            dt = time.time() - t0
            state.adv_skipped += int(step_stats["adv_skipped"])
            state.step += 1
            state.consumed_samples += global_batch
            summary.losses.append(step_stats["loss"])
            if state.first_loss is None:
                state.first_loss = step_stats["loss"]
            if alum_on:
                summary.alum_steps += 1
                for k in ADV_KEYS:
                    if step_stats.get(k) is not None:
                        adv_totals[k].append(step_stats[k])
            flops = self.step_flops(alum_on, step_stats.pop("predicted", None))
            window.add(step_stats, dt, tokens_per_step, flops / self.world)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{step_stats['loss']:.3f}",
                                alum="on" if alum_on else "off")
            if state.step % tc.log_interval == 0 or state.step == stop:
                self._log_window(window, bar, alum_on)
                window = Window()
            if tc.eval_interval and state.step % tc.eval_interval == 0 and state.step < stop:
                self._eval_and_log(summary, bar)
            if cfg.checkpoint.save_interval and state.step % cfg.checkpoint.save_interval == 0 \
                    and state.step < stop:
                summary.checkpoint = self.run.checkpoints.save(self.engine, state.step,
                                                               self.client_state())
        if bar is not None:
            bar.close()
        self._eval_and_log(summary, None)
        if cfg.checkpoint.save_at_end and stop > start:
            summary.checkpoint = self.run.checkpoints.save(self.engine, state.step,
                                                           self.client_state())
        if cfg.checkpoint.export_hf:
            summary.export_hf = self.export_hf(cfg.checkpoint.export_hf)
        summary.flip_check = self.flip_check()
        summary.end_step = state.step
        summary.first_loss = state.first_loss
        summary.last_loss = summary.losses[-1] if summary.losses else None
        summary.adv_skipped = state.adv_skipped
        summary.adv_means = {k: float(np.mean(v)) for k, v in adv_totals.items() if v}
        summary.optimizer_steps_skipped = int(getattr(self.engine, "skipped_steps", 0))
        summary.wall_s = time.time() - t_begin
        if self._throughput.steps:
            summary.tokens_per_s = self._throughput.tokens / self._throughput.seconds
            summary.tflops_per_device = self._throughput.flops / self._throughput.seconds / 1e12
            if self.peak_tflops:
                summary.mfu = summary.tflops_per_device / self.peak_tflops
        if self.rank == 0:
            atomic_write_text(os.path.join(cfg.checkpoint.output_dir, "summary.json"),
                              json.dumps(summary.to_dict(), indent=1))
        self.log.close()
        return summary

    def step_flops(self, alum_on: bool, predicted: Optional[float]) -> float:
        """Model FLOPs of one optimizer step (alum.pretrain.flops): the MLM head at the
        ``predicted`` rows of the global batch, or at every position when ALUM's KL reads
        all of them (or the count is unknown)."""
        cfg, global_batch = self.cfg, self.run.global_batch
        tokens = global_batch * cfg.data.seq_length
        every_row = predicted is None or (alum_on and cfg.alum_positions == "all")
        return step_flops(global_batch, cfg.data.seq_length,
                          tokens if every_row else predicted, self.model_dims, alum_on,
                          cfg.alum.steps if cfg.alum else 1,
                          dense_rows=tokens if cfg.train.sequence_parallel else None)

    def _log_window(self, window: "Window", bar, alum_on: bool) -> None:
        self._throughput.merge(window)
        values: Dict[str, Optional[float]] = window.means()
        tflops = window.flops / window.seconds / 1e12 if window.seconds else None
        values["tokens_per_s"] = window.tokens / window.seconds if window.seconds else None
        values["tflops"] = tflops
        if self.peak_tflops and tflops is not None:
            values["mfu"] = tflops / self.peak_tflops
        values["alum"] = 1.0 if alum_on else 0.0
        values.update(memory_scalars())
        self.log.scalars("train", dict(values, step=float(self.step)),
                         self.progress.consumed_samples)
        if self.rank == 0:
            shown = {k: v for k, v in values.items() if k != "alum"}
            self.log.line(format_metrics(self.step, self.cfg.train.train_steps, shown)
                          + (" | ALUM" if alum_on else ""), bar)

    def _eval_and_log(self, summary: TrainSummary, bar) -> None:
        result = self.evaluate()
        if result is None:
            return
        result = dict(result, step=self.step)
        summary.evals.append(result)
        self.log.scalars("valid", {"loss": result["loss"], "accuracy": result["accuracy"]},
                         self.progress.consumed_samples)
        self.log.line(f"validation at step {self.step}: loss {result['loss']:.4f} | "
                      f"MLM accuracy {result['accuracy']:.4f}", bar)
