"""``--compile``: torch.compile of the encoder layers, the one place it is applied.

Each ``alum.models.BertMLM`` encoder layer is compiled in place (``nn.Module.compile``),
so parameter names, checkpoints and the DeepSpeed wrapping are unchanged. Inductor
then fuses each layer's elementwise work with its neighbours, forward and backward:
the QKV / MLP bias adds with the exact (erf) GELU, and dropout + residual add +
LayerNorm after each sub-layer. That is the fused bias-GELU and LayerNorm of this
code base: megatron-core's ``bias_gelu_impl`` is the tanh approximation (a different
function from BERT's erf GELU), its ``FusedLayerNorm`` needs Apex, and torch's
``LayerNorm`` is already one kernel per direction without the residual add.

Guarded: a tiny function is compiled and run on the training device first; where
torch.compile cannot work (no C++ compiler for inductor's CPU backend, no Triton on
a GPU) the layers stay eager with one warning.

Randomness: dropout inside a compiled layer draws its masks through inductor's own
random kernels, seeded from torch's generators, so a compiled run replays itself (and
ALUM's orders replay their passes from the generator state) but its masks differ from
an eager run's. With dropout off, compiled and eager steps agree to rounding
(tests/pretrain/test_compile.py).

Which runs it supports (``TrainConfig.compile``, checked at config time): the megatron
model at TP = 1, PP = 1, without activation checkpointing and without ZeRO-3.
"""
from __future__ import annotations

import logging
import warnings
from typing import Optional

import torch
from torch import nn

logger = logging.getLogger("alum.pretrain")

_PROBED: dict = {}


def compile_unavailable_reason(device: Optional[torch.device] = None) -> Optional[str]:
    """None when torch.compile works on ``device`` (default: CUDA if present, else the
    CPU), else why not. Probed once per device type by compiling and running a small
    elementwise function with inductor."""
    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kind = torch.device(device).type
    if kind not in _PROBED:
        try:
            fn = torch.compile(lambda x: torch.nn.functional.gelu(x + 1.0) * 2.0,
                               dynamic=False)
            x = torch.linspace(-2.0, 2.0, 8, device=device)
            expected = torch.nn.functional.gelu(x + 1.0) * 2.0
            if not torch.allclose(fn(x), expected, rtol=1e-5, atol=1e-6):
                raise RuntimeError("the compiled probe gave a different result")
            _PROBED[kind] = None
        except Exception as exc:  # noqa: BLE001 - any failure means: stay eager
            _PROBED[kind] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return _PROBED[kind]


def compile_layers(model: nn.Module, device: Optional[torch.device] = None) -> bool:
    """Compile each encoder layer of ``model`` in place; True if compiled.

    False, with one warning, when torch.compile does not work on ``device`` (see
    ``compile_unavailable_reason``): the model is then left as it was.
    """
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ValueError(f"TrainConfig.compile: {type(model).__name__} has no encoder layers "
                         f"(.layers) to compile")
    reason = compile_unavailable_reason(device)
    if reason is not None:
        logger.warning("TrainConfig.compile: torch.compile does not work here (%s); the "
                       "layers run eagerly (unfused)", reason)
        return False
    import torch._dynamo

    # megatron-core's RowParallelLinear calls warnings.warn (a DeprecationWarning about
    # its tp_group argument) in every forward, which would split each layer's graph at
    # every row-parallel linear; inside compiled code it is dropped instead.
    ignored = getattr(torch._dynamo.config, "ignore_logging_functions", None)
    if ignored is not None:  # where dynamo has it; elsewhere the graph breaks there
        ignored.add(warnings.warn)
    # One compiled variant per kind of pass: training with and without parameter
    # gradients (ALUM's ascent freezes them), without a graph, evaluation, each with
    # and without a padding mask: more than dynamo's default of 8.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 32)
    for layer in layers:
        layer.compile(dynamic=False)
    return True
