"""Triton kernels of the fused symmetric KL over a large vocabulary (ALUM's final term).

Import this module only when Triton is usable: ``@triton.jit`` reads TRITON_INTERPRET
when a kernel is defined, so the interpreter (CPU tensors, CI) must be switched on
before the first import (alum/kernels/sym_kl.py imports it lazily).

The identity that makes one pass enough (p = softmax(clean), q = softmax(adv), and
c, a their logits; KL(p‖q) = Σ p (log p − log q), docs/algorithm.md, "Divergences"):

    KL(p‖q) + KL(q‖p) = Σ_v (p_v − q_v)(log p_v − log q_v) = Σ_v (p_v − q_v)(c_v − a_v)

because log p − log q = (c − a) − (lse_c − lse_a) and Σ (p − q) = 0. So per row the
forward needs only the online-softmax statistics of both rows (running max m,
Z = Σ exp(x − m)) and S = Σ exp(x − m)(c − a − k), for x = a and x = c, accumulated in
fp32 over vocabulary blocks: loss_row = S_c/Z_c − S_a/Z_a. k is any per-row constant
(Σ (p − q) k = 0); taking k = c_0 − a_0 removes a common offset of the two rows from the
products and so the cancellation between the two expectations.

With the stop-gradients of ALUM's term (KL(sg p ‖ q) + KL(sg q ‖ p)) the gradients are
∂/∂a = w (q − p) and ∂/∂c = w (p − q) for the row weight w, recomputed in one more pass
from the logits and the saved log-normalisers. No [rows, vocab] fp32 tensor is ever
materialised; only the two gradients (in the logits' dtype) are written.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

# Statistics layout per row (fp32): max, normaliser and S, for adv then clean.
N_STATS = 6
M_A, Z_A, S_A, M_C, Z_C, S_C = range(N_STATS)


@triton.jit
def _sym_kl_stats_kernel(adv_ptr, clean_ptr, adv_row_stride, clean_row_stride, weight_ptr,
                         stats_ptr, n_cols, USE_SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    adv_row = adv_ptr + row * adv_row_stride
    clean_row = clean_ptr + row * clean_row_stride
    out = stats_ptr + row * 6
    weight = tl.load(weight_ptr + row)
    if weight == 0.0:
        # A masked-out row contributes nothing: skip its logits (most rows when the KL is
        # taken at the masked positions of an MLM batch, as in pre-training).
        tl.store(out + 0, -float("inf"))
        tl.store(out + 1, 1.0)
        tl.store(out + 2, 0.0)
        tl.store(out + 3, -float("inf"))
        tl.store(out + 4, 1.0)
        tl.store(out + 5, 0.0)
    else:
        shift = 0.0
        if USE_SHIFT:
            shift = tl.load(clean_row).to(tl.float32) - tl.load(adv_row).to(tl.float32)
        m_a = -float("inf")
        z_a = 0.0
        s_a = 0.0
        m_c = -float("inf")
        z_c = 0.0
        s_c = 0.0
        for start in range(0, n_cols, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            valid = offs < n_cols
            a_raw = tl.load(adv_row + offs, mask=valid, other=0.0).to(tl.float32)
            c_raw = tl.load(clean_row + offs, mask=valid, other=0.0).to(tl.float32)
            diff = tl.where(valid, (c_raw - a_raw) - shift, 0.0)
            a = tl.where(valid, a_raw, -float("inf"))  # exp(-inf) = 0 past the vocabulary
            c = tl.where(valid, c_raw, -float("inf"))
            # Online softmax (Milakov & Gimelshein 2018): rescale the running sums when the
            # block raises the running max.
            new_m_a = tl.maximum(m_a, tl.max(a, axis=0))
            new_m_c = tl.maximum(m_c, tl.max(c, axis=0))
            e_a = tl.exp(a - new_m_a)
            e_c = tl.exp(c - new_m_c)
            rescale_a = tl.exp(m_a - new_m_a)
            rescale_c = tl.exp(m_c - new_m_c)
            z_a = z_a * rescale_a + tl.sum(e_a, axis=0)
            s_a = s_a * rescale_a + tl.sum(e_a * diff, axis=0)
            z_c = z_c * rescale_c + tl.sum(e_c, axis=0)
            s_c = s_c * rescale_c + tl.sum(e_c * diff, axis=0)
            m_a = new_m_a
            m_c = new_m_c
        tl.store(out + 0, m_a)
        tl.store(out + 1, z_a)
        tl.store(out + 2, s_a)
        tl.store(out + 3, m_c)
        tl.store(out + 4, z_c)
        tl.store(out + 5, s_c)


@triton.jit
def _sym_kl_grad_kernel(adv_ptr, clean_ptr, adv_row_stride, clean_row_stride, lse_ptr,
                        scale_ptr, grad_adv_ptr, grad_clean_ptr, n_cols,
                        WRITE_ADV: tl.constexpr, WRITE_CLEAN: tl.constexpr,
                        BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    adv_row = adv_ptr + row * adv_row_stride
    clean_row = clean_ptr + row * clean_row_stride
    grad_adv_row = grad_adv_ptr + row * n_cols
    grad_clean_row = grad_clean_ptr + row * n_cols
    scale = tl.load(scale_ptr + row)  # grad_output × row weight
    lse_a = tl.load(lse_ptr + row * 2)
    lse_c = tl.load(lse_ptr + row * 2 + 1)
    for start in range(0, n_cols, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        valid = offs < n_cols
        if scale == 0.0:
            g = tl.zeros([BLOCK], dtype=tl.float32)
        else:
            a = tl.load(adv_row + offs, mask=valid, other=0.0).to(tl.float32)
            c = tl.load(clean_row + offs, mask=valid, other=0.0).to(tl.float32)
            # ∂/∂a KL(sg p ‖ q) = q − p; ∂/∂c KL(sg q ‖ p) = p − q.
            g = scale * (tl.exp(a - lse_a) - tl.exp(c - lse_c))
        if WRITE_ADV:
            tl.store(grad_adv_row + offs, g.to(grad_adv_ptr.dtype.element_ty), mask=valid)
        if WRITE_CLEAN:
            tl.store(grad_clean_row + offs, (-g).to(grad_clean_ptr.dtype.element_ty), mask=valid)


def block_size(n_cols: int) -> int:
    """Vocabulary block per loop iteration: up to 4096 (8 warps keep it in registers)."""
    return min(4096, max(16, triton.next_power_of_2(n_cols)))


def num_warps(block: int) -> int:
    return 8 if block >= 2048 else 4


def sym_kl_stats(adv: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                 use_shift: bool) -> torch.Tensor:
    """[rows, 6] fp32 statistics of two [rows, vocab] logit tensors (unit column stride)."""
    rows, n_cols = adv.shape
    stats = torch.empty((rows, N_STATS), dtype=torch.float32, device=adv.device)
    if rows == 0:
        return stats
    block = block_size(n_cols)
    _sym_kl_stats_kernel[(rows,)](adv, clean, adv.stride(0), clean.stride(0), weight, stats,
                                  n_cols, USE_SHIFT=use_shift, BLOCK=block,
                                  num_warps=num_warps(block))
    return stats


def sym_kl_grads(adv: torch.Tensor, clean: torch.Tensor, lse: torch.Tensor,
                 scale: torch.Tensor, write_adv: bool, write_clean: bool):
    """(grad_adv, grad_clean), contiguous in the logits' dtypes (None where not written)."""
    rows, n_cols = adv.shape
    grad_adv = torch.empty((rows, n_cols), dtype=adv.dtype, device=adv.device) \
        if write_adv else None
    grad_clean = torch.empty((rows, n_cols), dtype=clean.dtype, device=clean.device) \
        if write_clean else None
    if rows == 0 or not (write_adv or write_clean):
        return grad_adv, grad_clean
    block = block_size(n_cols)
    # An unwritten gradient still needs a typed pointer: pass the other one.
    ga = grad_adv if grad_adv is not None else grad_clean
    gc = grad_clean if grad_clean is not None else grad_adv
    _sym_kl_grad_kernel[(rows,)](adv, clean, adv.stride(0), clean.stride(0), lse, scale, ga, gc,
                                 n_cols, WRITE_ADV=write_adv, WRITE_CLEAN=write_clean,
                                 BLOCK=block, num_warps=num_warps(block))
    return grad_adv, grad_clean
