"""ALUM's staged step (alum.adversarial.AlumStep) built for the loop's parallel layout
(docs/algorithm.md, docs/alum_parallel.md).

The core (alum.adversarial) works on one process's tensors. Under the loop's layouts:

* **Random start.** δ's initial noise is drawn per *sample*, from a generator seeded by
  the run's seed and the sample's global index in the training stream. So it is
  identical on the TP ranks of a group, different across DP ranks (they hold other
  samples), and the same for a sample whatever the layout: TP=2, DP=2 or gradient
  accumulation see the noise TP=1/DP=1 sees. Under sequence parallelism each rank keeps
  its sequence shard of the full ``[s, h]`` draw, so the shards together are the TP=1 δ.
* **δ's gradient.** δ is added to the embedding output, which is replicated over the TP
  group (or, under sequence parallelism, sharded along the sequence). The first layer's
  column-parallel linears all-reduce (or reduce-scatter) their input gradient, and the
  residual branch is replicated, so ∇δ is the full gradient on every rank
  (tests/pretrain/test_alum_parallel.py checks it against TP=1).
* **Divergences.** The MLM logits stay split over the vocabulary (``[rows, V/tp]``); the
  symmetric KL reduces the softmax max and sums across the TP group in fp32
  (alum.kernels.vocab_parallel_symmetric_kl). The ascent uses the same function with
  the clean logits detached: its gradient with respect to the perturbed logits,
  p_adv − p_clean, is exactly that of KL(stopgrad p_clean ‖ p_adv) (Algorithm 1's D);
  only that gradient is used. The flip rate takes the argmax across shards.
* **Predicted ids** (the flip rate, the MLM accuracy): each TP rank holds ``V / tp``
  columns of the logits, so the argmax is taken per shard and the winner chosen across
  the group (two tiny all-gathers instead of gathering ``[N, V]`` logits).
* **Skipping.** Under sequence parallelism each rank sees only its shard of ∇δ, so the
  NaN/Inf test is agreed over the model-parallel group: every rank skips together (a
  rank that skipped alone would leave the others waiting in a collective).
"""
from __future__ import annotations

from functools import partial
from typing import List, Optional, Sequence, Tuple

import torch
import torch.distributed as dist
from torch import nn

from alum import AlumConfig
from alum.adversarial import AlumStep, all_finite_local, initial_noise
from alum.divergence import Divergences, Logits
from alum.perturbation import embedding_scale


NOISE_SEED_STRIDE = 1_000_003


def tensor_parallel_size(model: nn.Module) -> int:
    spec = getattr(model, "spec", None)
    return int(getattr(spec, "tp_size", 1)) if spec is not None else 1


def predicted_ids(model: nn.Module, rows: torch.Tensor) -> torch.Tensor:
    """argmax over the full vocabulary of logits ``[N, V / tp]`` (plain argmax at TP=1)."""
    tp = tensor_parallel_size(model)
    if tp == 1:
        return rows.argmax(dim=-1)
    from megatron.core import parallel_state as ps

    group = ps.get_tensor_model_parallel_group()
    start, _ = model.spec.vocab_range(model.padded_vocab)
    local_max, local_arg = rows.float().max(dim=-1)
    maxes = [torch.empty_like(local_max) for _ in range(tp)]
    args = [torch.empty_like(local_arg) for _ in range(tp)]
    dist.all_gather(maxes, local_max.contiguous(), group=group)
    dist.all_gather(args, (local_arg + start).contiguous(), group=group)
    # Ties go to the lowest rank, i.e. the lowest vocabulary id, as torch's argmax.
    winner = torch.stack(maxes).argmax(dim=0)
    return torch.stack(args).gather(0, winner.unsqueeze(0)).squeeze(0)


def sequence_parallel(model: nn.Module) -> bool:
    spec = getattr(model, "spec", None)
    return bool(getattr(spec, "sequence_parallel", False)) and tensor_parallel_size(model) > 1


def sequence_shard_range(model: nn.Module, seq_length: int) -> Tuple[int, int]:
    """[start, end) of this rank's sequence shard (the whole sequence without SP)."""
    if not sequence_parallel(model):
        return 0, seq_length
    tp = tensor_parallel_size(model)
    rank = model.spec.tp_rank
    chunk = seq_length // tp
    return rank * chunk, (rank + 1) * chunk


def delta_mask(model: nn.Module, attention_mask: torch.Tensor) -> torch.Tensor:
    """The padding mask of δ, ``[b, s_local]``: this rank's sequence shard under SP."""
    start, end = sequence_shard_range(model, attention_mask.shape[1])
    return attention_mask[:, start:end]


def noise_seed(run_seed: int, sample_index: int) -> int:
    """The seed of one sample's random start (a 63-bit integer, distinct per sample)."""
    return (run_seed * NOISE_SEED_STRIDE + 7919 * (int(sample_index) + 1)) % (2 ** 63 - 1)


def standard_normal_start(model: nn.Module, sample_index: torch.Tensor, seq_length: int,
                          hidden: int, run_seed: int, device: torch.device) -> torch.Tensor:
    """N(0, 1) of shape ``[b, s_local, h]`` (fp32), one generator per sample.

    Each sample draws its full ``[s, h]`` and keeps this rank's sequence shard.
    """
    start, end = sequence_shard_range(model, seq_length)
    rows = []
    for index in sample_index.reshape(-1).tolist():
        gen = torch.Generator(device=device)
        gen.manual_seed(noise_seed(run_seed, index))
        full = torch.randn((seq_length, hidden), generator=gen, device=device,
                           dtype=torch.float32)
        rows.append(full[start:end])
    return torch.stack(rows)


def all_finite_each(values: Sequence[Optional[torch.Tensor]], group,
                    device: torch.device) -> List[bool]:
    """Whether each value is finite on every rank of ``group``, in one all-reduce (a
    rank without the value passes None). Every rank must pass as many values."""
    flags = torch.tensor([0.0 if v is None or all_finite_local(v) else 1.0 for v in values],
                         device=device)
    if (len(values) and dist.is_available() and dist.is_initialized()
            and dist.get_world_size(group) > 1):
        dist.all_reduce(flags, group=group)
    return [f == 0.0 for f in flags.tolist()]


def all_finite_over(value: torch.Tensor, group) -> bool:
    """True when every rank of ``group`` holds only finite values (one all-reduce)."""
    return all_finite_each([value], group, value.device)[0]


def build_alum_step(model: nn.Module, batch: dict, embeds: Optional[torch.Tensor],
                    config: AlumConfig, kl_weights: Optional[torch.Tensor],
                    run_seed: Optional[int], loss_scale: float = 1.0) -> AlumStep:
    """The core's staged step (alum.adversarial.AlumStep) for one micro-batch, with this
    layout's divergences, NaN test, δ mask, random start and δ update.

    Args:
        embeds: the clean embedding output (None on a pipeline stage without one).
        kl_weights: the weights of the logits rows the KL averages over (``[b, s]`` for
            ``alum_positions='all'``; None when the rows are the selected masked
            positions, all of which count).
        run_seed: seeds the per-sample random start (needs ``batch['sample_index']``);
            None draws it from the global generator (the core's default).
        loss_scale: DeepSpeed's fp16 loss scale, for the ascent's inner gradient.
    """
    # Looked up per call (not at import) so that the dispatcher can be replaced, e.g. by a
    # test that proves every path goes through it.
    from alum.kernels import adv_project_dispatch

    own = getattr(model, "embedding_mask", None)  # models with another activation layout
    mask = own(batch["attention_mask"]) if callable(own) else delta_mask(model,
                                                                        batch["attention_mask"])
    init = None
    if run_seed is not None and "sample_index" in batch and embeds is not None:
        # δ's random start σ·z, z per sample.
        z = standard_normal_start(model, batch["sample_index"], batch["attention_mask"].shape[1],
                                  embeds.shape[-1], run_seed, embeds.device)
        init = initial_noise(embeds, config, mask, embedding_scale(embeds, config, mask), z=z)
    divergences, all_finite, value_and_grad = _layout_divergences(model, config)
    return AlumStep(config, embeds, mask, init_noise=init, loss_scale=loss_scale,
                    divergences=divergences, all_finite=all_finite, freeze=model,
                    update=adv_project_dispatch.adv_project, row_weights=kl_weights,
                    value_and_grad=value_and_grad)


def _layout_divergences(model: nn.Module, config: AlumConfig):
    """(divergences, NaN test, the term's value-and-gradient) for the model's TP layout."""
    if tensor_parallel_size(model) == 1:
        base = Divergences.for_loss(config.loss)
        final, ascent_grad, value_and_grad = base.final, None, None
        if config.loss in ("kl", "sym_kl"):
            from alum.kernels.sym_kl import symmetric_kl_adv_grad

            # The ascent's backward starts from ∂D/∂adv = w·(p_adv − p_clean), computed
            # directly over the [rows, V] logits (docs/alum_cost.md).
            ascent_grad = symmetric_kl_adv_grad
        if config.loss == "sym_kl":
            from alum.kernels import fused_symmetric_kl
            from alum.kernels.sym_kl import symmetric_kl_value_and_grad

            final = fused_symmetric_kl  # the Triton kernel on CUDA, the reference elsewhere
            value_and_grad = symmetric_kl_value_and_grad
        return (Divergences(base.ascent, final, base.flips, ascent_grad), all_finite_local,
                value_and_grad)
    if config.loss != "sym_kl":
        raise ValueError(f"AlumConfig.loss={config.loss!r}: under tensor parallelism the "
                         f"vocabulary-parallel divergence is the symmetric KL only")
    from megatron.core import parallel_state as ps

    from alum.kernels import vocab_parallel_symmetric_kl
    from alum.kernels.sym_kl import row_weights
    from alum.kernels.sym_kl_vocab_parallel import vocab_parallel_symmetric_kl_value_and_grad

    group = ps.get_tensor_model_parallel_group()

    def ascent(adv: Logits, clean: Logits, weights) -> torch.Tensor:
        # Same gradient w.r.t. adv as KL(stopgrad p_clean ‖ p_adv): p_adv − p_clean.
        return vocab_parallel_symmetric_kl(adv, clean.detach(), weights, group=group)

    def flips(adv: Logits, clean: Logits, weights) -> torch.Tensor:
        a = predicted_ids(model, adv.reshape(-1, adv.shape[-1]))
        c = predicted_ids(model, clean.reshape(-1, clean.shape[-1]))
        w = row_weights(tuple(adv.shape[:-1]), weights, a.device)  # the KL's own weights
        return ((a != c).float() * w).sum()

    divergences = Divergences(ascent, partial(vocab_parallel_symmetric_kl, group=group), flips)
    all_finite = partial(all_finite_over, group=ps.get_model_parallel_group())  # TP x PP
    return (divergences, all_finite,
            partial(vocab_parallel_symmetric_kl_value_and_grad, group=group))
