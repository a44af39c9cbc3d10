"""Weight-decay parameter groups and the warmup + decay learning-rate schedule
(transformers' schedules)."""
from __future__ import annotations

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


def build_lr_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int,
                       decay: str, peak_lr: float, min_lr: float
                       ) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' schedule for ``decay``: linear warmup from 0 over ``warmup_steps``
    (BERT), then ``linear`` or ``cosine`` decay to ``min_lr`` at ``total_steps``, or
    ``constant``. DeepSpeed steps it after each update and saves its state in the
    checkpoint. A linear decay to ``min_lr`` is transformers' polynomial decay of power 1.
    """
    from transformers import optimization as hf

    if decay not in ("linear", "cosine", "constant"):
        raise ValueError(f"OptimConfig.lr_decay={decay!r}: unknown lr decay")
    if decay == "constant" or min_lr >= peak_lr or warmup_steps >= total_steps:
        # (no decay left: transformers' polynomial decay would divide by zero steps)
        return hf.get_constant_schedule_with_warmup(optimizer, warmup_steps)
    if decay == "linear":
        # It reads the peak from optimizer.defaults["lr"]: DeepSpeed builds the optimizer
        # from the completed config, whose lr is peak_lr.
        optimizer.defaults["lr"] = peak_lr
        return hf.get_polynomial_decay_schedule_with_warmup(
            optimizer, warmup_steps, total_steps, lr_end=min_lr, power=1.0)
    return hf.get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup_steps, total_steps, min_lr_rate=min_lr / peak_lr)
