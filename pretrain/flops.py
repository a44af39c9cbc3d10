"""FLOP count of a BERT/RoBERTa MLM training step, with ALUM's extra passes (docs/pretrain.md).

Matrix multiplies only, 2 FLOPs per multiply-add (LayerNorm, softmax, GELU and the
embedding lookups are ignored), for L layers of width H, MLP width M, vocabulary V
(the padded one the decoder computes) and sequences of T tokens:

    encoder, per sequence:  L·(QKV 6TH² + scores and context 4T²H + output 2TH² + MLP 4THM)
    MLM head, per row:      dense 2H² + decoder 2HV

The head runs at the rows it is asked for (alum.models.BertMLM and the HF adapter
evaluate it at the predicted positions only, or at every position when ALUM's KL
reads all of them), so one forward pass over a batch of S sequences with N head rows
costs F = S·L·(8TH² + 4T²H + 4THM) + N·(2H² + 2HV).

Backward costs 2F, so a standard step is 3F. ALUM with K ascent steps (docs/algorithm.md,
cost model) adds K·(perturbed forward F + δ-only backward F) and the final perturbed
forward and backward 3F: (6 + 2K)·F, every pass running the head at the same rows.
Activation checkpointing's recomputation and the lean order's extra forward are not
counted (MFU counts model FLOPs, as in Megatron-LM).
"""
from __future__ import annotations

from typing import Optional

import torch


def encoder_flops_per_sequence(seq_length: int, hidden: int, layers: int, ffn: int) -> float:
    """The encoder layers' forward FLOPs over one sequence of ``seq_length`` tokens."""
    t, h = float(seq_length), float(hidden)
    return layers * (8 * t * h * h + 4 * t * t * h + 4 * t * h * ffn)


def head_flops_per_row(hidden: int, vocab: int) -> float:
    """The MLM head's forward FLOPs at one row: dense H×H and decoder H×V."""
    h = float(hidden)
    return 2 * h * h + 2 * h * vocab


def forward_flops(sequences: int, seq_length: int, head_rows: float, hidden: int, layers: int,
                  ffn: int, vocab: int, dense_rows: Optional[float] = None) -> float:
    """F of one forward pass: ``sequences`` through the encoder, the head at ``head_rows``.

    ``dense_rows``: rows the head's dense layer runs at when it differs from the
    decoder's (under sequence parallel the dense layer sees every position of its shard
    and the rows are picked after it); default ``head_rows``.
    """
    dense_rows = head_rows if dense_rows is None else dense_rows
    h = float(hidden)
    return (sequences * encoder_flops_per_sequence(seq_length, hidden, layers, ffn)
            + dense_rows * 2 * h * h + head_rows * 2 * h * vocab)


def forward_flops_per_sequence(seq_length: int, hidden: int, layers: int, ffn: int,
                               vocab: int, head_rows: Optional[float] = None) -> float:
    """F over one sequence, the head at ``head_rows`` of its positions (default: all)."""
    rows = float(seq_length) if head_rows is None else head_rows
    return forward_flops(1, seq_length, rows, hidden, layers, ffn, vocab)


def step_flops_multiplier(alum_active: bool, alum_steps: int) -> int:
    """Forward passes' worth of work per step: 3 (standard) or 6 + 2K (ALUM)."""
    return 6 + 2 * alum_steps if alum_active else 3


def step_flops(sequences: int, seq_length: int, head_rows: float, dims: dict,
               alum_active: bool = False, alum_steps: int = 1,
               dense_rows: Optional[float] = None) -> float:
    """Model FLOPs of one training step over ``sequences`` with the head at ``head_rows``
    (``dims``: hidden, layers, ffn, vocab as ``model_dims`` gives them)."""
    return step_flops_multiplier(alum_active, alum_steps) * forward_flops(
        sequences, seq_length, head_rows, dense_rows=dense_rows, **dims)


# Dense bf16/fp16 tensor-core peaks (TFLOP/s) of common accelerators, no sparsity, by the
# vendors' datasheets. Matched against torch.cuda.get_device_name() in this order: the
# first key that occurs in the name wins, so the PCIe/NVL parts come before their SXM ones.
PEAK_TFLOPS = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0),
               ("H800", 989.0), ("GH200", 989.0), ("A100", 312.0), ("A800", 312.0),
               ("L40S", 362.0), ("L40", 181.0), ("A10G", 125.0), ("A10", 125.0), ("L4", 121.0),
               ("V100", 125.0), ("T4", 65.0))


def peak_tflops_of(device_name: str) -> Optional[float]:
    """The dense bf16/fp16 peak of a device from its name (``PEAK_TFLOPS``), or None."""
    for key, value in PEAK_TFLOPS:
        if key in device_name:
            return value
    return None


def device_peak_tflops() -> Optional[float]:
    """The current CUDA device's peak (``peak_tflops_of``), None on CPU or when unknown."""
    if not torch.cuda.is_available():
        return None
    return peak_tflops_of(torch.cuda.get_device_name())


def model_dims(model: torch.nn.Module) -> dict:
    """hidden, layers, ffn and vocab of an alum.models.BertMLM or an HF adapter."""
    cfg = model.config
    if hasattr(cfg, "num_layers"):  # alum.models.ModelConfig
        return dict(hidden=cfg.hidden_size, layers=cfg.num_layers, ffn=cfg.ffn_hidden_size,
                    vocab=getattr(model, "padded_vocab", cfg.vocab_size))
    return dict(hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                ffn=cfg.intermediate_size, vocab=cfg.vocab_size)
