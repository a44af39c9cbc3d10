"""ALUM through the pipeline: the lean order (alum.pretrain.lean_order) as schedule passes.

Under pipeline parallelism megatron-core's schedule owns forward and backward, and δ
lives on the first stage while the logits live on the last. One optimizer step over
the M accumulation micro-batches runs the lean order's four passes, each through the
schedule over all M:

1. **clean, forward only**: the first stage keeps the embedding outputs, the last the
   clean logits of the KL rows (the KL's target), both detached;
2. **ascent** (K times), parameters frozen: the first stage feeds ``embeds + δ`` with δ a
   leaf, the last stage's loss is the ascent divergence; the schedule's backward stops at
   δ, with no weight gradient anywhere. The first stage updates δ (``AlumStep.update``),
   the NaN/Inf test agreed over the model-parallel group;
3. **perturbed, forward and backward** of α·KL(stopgrad p_clean ‖ p_adv) from the
   embedding outputs + δ; the first stage keeps the gradient at the embedding output, the
   last the term (``AlumStep.split``, alum.split_term);
4. **clean, forward and backward** of MLM + α·KL(stopgrad p_adv ‖ p_clean), replaying
   pass 1's generator state on every stage (pass 1's dropout masks and embedding output,
   to which pass 3's gradient is added).

Each stage drives the core's staged step (alum.adversarial.AlumStep) of each micro-batch
for the part it holds: the first stage δ (``start``, ``update``, ``delta_stats``), the
last the logits (``ascent_divergence``, ``split``, ``perturbed_half``, ``clean_half``,
``flips``); this file only says when each stage runs.

The schedule divides each micro-batch's loss by M as DeepSpeed's accumulation does; the
ascent's loss is multiplied by M (and by the fp16 loss scale) so that δ's gradient is the
divergence's own. The interleaved schedule is refused with ALUM at config time: its
forward order across model chunks is not the forward-only schedule's, which the replay
relies on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from functools import partial
from typing import Dict, List, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from alum import AlumConfig
from alum.adversarial import AlumStep, frozen_parameters

from .alum_layout import all_finite_each, all_finite_over, build_alum_step
from .checkpoint import capture_rng_state, restore_rng_state
from .mlm_step import (AlumPositions, AlumTotals, clean_head_rows,
                       clean_objective, clean_pass, clean_pass_args,
                       kl_positions)


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss with a graph back to ``logits`` (padded vocabulary columns are -inf)."""
    return torch.nan_to_num(logits.float()).sum() * 0.0


@dataclass
class MicroBatchState:
    """What the passes keep of one micro-batch; each stage fills the fields it holds."""

    batch: Dict[str, torch.Tensor]
    """The micro-batch."""
    positions: Optional[AlumPositions]
    """ALUM's positions (None: nothing is predicted, no adversarial term)."""
    step: Optional[AlumStep] = None
    """The core's staged step (from pass 2 on, when there are positions): δ on the first
    stage, the term on the last, the skip verdict on every stage."""
    embeds: Optional[torch.Tensor] = None
    """First stage: the clean embedding output (detached)."""
    leaf: Optional[torch.Tensor] = None
    """First stage: δ as the leaf of an ascent pass (its ``.grad`` after the schedule)."""
    embeds_grad: Optional[torch.Tensor] = None
    """First stage: pass 3's input leaf, then its gradient (pass 4 adds it)."""
    clean: Optional[torch.Tensor] = None
    """Last stage: the clean logits of the KL rows (detached), until pass 3."""
    flips: Optional[torch.Tensor] = None
    """Last stage: the share of predictions δ flips."""

    @property
    def active(self) -> bool:
        """ALUM's term is on for this micro-batch (not skipped so far)."""
        return self.positions is not None and (self.step is None or self.step.skipped is None)


class PipelineAlumStep:
    """One optimizer step of ALUM under PP (the four passes of the module docstring).

    Args:
        model: this stage's module (``pre_process``: the first stage, ``post_process``: the
            last).
        micro: the step's micro-batches, on ``device``.
        alum: ALUM's configuration; ``alum_positions``: ``PretrainConfig.alum_positions``.
        run_seed: seeds δ's per-sample random start.
        schedule: megatron-core's schedule for this run
            (alum.pretrain.pipeline_loop.PipelineSchedule).
        device: where the step's collectives' tensors live (the engine's device).
    """

    def __init__(self, model, micro: List[Dict[str, torch.Tensor]], alum: AlumConfig,
                 alum_positions: str, run_seed: Optional[int], schedule,
                 device: torch.device):
        self.model, self.micro, self.alum = model, micro, alum
        self.run_seed, self.schedule, self.device = run_seed, schedule, device
        self.first = bool(model.pre_process)
        self.last = bool(model.post_process)
        self.loss_scale = 1.0
        self.states = [MicroBatchState(b, kl_positions(b, alum_positions)) for b in micro]

    # -- the schedule ---------------------------------------------------------
    def _schedule(self, step_func, forward_only: bool) -> List[Dict]:
        counter = iter(range(len(self.micro)))

        def forward_step(data_iterator, view):
            return step_func(next(counter), next(data_iterator), view.module)

        with torch.no_grad() if forward_only else contextlib.nullcontext():
            return self.schedule.run([self.model], iter(self.micro), len(self.micro),
                                     forward_only, forward_step)

    def _alum_step(self, s: MicroBatchState) -> AlumStep:
        """``s``'s staged step: with δ's random start on the first stage (embeds known)."""
        return build_alum_step(self.model, s.batch, s.embeds, self.alum, s.positions.kl_weights,
                               self.run_seed)

    # -- pass 1: clean, forward only -------------------------------------------
    def _clean_forward(self, m: int, batch, model):
        s = self.states[m]
        embeds, out = clean_pass(model)(*clean_pass_args(batch, s.positions))
        if self.first:
            s.embeds = embeds.detach()

        def loss_func(logits):
            if self.last and s.positions is not None:
                s.clean = logits.detach()
            return torch.zeros((), device=logits.device), {}
        return out, loss_func

    # -- pass 2: ascent --------------------------------------------------------
    def _ascent_forward(self, m: int, batch, model):
        s = self.states[m]
        perturbed = None
        if self.first:
            delta = s.step.delta if s.step is not None else torch.zeros_like(s.embeds)
            s.leaf = delta.detach().requires_grad_(True)  # its .grad after the schedule
            perturbed = s.embeds + s.leaf
        out = model.forward_from_embeddings(perturbed, batch["attention_mask"],
                                            clean_head_rows(s.batch, s.positions))

        def loss_func(logits):
            if not s.active:
                return _zero_loss(logits), {}
            div = s.step.ascent_divergence(logits, s.clean)
            # × M: the schedule divides by M; × the fp16 scale (unscaled after).
            return div * (len(self.micro) * self.loss_scale), {}
        return out, loss_func

    def _ascent(self) -> None:
        """Each micro-batch's staged step (δ's random start on the first stage), then K
        ascent steps (none for the directions without an ascent: ``none``, ``random``)."""
        for s in self.states:
            if s.positions is not None:
                s.step = self._alum_step(s)
                if self.first:
                    s.step.start()
        for _ in range(self.alum.ascent_steps):
            with frozen_parameters(self.model):
                self._schedule(self._ascent_forward, forward_only=False)
            live = [s for s in self.states if s.active]
            self._update_deltas(live, [self._leaf_grad(s) if self.first else None
                                       for s in live])

    def _leaf_grad(self, s: MicroBatchState) -> torch.Tensor:
        """δ's gradient after an ascent pass, unscaled."""
        g = s.leaf.grad if s.leaf.grad is not None else torch.zeros_like(s.leaf)
        return g / self.loss_scale if self.loss_scale != 1.0 else g

    def _update_deltas(self, live: List[MicroBatchState],
                       grads: List[Optional[torch.Tensor]]) -> None:
        """δ ← the ascent update of each live micro-batch (``grads``: δ's gradients on the
        first stage, None elsewhere). Only the first stage holds ∇δ: one all-reduce over
        the model-parallel group per ascent step, so that every rank skips the same
        micro-batches."""
        finite = all_finite_each(grads, ps.get_model_parallel_group(), self.device)
        for s, grad, ok in zip(live, grads, finite):
            s.step.update(grad, ok)

    # -- pass 3: perturbed, forward and backward ----------------------------------
    def _perturbed_forward(self, m: int, batch, model):
        s = self.states[m]
        embeds = None
        if self.first:
            embeds = s.embeds
            if s.active:
                embeds = s.step.perturbed_input()
                if not self.alum.detach_embeddings:  # its .grad after the schedule
                    s.embeds_grad = embeds.requires_grad_(True)
        head_rows = clean_head_rows(s.batch, s.positions)
        out = model.forward_from_embeddings(embeds, batch["attention_mask"], head_rows)

        def loss_func(adv):
            # The term is equal on the TP ranks of the last stage: its NaN/Inf test is
            # agreed there, against a rank-local fault.
            tp_finite = partial(all_finite_over, group=ps.get_tensor_model_parallel_group())
            if not s.active or not s.step.split(adv, s.clean, tp_finite):
                return _zero_loss(adv), {}
            s.flips = s.step.flips(adv, s.clean)
            s.clean = None  # pass 4 recomputes the clean logits with a graph
            return s.step.perturbed_half(), {}
        return out, loss_func

    # -- pass 4: clean, forward and backward ---------------------------------------
    def _clean_train_forward(self, m: int, batch, model):
        s = self.states[m]
        _, out = clean_pass(model, s.embeds_grad)(*clean_pass_args(batch, s.positions))

        def loss_func(logits):
            c = clean_objective(model, logits, batch, s.positions)
            loss = c.mlm
            if self.last and s.step is not None and s.step.on:
                loss = c.mlm + s.step.clean_half(c.alum_logits)
            mean = c.mlm.detach().clone().float()
            n = c.predicted
            return loss, {"loss_sum": mean * n, "correct": c.correct.float(),
                          "predicted": n.float(), "mean": mean}
        return out, loss_func

    # -- the whole step ----------------------------------------------------------
    def run(self, loss_scale: float = 1.0) -> Tuple[List[Dict], List[float]]:
        """The four passes; returns pass 4's loss dicts (last stage) and the step's ALUM
        statistics summed over the pipeline (``stats_vector``)."""
        self.loss_scale = loss_scale
        start = capture_rng_state()
        self._schedule(self._clean_forward, forward_only=True)
        self._ascent()
        self._schedule(self._perturbed_forward, forward_only=False)
        for s in self.states:
            if s.embeds_grad is not None:
                s.embeds_grad = s.embeds_grad.grad
        after = capture_rng_state()
        restore_rng_state(start)
        outputs = self._schedule(self._clean_train_forward, forward_only=False)
        restore_rng_state(after)
        return outputs, self.stats_vector()

    def stats_vector(self) -> List[float]:
        """ALUM's statistics of the step (``AlumTotals.vector``), each stage contributing
        what it holds (the first: δ's, the last: the term's and the flips), summed over
        the pipeline group."""
        totals = AlumTotals()
        for s in self.states if self.first else ():
            if s.active:
                st = s.step.delta_stats()
                for k in ("delta_rel_norm", "cos_delta_grad", "grad_share"):
                    totals.add(k, st[k])
        for s in self.states if self.last else ():
            totals.skipped += float(not s.active and s.positions is not None)
            totals.add("adv_loss", s.step.value if s.step is not None and s.step.on else None)
            totals.add("flip_rate", s.flips)
        vec = torch.tensor(totals.vector(), dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            vec = vec.to(self.device)
            dist.all_reduce(vec, group=ps.get_pipeline_model_parallel_group())
        return vec.cpu().tolist()
