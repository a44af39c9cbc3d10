"""Weight-decay parameter groups and the warmup + decay learning-rate schedule."""
from __future__ import annotations

import math
from typing import Dict, List

import torch
from torch import nn


def weight_decay_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Two AdamW groups: weight matrices decay; biases, LayerNorm and 1-D params do not.

    BERT (Devlin et al.) and RoBERTa exclude biases and LayerNorm weights from decay;
    every parameter with fewer than two dimensions is one of those. Embedding tables
    are 2-D and decay, as in the reference implementations.
    """
    decay, no_decay = [], []
    seen = set()
    for _, param in model.named_parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))  # tied weights appear once
        (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def lr_multiplier(step: int, total_steps: int, warmup_steps: int, decay: str,
                  min_ratio: float) -> float:
    """Factor of the peak lr at optimizer step ``step`` (0-based, the lr of the next update).

    Linear warmup from 0 over ``warmup_steps`` (BERT), then ``linear`` or ``cosine``
    decay to ``min_ratio`` at ``total_steps``, or ``constant``.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if decay == "constant":
        return 1.0
    span = max(total_steps - warmup_steps, 1)
    progress = min(max(step - warmup_steps, 0) / span, 1.0)
    if decay == "linear":
        shape = 1.0 - progress
    elif decay == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        raise ValueError(f"unknown lr decay {decay!r}")
    return min_ratio + (1.0 - min_ratio) * shape


def build_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       decay: str, peak_lr: float, min_lr: float
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` over :func:`lr_multiplier`; DeepSpeed steps it after each update
    and saves its state in the checkpoint."""
    min_ratio = min_lr / peak_lr if peak_lr > 0 else 0.0
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, total_steps, warmup_steps, decay,
                                              min_ratio))
