"""Everything a pre-training run needs before its first step, built from a
``PretrainConfig`` (docs/pretrain.md).

``build_run`` sets up torch.distributed and megatron's groups, reads the data, builds the
model (from ``--init-from``'s weights where asked), hands it to ``deepspeed.initialize``,
picks the step strategy (``MicroBatchSteps`` at PP = 1 in the run's order,
``PipelineSteps`` at PP > 1), opens the checkpoints, resumes (alum.pretrain.run_state) and
records the run's ``config.json``. The loop (alum.pretrain.trainer) gets the result, a
``Run``, and nothing else.
"""
from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch

from .checkpoint import CheckpointManager, checkpoint_identity
from .config import PretrainConfig
from .data import RunData, build_run_data
from .ds_config import build_ds_config, optimizer_hyperparameters, precision_of, zero_stage
from .lean_order import lean_micro_batch
from .lr_schedule import build_lr_scheduler, weight_decay_groups
from .metrics_log import MetricsLog, add_monitor_sections
from .mlm_step import MicroBatchSteps, mlm_micro_batch
from .model_builder import (build_pretrain_model, enable_activation_checkpointing,
                            load_init_weights, model_config_of)
from .pipeline_loop import PipelineSteps, take_clipping
from .reshard import LayoutChange, prepare_layout_change
from .run_state import RunProgress, init_from_choice, resume_progress, write_run_config
from .run_stats import world
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


@dataclass
class Run:
    """What the training loop gets: the built run, ready for its next step."""

    engine: Any
    """The DeepSpeed engine (its module is the model, or this rank's pipeline stage)."""
    lr_scheduler: Any
    """The engine's LR schedule (alum.pretrain.lr_schedule)."""
    steps: Any
    """The step strategy: ``MicroBatchSteps`` (PP = 1) or ``PipelineSteps`` (PP > 1); its
    ``optimizer_step`` runs one step, its ``evaluate`` the validation."""
    data: RunData
    """The training and validation sets and the tokenizer."""
    checkpoints: CheckpointManager
    """Saves (and resumed) this run's checkpoints under ``output_dir/checkpoints``."""
    log: MetricsLog
    """Log lines and DeepSpeed's monitor (rank 0 writes)."""
    progress: RunProgress
    """Where the run stands: step 0, or what the resumed checkpoint saved."""
    rank: int
    """This process's global rank."""
    world: int
    """The number of processes."""
    dp_rank: int
    """This rank's index in its data-parallel group."""
    dp_size: int
    """The data-parallel size (world / (TP x PP))."""
    global_batch: int
    """Sequences per optimizer step over all data-parallel ranks."""
    layout_change: Optional[LayoutChange]
    """The conversion of a checkpoint saved at another parallel layout, or None."""
    init_note: Optional[str]
    """The logged line saying whether ``--init-from``'s weights were loaded (None
    without it)."""


def build_run(cfg: PretrainConfig) -> Run:
    """Builds the run ``cfg`` describes, resumed where its checkpoints say (see the module
    docstring); the order of the steps below is the random streams' order."""
    import deepspeed

    tc = cfg.train
    setup_distributed(tc.seed, tc.tensor_parallel_size, tc.pipeline_parallel_size,
                      tc.virtual_pipeline_size, tc.collective_timeout_minutes)
    from megatron.core import parallel_state as ps

    rank, world_size = world()
    dp_rank = ps.get_data_parallel_rank()
    dp_size = ps.get_data_parallel_world_size()
    global_batch = tc.micro_batch_size * tc.grad_accum_steps * dp_size
    data = build_run_data(cfg.data, tc.train_steps * global_batch, global_batch, tc.seed)
    tok = data.tokenizer
    init = init_from_choice(cfg, len(tok), tok.pad_token_id)
    model = build_pretrain_model(cfg.model, len(tok), tok.pad_token_id, cfg.data.seq_length,
                                 tc.tensor_parallel_size, tc.sequence_parallel,
                                 tc.pipeline_parallel_size, tc.virtual_pipeline_size,
                                 model_config=init.model_config)
    if init.checkpoint is not None:
        load_init_weights(model, init.checkpoint)
    if cfg.model.freeze_encoder:
        trainable = model.freeze_encoder()
        logger.info("encoder frozen: training the MLM head alone (%d parameters)", trainable)
    pipeline = tc.pipeline_parallel_size > 1
    # The hooks live as long as the model's parameters: nothing needs their handles.
    register_sequence_parallel_grad_hooks(model)
    if tc.activation_checkpointing:
        enable_activation_checkpointing(model)
    if tc.compile:
        from .compile import compile_layers

        compile_layers(model)
    ds_config = add_monitor_sections(build_ds_config(tc, cfg.optim, dp_size), cfg.logging,
                                     cfg.checkpoint.output_dir)
    precision = precision_of(ds_config)
    pipeline_clip = take_clipping(ds_config, precision,
                                  zero_stage(ds_config)) if pipeline else None
    hp = optimizer_hyperparameters(ds_config)
    groups = weight_decay_groups(model, hp["weight_decay"])
    from alum.parallel import mpu

    # A checkpoint of another layout: refused, or converted for the engine to load.
    layout_change = prepare_layout_change(cfg, ds_config, dp_size, model)
    opt_cfg = cfg.optim

    def scheduler(optimizer):
        return build_lr_scheduler(optimizer, tc.train_steps, opt_cfg.warmup_steps,
                                  opt_cfg.lr_decay, hp["lr"], opt_cfg.min_lr)

    engine, _, _, lr_scheduler = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds_config, lr_scheduler=scheduler,
        mpu=mpu)
    if pipeline:
        steps = PipelineSteps(engine, cfg, lr_scheduler, dp_rank, dp_size, precision,
                              pipeline_clip)
    else:
        # The order is the run's: chosen once (PretrainConfig.resolved_alum_order).
        order = lean_micro_batch if cfg.resolved_alum_order == "lean" else mlm_micro_batch
        steps = MicroBatchSteps(engine, cfg, lr_scheduler, dp_rank, dp_size, order)
    architecture = model_config_of(model)
    checkpoints = CheckpointManager(
        os.path.join(cfg.checkpoint.output_dir, "checkpoints"), cfg.checkpoint.keep_last,
        on_damaged=cfg.checkpoint.resume_damaged,
        identity=checkpoint_identity(architecture, tc.tensor_parallel_size,
                                     tc.pipeline_parallel_size, tc.virtual_pipeline_size),
        layout_change=layout_change)
    log = MetricsLog(engine.monitor, enabled=rank == 0)
    if init.note:
        log.line(init.note)
    progress = resume_progress(cfg.checkpoint, checkpoints, engine, global_batch, log)
    if rank == 0:
        write_run_config(cfg, data, ds_config, architecture, world_size, pipeline_clip)
    return Run(engine=engine, lr_scheduler=lr_scheduler, steps=steps, data=data,
               checkpoints=checkpoints, log=log, progress=progress, rank=rank,
               world=world_size, dp_rank=dp_rank, dp_size=dp_size, global_batch=global_batch,
               layout_change=layout_change, init_note=init.note)
