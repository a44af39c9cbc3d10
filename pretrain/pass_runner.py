"""How ALUM's passes reach the model: straight through the module, or through DeepSpeed.

A pass is a function run *as the module's forward* (``call_through_hooks``), so that the
hooks of the module and of the DeepSpeed engine wrapping it run: ZeRO-3 gathers its
partitioned parameters there, and the engine's forward registers the hooks that start its
backward bookkeeping. The fast order (alum.pretrain.mlm_step) runs its clean pass through a
runner; the lean order (alum.pretrain.lean_order) runs every pass and backward through one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from alum.parallel.internals import require_instance_attrs


def call_through_hooks(model: nn.Module, method: Callable, *args: torch.Tensor,
                       via: Optional[Callable] = None):
    """``method(*args)`` invoked as ``model(*args)`` (or ``via(*args)``, a wrapper of
    ``model`` such as the DeepSpeed engine), so the module's own hooks run.

    ZeRO-3 gathers partitioned parameters in forward hooks; a parameter used by a
    module that does not own it (the MLM decoder reading the tied word embedding) is
    gathered only by the root module's hooks, which a plain method call skips.
    """
    model.forward = method
    try:
        return (via or model)(*args)
    finally:
        del model.forward


@dataclass
class PassRunner:
    """How a pass reaches the model: ``forward(fn, *args)`` runs ``fn`` as the module's
    forward (so DeepSpeed's/ZeRO's hooks run); ``backward(loss, last)`` back-propagates,
    ``last`` marking the micro-batch's final backward (DeepSpeed reduces gradients there)."""

    model: nn.Module
    forward: Callable[..., Any]
    backward: Callable[[torch.Tensor, bool], None]


def module_runner(model: nn.Module) -> PassRunner:
    """Passes straight through the module (no DeepSpeed engine)."""
    return PassRunner(model, lambda fn, *args: call_through_hooks(model, fn, *args),
                      lambda loss, last: loss.backward())


def engine_runner(engine) -> PassRunner:
    """Passes through a DeepSpeed engine. Only a micro-batch's last backward may be an
    accumulation boundary: ZeRO-0/1 all-reduce there, once for both backward passes."""
    module = engine.module

    def forward(fn, *args):
        return call_through_hooks(module, fn, *args, via=engine)

    def backward(loss: torch.Tensor, last: bool) -> None:
        if last:
            engine.backward(loss)
            return
        _zero3_fresh_partitions(engine)
        engine.set_gradient_accumulation_boundary(False)
        try:
            engine.backward(loss)
        finally:
            engine.set_gradient_accumulation_boundary(None)

    return PassRunner(module, forward, backward)


def _zero3_fresh_partitions(engine) -> None:
    """Zero ZeRO-3's gradient partitions before an optimizer step's first backward.

    ZeRO-3 *copies* a gradient into its partition during the step's first backward
    (``micro_step_id == 0``) and adds afterwards, so the partitions keep the previous
    step's values until overwritten. Measured (DeepSpeed 0.19.8, tests/pretrain/
    test_alum_orders.py): after a non-boundary backward, some gradients (the embedding
    layer's, the last produced) reach their partitions only during the next backward,
    with ``micro_step_id == 1``, and are added to the stale values. With one backward per
    micro-batch that never happens at micro step 0; the lean order's two do. Starting the
    step from zeroed partitions makes copy and add agree. Both attributes are private to
    DeepSpeed's ZeRO-3 optimizer: checked, so that a release renaming them stops the run
    with its version instead of silently skipping the fix; still needed while
    tests/pretrain/test_alum_orders.py (lean order under ZeRO-3) fails without it.
    """
    if engine.zero_optimization_stage() != 3:
        return
    optimizer = engine.optimizer
    require_instance_attrs(optimizer, "deepspeed", ("micro_step_id", "grad_partitions_flat_buffer"),
                           use="zeroes the gradient partitions before a step's first backward")
    if optimizer.micro_step_id != 0:
        return
    buffer = optimizer.grad_partitions_flat_buffer
    if buffer is not None:
        buffer.zero_()


def as_runner(model: Union[nn.Module, PassRunner]) -> PassRunner:
    """``model`` itself if it is a runner, else ``module_runner(model)``."""
    return model if isinstance(model, PassRunner) else module_runner(model)
