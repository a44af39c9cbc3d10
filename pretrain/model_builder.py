"""Build the model a run trains: this rank's part of alum.models' BERT, or an HF model.

Both expose the interface of alum.pretrain.hf_mlm_adapter (``embed``,
``forward_from_embeddings``, ``forward``, ``mlm_loss``). Activation checkpointing
is switched on here because alum.models.BertMLM has no switch of its own: each
encoder layer's forward is wrapped in a recomputing checkpoint in place (no new
module, so parameter names and checkpoints are unchanged).
"""
from __future__ import annotations

import functools
import logging
import os
from typing import Any, Optional

import torch
from torch import nn

from alum.models.run_config import megatron_model_config

from .config import ModelChoice

logger = logging.getLogger("alum.pretrain")


def build_megatron_bert(choice: ModelChoice, vocab_size: int, pad_token_id: int,
                        seq_length: int, tensor_parallel_size: int = 1,
                        sequence_parallel: bool = False,
                        pipeline_parallel_size: int = 1,
                        virtual_pipeline_size: int = 1, *,
                        model_config=None) -> nn.Module:
    """This rank's alum.models.BertMLM (its pipeline stage when ``pipeline_parallel_size``
    > 1; needs ``initialize_parallel(tp, pp)``), or, with ``virtual_pipeline_size`` > 1,
    its model chunks of the interleaved schedule in one ``PipelineChunks``.
    ``model_config``: the architecture to build (``--init-from``), instead of the one
    ``megatron_model_config`` derives from ``choice``."""
    from alum.parallel import ParallelConfig, build_model
    from alum.parallel.pipeline import PipelineChunks

    config = model_config or megatron_model_config(choice, vocab_size, pad_token_id,
                                                   seq_length)
    parallel = ParallelConfig(tensor_parallel_size=tensor_parallel_size,
                              sequence_parallel=sequence_parallel,
                              pipeline_parallel_size=pipeline_parallel_size,
                              virtual_pipeline_size=virtual_pipeline_size
                              if virtual_pipeline_size > 1 else None)
    parallel.check_model(config, seq_length)
    chunks = build_model(config, parallel)
    for chunk in chunks:
        if pipeline_parallel_size > 1 and chunk.post_process and not chunk.pre_process:
            # The last stage's copy of the tied word embedding: DeepSpeed's gradient-norm
            # (clipping) skips parameters marked ds_pipe_replicated, so it is counted once.
            for p in chunk.parameters():
                if getattr(p, "shared_embedding", False):
                    p.ds_pipe_replicated = True
    return chunks[0] if len(chunks) == 1 else PipelineChunks(chunks)


def build_pretrain_model(choice: ModelChoice, vocab_size: int, pad_token_id: int,
                         seq_length: int, tensor_parallel_size: int = 1,
                         sequence_parallel: bool = False,
                         pipeline_parallel_size: int = 1,
                         virtual_pipeline_size: int = 1, *,
                         model_config=None) -> nn.Module:
    """The model ``choice`` names, on the CPU in fp32 (DeepSpeed moves and casts it);
    ``model_config`` as in ``build_megatron_bert``."""
    if choice.model_kind == "hf":
        from .hf_mlm_adapter import load_hf_masked_lm

        model = load_hf_masked_lm(choice.hf_model, dropout=choice.dropout)
        model_vocab = model.config.vocab_size
        if model_vocab < vocab_size:
            raise ValueError(f"the tokenizer has {vocab_size} tokens but {choice.hf_model} "
                             f"embeds only {model_vocab}")
        return model
    return build_megatron_bert(choice, vocab_size, pad_token_id, seq_length,
                               tensor_parallel_size, sequence_parallel,
                               pipeline_parallel_size, virtual_pipeline_size,
                               model_config=model_config)


def init_from_model_config(init_from: str, choice: ModelChoice, vocab_size: int,
                           pad_token_id: int, seq_length: int, tensor_parallel_size: int,
                           pipeline_parallel_size: int):
    """(checkpoint, ModelConfig) for ``--init-from``: the checkpoint's architecture, checked.

    The architecture (family, sizes, vocabulary, positions) is the checkpoint's; what
    the run says about it must agree, else a ValueError naming the field: explicit
    ``hidden_size``/``num_layers``, the family, the tokenizer's size and pad id, the
    sequence length (within the position table) and the TP/PP sizes (the shards are
    loaded as they are: ``alum-convert reshape`` changes them). Dropout and the
    initialisation seed are the run's.
    """
    from alum.tools.convert.our_checkpoint import OurCheckpoint

    if not os.path.isdir(init_from):
        raise ValueError(f"CheckpointConfig.init_from={init_from!r}: no such directory")
    ckpt = OurCheckpoint.open(init_from)
    cfg = ckpt.model_config
    where = f"the checkpoint at {init_from}"

    def mismatch(field: str, ours: Any, theirs: Any, hint: str = "") -> ValueError:
        return ValueError(f"{field}={ours!r} does not match {where} ({theirs!r}){hint}")

    for field, value in (("hidden_size", choice.hidden_size), ("num_layers", choice.num_layers)):
        if value is not None and value != getattr(cfg, field):
            raise mismatch(f"ModelChoice.{field}", value, getattr(cfg, field),
                           "; leave it out: the architecture comes from the checkpoint")
    if choice.family != cfg.family:
        raise mismatch("ModelChoice.family", choice.family, cfg.family)
    if vocab_size != cfg.vocab_size:
        raise mismatch("ModelConfig.vocab_size (the tokenizer's length, DataConfig.tokenizer)",
                       vocab_size, cfg.vocab_size, ": use the checkpoint's tokenizer")
    if pad_token_id != cfg.pad_token_id:
        raise mismatch("ModelConfig.pad_token_id (the tokenizer's pad id)", pad_token_id,
                       cfg.pad_token_id, ": use the checkpoint's tokenizer")
    if seq_length > cfg.max_sequence_length:
        raise mismatch("DataConfig.seq_length", seq_length, cfg.max_sequence_length,
                       ": the position table is shorter")
    for field, value, theirs in (("tensor_parallel_size", tensor_parallel_size, ckpt.tp),
                                 ("pipeline_parallel_size", pipeline_parallel_size, ckpt.pp)):
        if value != theirs:
            raise mismatch(f"TrainConfig.{field}", value, theirs,
                           f"; convert it first: alum-convert reshape {init_from} DST "
                           f"--tp {tensor_parallel_size} --pp {pipeline_parallel_size}")
    return ckpt, cfg.replace(hidden_dropout=choice.dropout, attention_dropout=choice.dropout,
                             init_seed=choice.init_seed)


def model_config_of(model: nn.Module) -> Optional[dict]:
    """The alum.models.ModelConfig (as a dict) of a built megatron model; None for HF."""
    from alum.models import ModelConfig

    for module in [model] + list(getattr(model, "chunks", None) or []):
        config = getattr(module, "config", None)
        if isinstance(config, ModelConfig):
            return config.to_dict()
    return None


def load_init_weights(model: nn.Module, ckpt) -> None:
    """Copy this rank's shard of ``ckpt`` (an alum.tools.convert OurCheckpoint) into ``model``.

    Every parameter must be there with its shape; megatron's ``_extra_state`` entries
    (None) are not weights. Runs before DeepSpeed wraps the model, which then builds
    its optimizer (and, in bf16/fp16, its fp32 masters from the cast module) afresh.
    """
    from megatron.core import parallel_state as ps

    from alum.tools.convert.our_checkpoint import materialize

    if isinstance(getattr(model, "chunks", None), nn.ModuleList):
        raise ValueError("CheckpointConfig.init_from does not load interleaved pipeline "
                         "chunks (TrainConfig.virtual_pipeline_size > 1)")
    state = materialize(ckpt.rank_state(ps.get_tensor_model_parallel_rank(),
                                        ps.get_pipeline_model_parallel_rank()))
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise ValueError(f"CheckpointConfig.init_from: {ckpt.tag_dir} does not fit the model: "
                         f"missing {missing}, unexpected {unexpected}")


def _megatron_rng_tracker() -> Any:
    try:
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
    except ImportError:  # pragma: no cover - megatron-core is a dependency
        return None
    tracker = get_cuda_rng_tracker()
    return tracker if getattr(tracker, "is_initialized", lambda: False)() else None


def _checkpointed(forward: Any, *args: Any) -> Any:
    """``forward(*args)`` under torch's non-reentrant checkpoint.

    Non-reentrant: ALUM's ascent takes ``autograd.grad`` w.r.t. δ only, and a reentrant
    checkpoint (megatron's ``CheckpointFunction``) would run a full backward in its
    recompute and accumulate weight gradients there. torch restores the default RNG
    for the recompute; dropout in megatron's tracker regions draws from the tracker's
    named states, which we replay here so the recomputed masks equal the forward's.
    """
    tracker = _megatron_rng_tracker()
    saved = dict(tracker.get_states()) if tracker is not None else None
    calls = [0]

    def run(*inputs: Any) -> Any:
        calls[0] += 1
        if calls[0] == 1 or saved is None:
            return forward(*inputs)
        current = tracker.get_states()
        tracker.set_states(dict(saved))
        try:
            return forward(*inputs)
        finally:
            tracker.set_states(current)

    return torch.utils.checkpoint.checkpoint(run, *args, use_reentrant=False)


def enable_activation_checkpointing(model: nn.Module) -> bool:
    """Recompute each encoder layer in backward; True when the model supports it."""
    chunks = getattr(model, "chunks", None)
    if isinstance(chunks, nn.ModuleList):  # alum.parallel.pipeline.PipelineChunks
        return all([enable_activation_checkpointing(chunk) for chunk in chunks])
    if hasattr(model, "enable_activation_checkpointing"):
        model.enable_activation_checkpointing()
        return True
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        logger.warning("activation checkpointing requested but %s has no .layers: ignored",
                       type(model).__name__)
        return False
    for layer in layers:
        layer.forward = functools.partial(_checkpointed, layer.forward)
    return True
