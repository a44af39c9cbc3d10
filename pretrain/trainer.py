"""The pre-training loop: MLM (+ ALUM) under DeepSpeed (docs/pretrain.md).

The trainer builds the run (model, engine, data, checkpoints) and loops over optimizer
steps; a step strategy runs each step: ``MicroBatchSteps`` (alum.pretrain.mlm_step:
PP = 1, the fast or the lean order) or ``PipelineSteps`` (alum.pretrain.pipeline_loop:
PP > 1, megatron-core's schedule, ALUM's passes in alum.pretrain.pipeline_alum). ALUM
runs under every layout: TP > 1 (megatron-core, sequence parallel optional) through the
vocabulary-parallel divergences of alum.pretrain.alum_layout. The curriculum
(``AlumConfig.start_step``) decides per step whether the adversarial term is on.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from functools import partial
from typing import Any, Dict, List, Optional

import numpy as np
import torch
import torch.distributed as dist

from alum.atomic_write import atomic_path, atomic_write_text

from .checkpoint import (CheckpointManager, any_checkpoint, checkpoint_identity,
                         resumable_tag)
from .config import PretrainConfig
from .consolidate import LAYOUT_KEY, parallel_layout
from .data import RunData, build_run_data, train_batches, valid_batches
from .ds_config import build_ds_config, optimizer_hyperparameters, precision_of, zero_stage
from .flops import device_peak_tflops, model_dims, step_flops
from .lr_schedule import build_lr_scheduler, weight_decay_groups
from .metrics_log import MetricsLog, add_monitor_sections, format_metrics, memory_scalars
from .lean_order import lean_micro_batch
from .mlm_step import ADV_KEYS, MicroBatchSteps, all_reduce_sum, mlm_micro_batch, to_device
from .model_builder import (build_pretrain_model, enable_activation_checkpointing,
                            load_init_weights, model_config_of)
from .pipeline_loop import PipelineSteps, take_clipping
from .reshard import UNIVERSAL_INFO_KEY, prepare_layout_change, universal_checkpoint_info
from .run_stats import TrainSummary, Window, world
from .tensor_parallel import register_sequence_parallel_grad_hooks

logger = logging.getLogger("alum.pretrain")


def setup_distributed(seed: int, tensor_parallel_size: int = 1,
                      pipeline_parallel_size: int = 1, virtual_pipeline_size: int = 1,
                      timeout_minutes: float = 10.0) -> None:
    """torch.distributed (gloo on CPU, nccl on GPU) and megatron's TP/PP/DP groups, with
    ``timeout_minutes`` per collective; seeds python/numpy/torch."""
    from alum.parallel import initialize_parallel, skip_shm_comm_build

    skip_shm_comm_build()
    # initialize_parallel creates the default group (a world of one in a plain
    # process, the launcher's world otherwise) and megatron's groups and RNG tracker.
    initialize_parallel(tensor_parallel_size, pipeline_parallel_size, seed=seed,
                        virtual_pp=virtual_pipeline_size if virtual_pipeline_size > 1 else None,
                        timeout_minutes=timeout_minutes)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Builds everything a run needs from a ``PretrainConfig`` and trains."""

    def __init__(self, cfg: PretrainConfig):
        import deepspeed

        self.cfg = cfg
        tc = cfg.train
        setup_distributed(tc.seed, tc.tensor_parallel_size, tc.pipeline_parallel_size,
                          tc.virtual_pipeline_size, tc.collective_timeout_minutes)
        from megatron.core import parallel_state as ps

        self.rank, self.world = world()
        self.dp_rank = ps.get_data_parallel_rank()
        self.dp_size = ps.get_data_parallel_world_size()
        self.global_batch = tc.micro_batch_size * tc.grad_accum_steps * self.dp_size
        self.data: RunData = build_run_data(cfg.data, tc.train_steps * self.global_batch,
                                            self.global_batch, tc.seed)
        tok = self.data.tokenizer
        init_ckpt, model_config = self._init_from(len(tok), tok.pad_token_id)
        self.model = build_pretrain_model(cfg.model, len(tok), tok.pad_token_id,
                                          cfg.data.seq_length, tc.tensor_parallel_size,
                                          tc.sequence_parallel, tc.pipeline_parallel_size,
                                          tc.virtual_pipeline_size, model_config=model_config)
        if init_ckpt is not None:
            load_init_weights(self.model, init_ckpt)
        if cfg.model.freeze_encoder:
            trainable = self.model.freeze_encoder()
            logger.info("encoder frozen: training the MLM head alone (%d parameters)",
                        trainable)
        self.pipeline = tc.pipeline_parallel_size > 1
        self._grad_hooks = register_sequence_parallel_grad_hooks(self.model)
        if tc.activation_checkpointing:
            enable_activation_checkpointing(self.model)
        if tc.compile:
            from .compile import compile_layers

            compile_layers(self.model)
        self.ds_config = add_monitor_sections(build_ds_config(tc, cfg.optim, self.dp_size),
                                              cfg.logging, cfg.checkpoint.output_dir)
        self.pipeline_clip = take_clipping(self.ds_config, precision_of(self.ds_config),
                                           zero_stage(self.ds_config)) if self.pipeline else None
        hp = optimizer_hyperparameters(self.ds_config)
        groups = weight_decay_groups(self.model, hp["weight_decay"])
        from alum.parallel import mpu

        # A checkpoint of another layout: refused, or converted for the engine to load.
        self.layout_change = prepare_layout_change(cfg, self.ds_config, self.dp_size,
                                                   self.model)
        opt_cfg = cfg.optim

        def scheduler(optimizer):
            return build_lr_scheduler(optimizer, tc.train_steps, opt_cfg.warmup_steps,
                                      opt_cfg.lr_decay, hp["lr"], opt_cfg.min_lr)

        self.engine, _, _, self.lr_scheduler = deepspeed.initialize(
            model=self.model, model_parameters=groups, config=self.ds_config,
            lr_scheduler=scheduler, mpu=mpu)
        self.precision = precision_of(self.ds_config)
        if self.pipeline:
            self.steps = PipelineSteps(self.engine, cfg, self.lr_scheduler, self.dp_rank,
                                       self.dp_size, self.precision, self.pipeline_clip)
        else:
            # The order is the run's: chosen once (PretrainConfig.resolved_alum_order).
            order = lean_micro_batch if cfg.resolved_alum_order == "lean" else mlm_micro_batch
            self.steps = MicroBatchSteps(self.engine, cfg, self.lr_scheduler, self.dp_rank,
                                         self.dp_size, order)
        self.checkpoints = CheckpointManager(
            os.path.join(cfg.checkpoint.output_dir, "checkpoints"), cfg.checkpoint.keep_last,
            on_damaged=cfg.checkpoint.resume_damaged,
            identity=checkpoint_identity(model_config_of(self.model), tc.tensor_parallel_size,
                                         tc.pipeline_parallel_size, tc.virtual_pipeline_size),
            layout_change=self.layout_change)
        self.log = MetricsLog(self.engine.monitor, enabled=self.rank == 0)
        self.step = 0
        self.consumed_samples = 0
        self.adv_skipped = 0
        self.first_loss: Optional[float] = None
        self._throughput = Window()  # every logged window of this invocation
        self.model_dims = model_dims(self.engine.module)
        self.peak_tflops = cfg.logging.peak_tflops or device_peak_tflops()
        self._resume()
        self._write_run_config()

    # -- set-up ---------------------------------------------------------------
    def _init_from(self, vocab_size: int, pad_token_id: int):
        """(checkpoint whose weights to load, its architecture) for ``--init-from``.

        (None, None) without it. The rule: with resume='auto' and a complete checkpoint
        of this run in output_dir, the run resumes (``_resume``) and init_from's weights
        are not loaded; the architecture is then read from the run's own checkpoint.
        Otherwise the weights are loaded here, before DeepSpeed builds the optimizer, so
        the optimizer, the LR schedule and the step start fresh.
        """
        ck, tc = self.cfg.checkpoint, self.cfg.train
        self._init_note: Optional[str] = None
        if not ck.init_from:
            return None, None
        from .model_builder import init_from_model_config

        own = os.path.join(ck.output_dir, "checkpoints")
        resuming = ck.resume == "auto" and resumable_tag(own) is not None
        ckpt, config = init_from_model_config(
            ck.output_dir if resuming else ck.init_from, self.cfg.model, vocab_size,
            pad_token_id, self.cfg.data.seq_length, tc.tensor_parallel_size,
            tc.pipeline_parallel_size)
        if resuming:
            self._init_note = (f"init_from={ck.init_from} not loaded: {own} holds this run's "
                               f"checkpoints, which resume takes first")
            return None, config
        self._init_note = (f"initialised the model weights from {ckpt.describe()}; fresh "
                           f"optimizer, LR schedule and step 0")
        return ckpt, config

    def _resume(self) -> None:
        ck = self.cfg.checkpoint
        save_dir = self.checkpoints.save_dir
        if self._init_note:
            self.log.line(self._init_note)
        if ck.resume == "never":
            if any_checkpoint(save_dir):
                raise ValueError(f"CheckpointConfig.resume='never' but {save_dir} holds "
                                 f"checkpoints of another run; choose another output_dir or "
                                 f"resume with 'auto'")
            return
        load_dir = None if ck.resume == "auto" else ck.resume
        state = self.checkpoints.load(self.engine, load_dir=load_dir)
        if state is None:
            if load_dir is not None:
                raise ValueError(f"CheckpointConfig.resume={ck.resume!r}: no complete "
                                 f"checkpoint there")
            return
        self.step = int(state["step"])
        self.consumed_samples = int(state["consumed_samples"])
        self.adv_skipped = int(state.get("adv_skipped", 0))
        self.first_loss = state.get("first_loss")
        if self.consumed_samples % self.global_batch:
            raise ValueError(f"the checkpoint consumed {self.consumed_samples} samples, not a "
                             f"multiple of this run's global batch {self.global_batch}")
        self.log.line(f"resumed from {state['tag']}: step {self.step}, "
                      f"{self.consumed_samples} samples consumed")

    def _write_run_config(self) -> None:
        if self.rank != 0:
            return
        out = self.cfg.checkpoint.output_dir
        os.makedirs(out, exist_ok=True)
        # A copy of the tokenizer next to the checkpoints: the run stays usable when the
        # original directory (e.g. the sample-corpus cache) is gone.
        tokenizer_copy = os.path.join(out, "tokenizer")
        if not os.path.isdir(tokenizer_copy):
            with atomic_path(tokenizer_copy) as tmp:
                self.data.tokenizer.save_pretrained(tmp)
        record = {"pretrain": self.cfg.to_dict(), "deepspeed": self.ds_config,
                  "model_config": model_config_of(self.model),
                  "world_size": self.world, "tokenizer": self.data.tokenizer_path,
                  # Set when the pipeline strategy clips itself (DeepSpeed's is then off).
                  "pipeline_gradient_clipping": self.pipeline_clip,
                  "data_path": list(self.data.data_path)}
        atomic_write_text(os.path.join(out, "config.json"), json.dumps(record, indent=1))

    def client_state(self) -> Dict[str, Any]:
        """The loop's state saved with every checkpoint (and, per model-parallel rank,
        the part of the model it holds: ``consolidate.parallel_layout``, a record that
        no reader needs: they take the layout from the run's config and DeepSpeed's)."""
        return {"step": self.step, "consumed_samples": self.consumed_samples,
                "adv_skipped": self.adv_skipped, "first_loss": self.first_loss,
                "config": self.cfg.to_dict(), "tokenizer": self.data.tokenizer_path,
                "tokenizer_copy": os.path.join(self.cfg.checkpoint.output_dir, "tokenizer"),
                "data_path": list(self.data.data_path), "world_size": self.world,
                LAYOUT_KEY: parallel_layout(self.engine.module),
                UNIVERSAL_INFO_KEY: universal_checkpoint_info(self.engine.module)}

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
                or self.pipeline:
            return None
        from .flip_check import flip_rates

        batches = valid_batches(self.data.valid, cfg.train.micro_batch_size,
                                cfg.train.eval_batches, self.dp_rank, self.dp_size)
        return flip_rates(self.engine.module, batches, cfg.alum, cfg.alum_positions,
                          cfg.train.seed, partial(to_device, device=self.engine.device),
                          all_reduce_sum)

    # -- training -------------------------------------------------------------
    def train(self) -> TrainSummary:
        cfg, tc = self.cfg, self.cfg.train
        start = self.step
        stop = tc.train_steps if tc.max_steps is None else min(tc.train_steps,
                                                                start + tc.max_steps)
        summary = TrainSummary(start_step=start, end_step=start)
        t_begin = time.time()
        batches = train_batches(self.data.train, tc.micro_batch_size, self.consumed_samples,
                                self.dp_rank, self.dp_size, cfg.data.num_workers)
        progress = None
        if self.rank == 0 and cfg.logging.progress_bar and stop > start:
            from tqdm import tqdm

            progress = tqdm(total=stop - start, initial=0, desc="alum-pretrain",
                            unit="step", dynamic_ncols=True, mininterval=1.0)
        window = Window()
        adv_totals: Dict[str, List[float]] = {k: [] for k in ADV_KEYS}
        tokens_per_step = self.global_batch * cfg.data.seq_length
        self.engine.train()
        while self.step < stop:
            alum_on = cfg.alum is not None and cfg.alum.active(self.step)
            t0 = time.time()
            step_stats = self.steps.optimizer_step(batches, alum_on)
            dt = time.time() - t0
            self.adv_skipped += int(step_stats["adv_skipped"])
            self.step += 1
            self.consumed_samples += self.global_batch
            summary.losses.append(step_stats["loss"])
            if self.first_loss is None:
                self.first_loss = step_stats["loss"]
            if alum_on:
                summary.alum_steps += 1
                for k in ADV_KEYS:
                    if step_stats.get(k) is not None:
                        adv_totals[k].append(step_stats[k])
            flops = self.step_flops(alum_on, step_stats.pop("predicted", None))
            window.add(step_stats, dt, tokens_per_step, flops / self.world)
            if progress is not None:
                progress.update(1)
                progress.set_postfix(loss=f"{step_stats['loss']:.3f}",
                                     alum="on" if alum_on else "off")
            if self.step % tc.log_interval == 0 or self.step == stop:
                self._log_window(window, progress, alum_on)
                window = Window()
            if tc.eval_interval and self.step % tc.eval_interval == 0 and self.step < stop:
                self._eval_and_log(summary, progress)
            if cfg.checkpoint.save_interval and self.step % cfg.checkpoint.save_interval == 0 \
                    and self.step < stop:
                summary.checkpoint = self.checkpoints.save(self.engine, self.step,
                                                           self.client_state())
        if progress is not None:
            progress.close()
        self._eval_and_log(summary, None)
        if cfg.checkpoint.save_at_end and stop > start:
            summary.checkpoint = self.checkpoints.save(self.engine, self.step,
                                                       self.client_state())
        if cfg.checkpoint.export_hf:
            summary.export_hf = self.export_hf(cfg.checkpoint.export_hf)
        summary.flip_check = self.flip_check()
        summary.end_step = self.step
        summary.first_loss = self.first_loss
        summary.last_loss = summary.losses[-1] if summary.losses else None
        summary.adv_skipped = self.adv_skipped
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

    def export_hf(self, directory: str) -> str:
        """Writes the live model in Hugging Face format, with the tokenizer, to ``directory``.

        Every rank calls it: under ZeRO-3 each rank holds a shard, and
        ``GatheredParameters`` assembles the full tensors on all ranks for the duration
        (a no-op for parameters that are not partitioned). Rank 0 writes it through
        ``alum.atomic_write.atomic_path`` (a temporary sibling renamed into place once
        complete), so ``directory`` is never a half-written model.
        """
        import deepspeed

        module = self.engine.module
        if not hasattr(module, "save_pretrained"):
            raise ValueError(f"{type(module).__name__} has no save_pretrained (HF export "
                             f"needs model_kind='hf')")
        directory = os.path.abspath(directory)
        with deepspeed.zero.GatheredParameters(list(module.parameters()), modifier_rank=None):
            if self.rank == 0:
                with atomic_path(directory) as tmp:
                    module.save_pretrained(tmp)
                    self.data.tokenizer.save_pretrained(tmp)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.barrier()
        self.log.line(f"exported the model in Hugging Face format to {directory}")
        return directory

    def step_flops(self, alum_on: bool, predicted: Optional[float]) -> float:
        """Model FLOPs of one optimizer step (alum.pretrain.flops): the MLM head at the
        ``predicted`` rows of the global batch, or at every position when ALUM's KL reads
        all of them (or the count is unknown)."""
        cfg = self.cfg
        tokens = self.global_batch * cfg.data.seq_length
        every_row = predicted is None or (alum_on and cfg.alum_positions == "all")
        return step_flops(self.global_batch, cfg.data.seq_length,
                          tokens if every_row else predicted, self.model_dims, alum_on,
                          cfg.alum.steps if cfg.alum else 1,
                          dense_rows=tokens if cfg.train.sequence_parallel else None)

    def _log_window(self, window: "Window", progress, alum_on: bool) -> None:
        self._throughput.merge(window)
        values: Dict[str, Optional[float]] = window.means()
        tflops = window.flops / window.seconds / 1e12 if window.seconds else None
        values["tokens_per_s"] = window.tokens / window.seconds if window.seconds else None
        values["tflops"] = tflops
        if self.peak_tflops and tflops is not None:
            values["mfu"] = tflops / self.peak_tflops
        values["alum"] = 1.0 if alum_on else 0.0
        values.update(memory_scalars())
        self.log.scalars("train", dict(values, step=float(self.step)), self.consumed_samples)
        if self.rank == 0:
            shown = {k: v for k, v in values.items() if k != "alum"}
            self.log.line(format_metrics(self.step, self.cfg.train.train_steps, shown)
                          + (" | ALUM" if alum_on else ""), progress)

    def _eval_and_log(self, summary: TrainSummary, progress) -> None:
        result = self.evaluate()
        if result is None:
            return
        result = dict(result, step=self.step)
        summary.evals.append(result)
        self.log.scalars("valid", {"loss": result["loss"], "accuracy": result["accuracy"]},
                         self.consumed_samples)
        self.log.line(f"validation at step {self.step}: loss {result['loss']:.4f} | "
                      f"MLM accuracy {result['accuracy']:.4f}", progress)
