"""Running megatron-core's pipeline schedules over our model chunks.

megatron-core's ``get_forward_backward_func()`` picks the schedule: no pipelining
(PP=1, with gradient accumulation over micro-batches), 1F1B (PP>1), or
interleaved 1F1B (virtual stages). The schedules find, on the model object they
are given, a megatron ``config`` (a ``TransformerConfig``: they read fields of it
beyond ``ModelParallelConfig``), a ``model_type`` and ``set_input_tensor``. ``ScheduleView`` provides the first two
around a ``BertMLM`` chunk, so the model file stays free of megatron's config.

On CPU/gloo the interleaved schedule gives silently wrong results with batched
p2p (observed in this project's CPU runs), so ``schedule_config`` turns
``batch_p2p_comm`` off there.

``PipelineChunks`` holds a rank's model chunks of the interleaved schedule as one
module (what DeepSpeed wraps and checkpoints); ``model_chunks`` lists the chunks of
either kind of module.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from ..models.config import ModelConfig
from .config import ParallelConfig


class ScheduleView(nn.Module):
    """What the schedules need around one model chunk: ``config``, ``model_type``, ``module``."""

    def __init__(self, module: nn.Module, config: Any):
        super().__init__()
        from megatron.core.enums import ModelType

        self.module = module
        self.config = config
        self.model_type = ModelType.encoder_or_decoder

    def set_input_tensor(self, input_tensor) -> None:
        self.module.set_input_tensor(input_tensor)

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)


class PipelineChunks(nn.Module):
    """This rank's model chunks of the interleaved schedule as one ``nn.Module``.

    DeepSpeed's engine wraps one module; the schedule needs the list. Parameters are
    named ``chunks.<v>.<the chunk's own name>``. The attributes the training loop reads
    from a ``BertMLM`` (``config``, ``spec``, ``padded_vocab``) are the chunks' (equal
    on every chunk). There is no ``forward``: only the schedule runs the chunks.
    """

    def __init__(self, chunks: List[nn.Module]):
        super().__init__()
        if not chunks:
            raise ValueError("PipelineChunks needs at least one model chunk")
        self.chunks = nn.ModuleList(chunks)
        first = chunks[0]
        self.config = first.config
        self.spec = first.spec
        self.padded_vocab = first.padded_vocab

    def forward(self, *args, **kwargs):
        raise RuntimeError("PipelineChunks is run by the pipeline schedule "
                           "(alum.parallel.pipeline.run_schedule), not called")


def model_chunks(module: nn.Module) -> List[nn.Module]:
    """The schedule's list of model chunks: a ``PipelineChunks``' chunks, or ``[module]``."""
    if isinstance(module, PipelineChunks):
        return list(module.chunks)
    return [module]


def schedule_config(parallel: ParallelConfig, model: ModelConfig,
                    pipeline_dtype: torch.dtype = torch.float32,
                    finalize_model_grads_func: Optional[Callable] = None) -> Any:
    """The megatron ``TransformerConfig`` the schedules read (p2p shapes, dtype, hooks).

    Only its parallel fields, ``hidden_size`` (p2p shapes) and the hooks matter;
    the model itself is built from ``ModelConfig``.
    """
    from megatron.core.transformer import TransformerConfig

    interleaved = (parallel.virtual_pipeline_size or 1) > 1
    config = TransformerConfig(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        ffn_hidden_size=model.ffn_hidden_size,
        tensor_model_parallel_size=parallel.tensor_parallel_size,
        pipeline_model_parallel_size=parallel.pipeline_parallel_size,
        virtual_pipeline_model_parallel_size=parallel.virtual_pipeline_size,
        sequence_parallel=parallel.sequence_parallel,
        pipeline_dtype=pipeline_dtype,
        # gloo + batched isend/irecv in the interleaved schedule: wrong losses.
        batch_p2p_comm=not (interleaved and not torch.cuda.is_available()),
        use_cpu_initialization=True,
    )
    config.finalize_model_grads_func = finalize_model_grads_func
    return config


def mlm_forward_step(data_iterator: Iterator[Dict[str, torch.Tensor]], view: ScheduleView
                     ) -> Tuple[torch.Tensor, Callable]:
    """A megatron ``forward_step_func`` for MLM batches (dicts of ``[b, s]`` tensors).

    Every stage reads the same batch; the first uses the ids, the last the labels.
    The loss function returns the micro-batch's mean MLM loss (the schedule divides
    by the number of micro-batches).
    """
    batch = next(data_iterator)
    model = view.module
    predicted = batch["labels"].ne(-100)
    output = model(batch["input_ids"], batch["attention_mask"],
                   token_type_ids=batch.get("token_type_ids"), rows=predicted)

    def loss_func(labels: torch.Tensor, logits: torch.Tensor):
        loss = model.mlm_loss(logits, labels)  # logits at the predicted rows only
        # clone: the schedule divides the returned loss in place by num_microbatches.
        return loss, {"mlm_loss": loss.detach().clone()}

    return output, partial(loss_func, batch["labels"][predicted])


def run_schedule(chunks: List[nn.Module], parallel: ParallelConfig, *, model: ModelConfig,
                 data_iterator, num_microbatches: int, seq_length: int,
                 micro_batch_size: int, forward_only: bool = False,
                 forward_step_func: Callable = mlm_forward_step,
                 pipeline_dtype: torch.dtype = torch.float32,
                 finalize_model_grads_func: Optional[Callable] = None) -> List[Dict]:
    """One forward(+backward) over ``num_microbatches`` through megatron's schedule.

    Returns the loss-function dicts (on the last stage; empty elsewhere).
    ``data_iterator`` is one iterator, or one per chunk for the interleaved schedule.
    """
    from megatron.core.pipeline_parallel import get_forward_backward_func

    config = schedule_config(parallel, model, pipeline_dtype, finalize_model_grads_func)
    views = [ScheduleView(chunk, config) for chunk in chunks]
    forward_backward = get_forward_backward_func()
    return forward_backward(
        forward_step_func=forward_step_func,
        data_iterator=data_iterator,
        model=views if len(views) > 1 else views[0],
        num_microbatches=num_microbatches,
        seq_length=seq_length,
        micro_batch_size=micro_batch_size,
        forward_only=forward_only,
    )
