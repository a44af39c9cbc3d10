"""Where a pre-training run starts, and the state it keeps to be resumed (docs/pretrain.md,
"Checkpoints").

A run starts from its own newest complete checkpoint (``CheckpointConfig.resume``), else
from ``--init-from``'s weights with a fresh optimizer, else from scratch:
``init_from_choice`` decides before the model is built, ``resume_progress`` loads the
checkpoint once the engine exists. ``client_state`` is what the loop saves with every
checkpoint; ``write_run_config`` records the run once, beside its checkpoints, in
``config.json`` (with a copy of the tokenizer).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Dict, Optional

from alum.atomic_write import atomic_path, atomic_write_text

from .checkpoint import CheckpointManager, any_checkpoint, resumable_tag
from .config import CheckpointConfig, PretrainConfig
from .consolidate import LAYOUT_KEY, parallel_layout
from .data import RunData
from .metrics_log import MetricsLog
from .reshard import UNIVERSAL_INFO_KEY, universal_checkpoint_info


@dataclass
class RunProgress:
    """How far the run is: what the loop advances each step and every checkpoint saves."""

    step: int = 0
    """Optimizer steps taken (the next step's index)."""
    consumed_samples: int = 0
    """Training sequences read so far, over all data-parallel ranks (where the data
    stream resumes)."""
    adv_skipped: int = 0
    """Micro-batches whose adversarial term was dropped (NaN/Inf), over data parallel."""
    first_loss: Optional[float] = None
    """The loss of the run's very first step (kept across resumes for the summary)."""


@dataclass
class InitFrom:
    """What ``--init-from`` contributes to building the model."""

    checkpoint: Any = None
    """The checkpoint whose weights to load before DeepSpeed builds the optimizer (an
    ``alum.tools`` checkpoint reader), or None: none, or the run resumes instead."""
    model_config: Optional[Dict[str, Any]] = None
    """The architecture to build (read from the checkpoint), or None for the run's own
    ``ModelChoice``."""
    note: Optional[str] = None
    """The log line saying which of init_from and resume won, or None without init_from."""


def init_from_choice(cfg: PretrainConfig, vocab_size: int, pad_token_id: int) -> InitFrom:
    """The weights and architecture ``--init-from`` gives the model (all None without it).

    The rule: with resume='auto' and a complete checkpoint of this run in output_dir, the
    run resumes (``resume_progress``) and init_from's weights are not loaded; the
    architecture is then read from the run's own checkpoint. Otherwise the weights are
    loaded before DeepSpeed builds the optimizer, so the optimizer, the LR schedule and the
    step start fresh.
    """
    ck, tc = cfg.checkpoint, cfg.train
    if not ck.init_from:
        return InitFrom()
    from .model_builder import init_from_model_config

    own = os.path.join(ck.output_dir, "checkpoints")
    resuming = ck.resume == "auto" and resumable_tag(own) is not None
    ckpt, config = init_from_model_config(
        ck.output_dir if resuming else ck.init_from, cfg.model, vocab_size, pad_token_id,
        cfg.data.seq_length, tc.tensor_parallel_size, tc.pipeline_parallel_size)
    if resuming:
        return InitFrom(None, config, f"init_from={ck.init_from} not loaded: {own} holds "
                                      f"this run's checkpoints, which resume takes first")
    return InitFrom(ckpt, config, f"initialised the model weights from {ckpt.describe()}; "
                                  f"fresh optimizer, LR schedule and step 0")


def resume_progress(ck: CheckpointConfig, checkpoints: CheckpointManager, engine,
                    global_batch: int, log: MetricsLog) -> RunProgress:
    """Loads the checkpoint ``ck.resume`` names into ``engine`` (and the RNG states); the
    progress it saved, or a fresh one when there is none to resume ('auto' with no
    checkpoint, or 'never')."""
    save_dir = checkpoints.save_dir
    if ck.resume == "never":
        if any_checkpoint(save_dir):
            raise ValueError(f"CheckpointConfig.resume='never' but {save_dir} holds "
                             f"checkpoints of another run; choose another output_dir or "
                             f"resume with 'auto'")
        return RunProgress()
    load_dir = None if ck.resume == "auto" else ck.resume
    state = checkpoints.load(engine, load_dir=load_dir)
    if state is None:
        if load_dir is not None:
            raise ValueError(f"CheckpointConfig.resume={ck.resume!r}: no complete "
                             f"checkpoint there")
        return RunProgress()
    progress = RunProgress(int(state["step"]), int(state["consumed_samples"]),
                           int(state.get("adv_skipped", 0)), state.get("first_loss"))
    if progress.consumed_samples % global_batch:
        raise ValueError(f"the checkpoint consumed {progress.consumed_samples} samples, not "
                         f"a multiple of this run's global batch {global_batch}")
    log.line(f"resumed from {state['tag']}: step {progress.step}, "
             f"{progress.consumed_samples} samples consumed")
    return progress


def tokenizer_copy_dir(cfg: PretrainConfig) -> str:
    """The copy of the tokenizer next to the checkpoints (``write_run_config``)."""
    return os.path.join(cfg.checkpoint.output_dir, "tokenizer")


def client_state(progress: RunProgress, cfg: PretrainConfig, data: RunData, world: int,
                 module) -> Dict[str, Any]:
    """The loop's state saved with every checkpoint (and, per model-parallel rank, the
    part of the model ``module`` holds: ``consolidate.parallel_layout``, a record that no
    reader needs: they take the layout from the run's config and DeepSpeed's)."""
    return {"step": progress.step, "consumed_samples": progress.consumed_samples,
            "adv_skipped": progress.adv_skipped, "first_loss": progress.first_loss,
            "config": cfg.to_dict(), "tokenizer": data.tokenizer_path,
            "tokenizer_copy": tokenizer_copy_dir(cfg),
            "data_path": list(data.data_path), "world_size": world,
            LAYOUT_KEY: parallel_layout(module),
            UNIVERSAL_INFO_KEY: universal_checkpoint_info(module)}


def write_run_config(cfg: PretrainConfig, data: RunData, ds_config: Dict[str, Any],
                     model_config: Optional[Dict[str, Any]], world: int,
                     pipeline_clip: Optional[float]) -> None:
    """``output_dir/config.json`` (the run's configuration, DeepSpeed's, the model's
    architecture, the world size, the data) and ``output_dir/tokenizer/``; called on rank 0."""
    out = cfg.checkpoint.output_dir
    os.makedirs(out, exist_ok=True)
    # A copy of the tokenizer next to the checkpoints: the run stays usable when the
    # original directory (e.g. the sample-corpus cache) is gone.
    tokenizer_copy = tokenizer_copy_dir(cfg)
    if not os.path.isdir(tokenizer_copy):
        with atomic_path(tokenizer_copy) as tmp:
            data.tokenizer.save_pretrained(tmp)
    record = {"pretrain": cfg.to_dict(), "deepspeed": ds_config,
              "model_config": model_config,
              "world_size": world, "tokenizer": data.tokenizer_path,
              # Set when the pipeline strategy clips itself (DeepSpeed's is then off).
              "pipeline_gradient_clipping": pipeline_clip,
              "data_path": list(data.data_path)}
    atomic_write_text(os.path.join(out, "config.json"), json.dumps(record, indent=1))
