"""``alum.kernels.fused_symmetric_kl``: ALUM's final term without materialising softmaxes.

Computes exactly ``alum.adversarial_divergence("sym_kl", adv, clean, mask)``
(alum/divergence.py, the oracle): KL(sg p_clean ‖ p_adv) + KL(sg p_adv ‖ p_clean), summed
over the class dimension, averaged over the rows (or the rows where ``mask`` is nonzero,
weighted by it, when its shape is the rows' shape). The Triton kernels
(sym_kl_triton.py) make one fp32 pass over the vocabulary forward and one backward; the
math and the gradient are explained there.

Path selection: Triton on CUDA tensors, and on CPU tensors when the Triton interpreter
is on (TRITON_INTERPRET=1, CI); otherwise passes written in PyTorch, in row blocks with
no softmax saved for backward (less memory and time than the reference), with one
KernelFallbackWarning when that happens on CUDA tensors: for whole rows one fused
softmax per branch (``sym_kl_softmax_torch``), for vocabulary shards the kernels'
statistics and gradients (``sym_kl_stats_torch`` / ``sym_kl_grads_torch``). Inputs the
passes do not take (float64, mismatched shapes) run the reference,
``adversarial_divergence``.
"""
from __future__ import annotations

import importlib.util
import os
from typing import Callable, Optional, Sequence, Tuple, Union

import torch

from alum.divergence import adversarial_divergence

from .fallback import warn_fallback_once

KERNEL_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
N_STATS = 6  # m_a, Z_a, S_a, m_c, Z_c, S_c per row; see sym_kl_triton.py

_TRITON_STATE: Optional[Tuple[bool, str]] = None


def triton_state() -> Tuple[bool, str]:
    """(importable, reason): whether ``triton`` imports, cached."""
    global _TRITON_STATE
    if _TRITON_STATE is None:
        if importlib.util.find_spec("triton") is None:
            _TRITON_STATE = (False, "triton is not installed (pip install triton)")
        else:
            try:
                import triton  # noqa: F401
                _TRITON_STATE = (True, f"triton {triton.__version__}")
            except Exception as exc:  # a broken install must not break training
                _TRITON_STATE = (False, f"import triton failed: {exc}")
    return _TRITON_STATE


def triton_interpreter_on() -> bool:
    """Whether Triton kernels run on CPU tensors here: TRITON_INTERPRET=1 must have been
    set before triton was first imported (triton.language's own helpers are decorated at
    import), so the variable alone is not enough."""
    if os.environ.get("TRITON_INTERPRET", "0") != "1" or not triton_state()[0]:
        return False
    import triton.language as tl
    return type(tl.max).__name__ == "InterpretedFunction"


def triton_unusable_reason(device: torch.device) -> Optional[str]:
    """Why the Triton kernels cannot run on ``device`` (None if they can)."""
    ok, why = triton_state()
    if not ok:
        return why
    if device.type == "cuda":
        return None
    if device.type == "cpu" and triton_interpreter_on():
        return None
    return (f"no Triton backend for {device.type} tensors (TRITON_INTERPRET=1, set before "
            f"triton is imported, runs CPU tensors)")


def _kernels():
    from . import sym_kl_triton  # imported lazily: TRITON_INTERPRET is read at definition
    return sym_kl_triton


# ------------------------------------------------------------------ PyTorch statistics
# The same statistics and gradients as the Triton kernels, in plain PyTorch; the
# vocab-parallel path uses them when Triton is absent and the tests compare the kernels
# with them. They walk the rows in blocks, with two fp32 [block, vocab] temporaries
# reused from block to block: no [rows, vocab] temporary is allocated (the gradient they
# return is the only full-size tensor). On CPU a block stays in the cache, and a fresh
# full-size tensor would cost page faults comparable to its arithmetic (docs/alum_cost.md);
# on CUDA the blocks are large (few launches) and only bound the temporaries' memory.
CHUNK_BYTES = {"cpu": 2 << 20, "cuda": 256 << 20}
"""Bytes of one fp32 temporary block, per device type (others: the CUDA value)."""


def block_rows(n_cols: int, device: torch.device) -> int:
    """Rows per block of the PyTorch passes (at least one)."""
    budget = CHUNK_BYTES.get(device.type, CHUNK_BYTES["cuda"])
    return max(1, budget // (4 * max(n_cols, 1)))


def _blocks(n_rows: int, n_cols: int, device: torch.device):
    step = block_rows(n_cols, device)
    for i in range(0, n_rows, step):
        yield i, min(i + step, n_rows)


def sym_kl_stats_torch(adv: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                       use_shift: bool) -> torch.Tensor:
    dtype = torch.promote_types(torch.promote_types(adv.dtype, clean.dtype), torch.float32)
    n, v = adv.shape
    stats = torch.empty(n, N_STATS, dtype=dtype, device=adv.device)
    diff = e = None
    for i, j in _blocks(n, v, adv.device):
        a, c = adv[i:j].to(dtype), clean[i:j].to(dtype)
        if diff is None:
            diff = torch.empty(j - i, v, dtype=dtype, device=adv.device)
            e = torch.empty_like(diff)
        d = torch.sub(c, a, out=diff[:j - i])
        if use_shift:
            d.sub_(d[:, :1].clone())
        for col, x in ((0, a), (3, c)):
            m = x.amax(dim=-1)
            ex = torch.sub(x, m[:, None], out=e[:j - i]).exp_()
            stats[i:j, col] = m
            stats[i:j, col + 1] = ex.sum(-1)
            stats[i:j, col + 2] = ex.mul_(d).sum(-1)
    return torch.where((weight == 0)[:, None], idle_stats(dtype, stats.device), stats)


def idle_stats(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The statistics of a skipped (weight 0) row: loss 0, as the Triton kernel stores."""
    return torch.tensor([-float("inf"), 1.0, 0.0, -float("inf"), 1.0, 0.0], dtype=dtype,
                        device=device)


def _finish_block(g: torch.Tensor, scale: torch.Tensor, ga: Optional[torch.Tensor],
                  gc: Optional[torch.Tensor], i: int, j: int, t: torch.Tensor,
                  direct: bool) -> None:
    """Scale the block's p − q (fp32, in ``g``: ``ga``'s own rows when ``direct``), zero
    its skipped rows (scale 0, whatever NaN the passes left there), and write it to
    ``ga`` and its negative to ``gc`` (``t``: a free fp32 buffer of the block's size)."""
    g.mul_(scale[:, None])
    g.masked_fill_((scale == 0)[:, None], 0.0)
    if ga is not None and not direct:
        ga[i:j] = g
    if gc is not None:
        if gc.dtype == g.dtype:
            torch.neg(g, out=gc[i:j])
        else:
            gc[i:j] = torch.neg(g, out=t[:j - i])


def sym_kl_grads_torch(adv: torch.Tensor, clean: torch.Tensor, lse: torch.Tensor,
                       scale: torch.Tensor, write_adv: bool, write_clean: bool):
    dtype = lse.dtype
    n, v = adv.shape
    ga = torch.empty_like(adv, memory_format=torch.contiguous_format) if write_adv else None
    gc = torch.empty_like(clean, memory_format=torch.contiguous_format) if write_clean else None
    # The block's gradient is computed in ga itself when it has the compute dtype.
    direct = ga is not None and ga.dtype == dtype
    g = t = None
    for i, j in _blocks(n, v, adv.device):
        k = j - i
        if t is None:
            t = torch.empty(k, v, dtype=dtype, device=adv.device)
            g = None if direct else torch.empty_like(t)
        gi = ga[i:j] if direct else g[:k]
        torch.sub(adv[i:j].to(dtype), lse[i:j, :1], out=gi).exp_()                # p_adv
        gi.sub_(torch.sub(clean[i:j].to(dtype), lse[i:j, 1:], out=t[:k]).exp_())  # − p_clean
        _finish_block(gi, scale[i:j], ga, gc, i, j, t, direct)  # idle rows: lse = -inf
    return ga, gc


def sym_kl_softmax_torch(adv: torch.Tensor, clean: torch.Tensor, weight: torch.Tensor,
                         want_value: bool = True, scale: Optional[torch.Tensor] = None,
                         write_adv: bool = False, write_clean: bool = False):
    """(loss or None, ∂/∂adv or None, ∂/∂clean or None) of whole rows, in PyTorch with one
    fused softmax per branch and row block.

    With p = softmax(adv) and q = softmax(clean), the row's symmetric KL is
    Σ (p − q)(adv − clean) (sym_kl_triton.py's identity) and the gradients are
    scale·(p − q) and its negative: two softmax kernels, a difference and a dot product
    per block, where the statistics and the gradients passes take four exponentials.
    Only for whole rows (vocabulary shards need the shards' statistics). Skipped rows
    (weight 0) give loss 0 and zero gradients, as the kernels do.
    """
    dtype = torch.promote_types(torch.promote_types(adv.dtype, clean.dtype), torch.float32)
    n, v = adv.shape
    rows = torch.empty(n, dtype=dtype, device=adv.device) if want_value else None
    ga = torch.empty((n, v), dtype=adv.dtype, device=adv.device) if write_adv else None
    gc = torch.empty((n, v), dtype=clean.dtype, device=adv.device) if write_clean else None
    direct = ga is not None and ga.dtype == dtype  # the block's p − q computed in ga
    g = t = None
    for i, j in _blocks(n, v, adv.device):
        k = j - i
        if t is None:
            t = torch.empty((k, v), dtype=dtype, device=adv.device)
            g = None if direct else torch.empty_like(t)
        gi = ga[i:j] if direct else g[:k]
        a, c = adv[i:j].to(dtype), clean[i:j].to(dtype)
        torch.softmax(a, -1, out=gi)
        gi.sub_(torch.softmax(c, -1, out=t[:k]))                          # p − q
        if rows is not None:
            rows[i:j] = torch.linalg.vecdot(gi, torch.sub(a, c, out=t[:k]))
        if ga is not None or gc is not None:
            _finish_block(gi, scale[i:j], ga, gc, i, j, t, direct)
    value = None
    if rows is not None:
        value = (torch.where(weight == 0, torch.zeros_like(rows), rows) * weight).sum()
    return value, ga, gc


# ------------------------------------------------------------------ shared pieces
def row_weights(rows_shape: Tuple[int, ...], mask: Optional[torch.Tensor],
                device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Flat weights whose dot product with the row values is ``_row_mean`` of divergence.py."""
    n = 1
    for s in rows_shape:
        n *= s
    if mask is not None and tuple(mask.shape) == tuple(rows_shape):
        w = mask.to(device=device, dtype=dtype).reshape(-1)
        return w / w.sum().clamp_min(1.0)
    return torch.full((n,), 1.0 / max(n, 1), dtype=dtype, device=device)


def finish_stats(stats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """(per-row loss, [rows, 2] log-normalisers of adv and clean) from combined stats."""
    m_a, z_a, s_a, m_c, z_c, s_c = stats.unbind(-1)
    row_loss = s_c / z_c - s_a / z_a
    lse = torch.stack([m_a + torch.log(z_a), m_c + torch.log(z_c)], dim=-1)
    return row_loss, lse


StatsReducer = Callable[[torch.Tensor], torch.Tensor]


def softmax_passes(use_triton: bool, reduce_stats: Optional[StatsReducer]) -> bool:
    """Whether the PyTorch softmax passes run (whole rows without Triton) rather than the
    statistics passes (the Triton kernels, or vocabulary shards, whose statistics are
    combined across ranks)."""
    return not use_triton and reduce_stats is None


def sym_kl_forward(adv2d: torch.Tensor, clean2d: torch.Tensor, weight: torch.Tensor,
                   use_triton: bool, use_shift: bool,
                   reduce_stats: Optional[StatsReducer]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(the weighted loss, the [rows, 2] log-normalisers) from the forward pass."""
    if use_triton:
        stats = _kernels().sym_kl_stats(adv2d, clean2d, weight, use_shift)
    else:
        stats = sym_kl_stats_torch(adv2d, clean2d, weight, use_shift)
    if reduce_stats is not None:
        stats = reduce_stats(stats)
    row_loss, lse = finish_stats(stats)
    row_loss = torch.where(weight == 0, torch.zeros_like(row_loss), row_loss)
    return (row_loss * weight).sum(), lse


def sym_kl_backward(adv2d: torch.Tensor, clean2d: torch.Tensor, lse: torch.Tensor,
                    scale: torch.Tensor, use_triton: bool, write_adv: bool, write_clean: bool):
    """(∂/∂adv, ∂/∂clean) = (scale·(q − p), scale·(p − q)) per row, in the logits' dtypes."""
    if use_triton:
        return _kernels().sym_kl_grads(adv2d, clean2d, lse.contiguous(), scale.contiguous(),
                                       write_adv, write_clean)
    return sym_kl_grads_torch(adv2d, clean2d, lse, scale, write_adv, write_clean)


class FusedSymmetricKLFunction(torch.autograd.Function):
    """Autograd wrapper of the two passes; ``reduce_stats`` combines vocab shards (TP).

    Forward saves the logits (already alive in the caller's graph), the [rows, 2]
    log-normalisers (none on the softmax path) and the row weights; no softmax tensor.
    """

    @staticmethod
    def forward(ctx, adv2d, clean2d, weight, use_triton: bool, use_shift: bool,
                reduce_stats: Optional[StatsReducer]):
        # The softmax passes need no statistics saved (sym_kl_softmax_torch).
        ctx.softmax_path = softmax_passes(use_triton, reduce_stats)
        if ctx.softmax_path:
            loss, _, _ = sym_kl_softmax_torch(adv2d, clean2d, weight)
            lse = weight.new_empty(0)
        else:
            loss, lse = sym_kl_forward(adv2d, clean2d, weight, use_triton, use_shift,
                                       reduce_stats)
        ctx.save_for_backward(adv2d, clean2d, lse, weight)
        ctx.use_triton = use_triton
        return loss

    @staticmethod
    def backward(ctx, grad_output):
        adv2d, clean2d, lse, weight = ctx.saved_tensors
        scale = grad_output.to(torch.float32) * weight
        write_adv, write_clean = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if ctx.softmax_path:
            _, ga, gc = sym_kl_softmax_torch(adv2d, clean2d, weight, False, scale,
                                             write_adv, write_clean)
        else:
            ga, gc = sym_kl_backward(adv2d, clean2d, lse, scale, ctx.use_triton,
                                     write_adv, write_clean)
        return ga, gc, None, None, None, None


def sym_kl_value_and_grad_rows(adv2d: torch.Tensor, clean2d: torch.Tensor, weight: torch.Tensor,
                               use_triton: bool, use_shift: bool,
                               reduce_stats: Optional[StatsReducer]
                               ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(loss, ∂loss/∂adv) of 2-D logits without autograd; ∂loss/∂clean is −∂loss/∂adv."""
    with torch.no_grad():
        if softmax_passes(use_triton, reduce_stats):
            loss, grad, _ = sym_kl_softmax_torch(adv2d, clean2d, weight, scale=weight,
                                                 write_adv=True)
            return loss, grad
        loss, lse = sym_kl_forward(adv2d, clean2d, weight, use_triton, use_shift, reduce_stats)
        grad, _ = sym_kl_backward(adv2d, clean2d, lse, weight, use_triton, True, False)
    return loss, grad


def as_rows(x: torch.Tensor) -> torch.Tensor:
    """[rows, vocab] with unit column stride (a view when possible)."""
    x2 = x.reshape(-1, x.shape[-1])
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def unsupported_input_reason(adv: torch.Tensor, clean: torch.Tensor) -> Optional[str]:
    if adv.shape != clean.shape:
        return "adv and clean logits differ in shape"
    if adv.dim() < 1 or adv.shape[-1] == 0 or adv.numel() == 0:
        return "empty logits"
    if adv.dtype not in KERNEL_DTYPES or clean.dtype not in KERNEL_DTYPES:
        return f"dtypes {adv.dtype}/{clean.dtype} (the kernel takes float32, bfloat16, float16)"
    if adv.device != clean.device:
        return "adv and clean logits live on different devices"
    return None


def _kernel_path(adv: torch.Tensor, clean: torch.Tensor) -> Optional[bool]:
    """Whether the Triton kernels run (True), the PyTorch passes (False) or, for inputs the
    passes do not take, the reference (None); one warning when CUDA tensors miss Triton."""
    reason = unsupported_input_reason(adv, clean)
    if reason is not None:
        if adv.is_cuda:
            warn_fallback_once("fused_symmetric_kl", reason)
        return None
    no_triton = triton_unusable_reason(adv.device)
    if no_triton is not None and adv.is_cuda:
        warn_fallback_once("fused_symmetric_kl", f"{no_triton}; the PyTorch passes run")
    return no_triton is None


def _fused_one(adv: torch.Tensor, clean: torch.Tensor,
               mask: Optional[torch.Tensor]) -> torch.Tensor:
    use_triton = _kernel_path(adv, clean)
    if use_triton is None:
        return adversarial_divergence("sym_kl", adv, clean, mask)
    weight = row_weights(tuple(adv.shape[:-1]), mask, adv.device)
    return FusedSymmetricKLFunction.apply(as_rows(adv), as_rows(clean), weight,
                                          use_triton, True, None)


def symmetric_kl_adv_grad(adv_logits: torch.Tensor, clean_logits: torch.Tensor,
                          mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """∂/∂adv of ``fused_symmetric_kl`` with the clean logits detached, computed now
    without a graph: w·(softmax(adv) − softmax(clean)) per row (w: the row weight).

    It is also the gradient of ALUM's ascent divergence, KL(stopgrad p_clean ‖ p_adv)
    (``kl`` and ``sym_kl``), whose value the ascent never uses: the ascent can start its
    backward pass here (``Divergences.ascent_grad``) instead of back-propagating through
    D's log-softmaxes. The PyTorch softmax passes in row blocks, on every device; in
    ``adv_logits``' shape and dtype.
    """
    if adv_logits.shape != clean_logits.shape:
        raise ValueError(f"symmetric_kl_adv_grad: adv {tuple(adv_logits.shape)} vs clean "
                         f"{tuple(clean_logits.shape)}")
    adv, clean = adv_logits.detach(), clean_logits.detach()
    dtype = torch.promote_types(torch.promote_types(adv.dtype, clean.dtype), torch.float32)
    weight = row_weights(tuple(adv.shape[:-1]), mask, adv.device, dtype)
    _, grad, _ = sym_kl_softmax_torch(as_rows(adv), as_rows(clean), weight, want_value=False,
                                      scale=weight, write_adv=True)
    return grad.view(adv.shape)


def symmetric_kl_value_and_grad(adv_logits: torch.Tensor, clean_logits: torch.Tensor,
                                mask: Optional[torch.Tensor] = None
                                ) -> Tuple[torch.Tensor, torch.Tensor]:
    """``fused_symmetric_kl``'s value and its gradient with respect to ``adv_logits``,
    computed now, without a graph (the forward pass and the backward pass, one call).

    The gradient with respect to ``clean_logits`` is its negative (the row weight times
    p_clean − p_adv), so a caller that needs the term's gradient in both branches, at
    different times (ALUM's lean order, alum.split_term), computes it once.
    The gradient has ``adv_logits``' shape and dtype.
    """
    adv, clean = adv_logits.detach(), clean_logits.detach()
    use_triton = _kernel_path(adv, clean)
    if use_triton is None:
        leaf = adv.requires_grad_(True)
        with torch.enable_grad():
            value = adversarial_divergence("sym_kl", leaf, clean, mask)
            (grad,) = torch.autograd.grad(value, leaf)
        return value.detach(), grad
    weight = row_weights(tuple(adv.shape[:-1]), mask, adv.device)
    value, grad = sym_kl_value_and_grad_rows(as_rows(adv), as_rows(clean), weight,
                                            use_triton, True, None)
    return value, grad.view(adv.shape)


def fused_symmetric_kl(adv_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
                       clean_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
                       mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """``adversarial_divergence("sym_kl", adv_logits, clean_logits, mask)``, fused.

    Gradient flows into both logits, as in the reference (the second KL sends gradient
    into the clean logits). A tuple of logits (span QA) gives the sum over its members.
    """
    if isinstance(adv_logits, torch.Tensor):
        return _fused_one(adv_logits, clean_logits, mask)
    total = None
    for a, c in zip(adv_logits, clean_logits):
        term = _fused_one(a, c, mask)
        total = term if total is None else total + term
    return total
