"""FLOP count of a BERT/RoBERTa MLM training step, with ALUM's extra passes (docs/pretrain.md).

F, one forward pass over a sequence of T tokens (matrix multiplies only, 2 FLOPs per
multiply-add; LayerNorm, softmax, GELU and the embedding lookups are ignored), for
L layers of width H, MLP width M and vocabulary V:

    per layer:  QKV 6TH² + attention scores and context 4T²H + output 2TH² + MLP 4THM
    head:       dense 2TH² + decoder 2THV
    F = L·(8TH² + 4T²H + 4THM) + 2TH² + 2THV

Backward costs 2F, so a standard step is 3F per sequence. ALUM with K ascent steps
(shared/ALUM.md, cost model) adds K·(perturbed forward F + δ-only backward F) and
the final perturbed forward and backward 3F: (6 + 2K)·F. Activation checkpointing
recomputes the encoder's forward once more in each backward that reaches it; that
recomputation is not counted (MFU counts model FLOPs, as in Megatron-LM).
"""
from __future__ import annotations

from typing import Optional

import torch


def forward_flops_per_sequence(seq_length: int, hidden: int, layers: int, ffn: int,
                               vocab: int) -> float:
    """F: one forward pass over one sequence (formula in the module docstring)."""
    t, h = float(seq_length), float(hidden)
    per_layer = 8 * t * h * h + 4 * t * t * h + 4 * t * h * ffn
    return layers * per_layer + 2 * t * h * h + 2 * t * h * vocab


def step_flops_multiplier(alum_active: bool, alum_steps: int) -> int:
    """Forward passes' worth of work per sequence: 3 (standard) or 6 + 2K (ALUM)."""
    return 6 + 2 * alum_steps if alum_active else 3


# Dense bf16/fp16 tensor-core peaks (TFLOP/s) of common accelerators (vendor sheets,
# SXM parts, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A10G": 125.0, "L4": 121.0,
               "V100": 125.0, "T4": 65.0}


def device_peak_tflops() -> Optional[float]:
    """The current CUDA device's peak from ``PEAK_TFLOPS``, None on CPU or when unknown."""
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, value in PEAK_TFLOPS.items():
        if key in name:
            return value
    return None


def model_dims(model: torch.nn.Module) -> dict:
    """hidden, layers, ffn and vocab of an alum.models.BertMLM or an HF adapter."""
    cfg = model.config
    if hasattr(cfg, "num_layers"):  # alum.models.ModelConfig
        return dict(hidden=cfg.hidden_size, layers=cfg.num_layers, ffn=cfg.ffn_hidden_size,
                    vocab=getattr(model, "padded_vocab", cfg.vocab_size))
    return dict(hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                ffn=cfg.intermediate_size, vocab=cfg.vocab_size)
