"""ALUM through the pipeline: the lean order (alum.pretrain.lean_order) as schedule passes.

Under pipeline parallelism megatron-core's schedule owns forward and backward, and δ
lives on the first stage while the logits live on the last. One optimizer step over
the M accumulation micro-batches runs the lean order's four passes, each through the
schedule over all M:

1. **clean, forward only**: the first stage keeps the embedding outputs, the last the
   clean logits of the KL rows (the KL's target), both detached;
2. **ascent** (K times), parameters frozen: the first stage feeds ``embeds + δ`` with δ a
   leaf, the last stage's loss is the ascent divergence; the schedule's backward stops at
   δ, with no weight gradient anywhere. The first stage updates δ
   (alum.adversarial.ascent_update), the NaN/Inf test agreed over the model-parallel group;
3. **perturbed, forward and backward** of α·KL(stopgrad p_clean ‖ p_adv) from the
   embedding outputs + δ; the first stage keeps the gradient at the embedding output, the
   last the term (alum.pretrain.split_term);
4. **clean, forward and backward** of MLM + α·KL(stopgrad p_adv ‖ p_clean), replaying
   pass 1's generator state on every stage (pass 1's dropout masks and embedding output,
   to which pass 3's gradient is added).

The schedule divides each micro-batch's loss by M as DeepSpeed's accumulation does; the
ascent's loss is multiplied by M (and by the fp16 loss scale) so that δ's gradient is the
divergence's own. The interleaved schedule is refused with ALUM at config time: its
forward order across model chunks is not the forward-only schedule's, which the replay
relies on.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from megatron.core import parallel_state as ps

from alum.adversarial import (Perturbation, ascent_update, frozen_parameters,
                              perturbation_stats, random_start)
from alum.perturbation import embedding_scale

from .alum_layout import AlumLayout, all_finite_each, all_finite_over, build_alum_layout
from .checkpoint import capture_rng_state, restore_rng_state
from .mlm_step import (KLRows, clean_head_rows, clean_objective, clean_pass, clean_pass_args,
                       kl_rows)
from .split_term import SplitTerm


STAT_KEYS = ("adv_loss_sum", "flip_sum", "term_count", "delta_rel_sum", "cos_sum", "share_sum",
             "delta_count", "skipped", "flip_count")


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss with a graph back to ``logits`` (padded vocabulary columns are -inf)."""
    return torch.nan_to_num(logits.float()).sum() * 0.0


@dataclass
class MicroBatchState:
    """What the passes keep of one micro-batch; each stage fills the fields it holds."""

    batch: Dict[str, torch.Tensor]
    """The micro-batch."""
    rows: Optional[KLRows]
    """The KL's rows (None: nothing is predicted, no adversarial term)."""
    layout: Optional[AlumLayout] = None
    """The divergences, and on the first stage δ's mask, random start and update."""
    embeds: Optional[torch.Tensor] = None
    """First stage: the clean embedding output (detached)."""
    delta: Optional[torch.Tensor] = None
    """First stage: δ (no graph)."""
    grad: Optional[torch.Tensor] = None
    """First stage: δ's leaf during an ascent pass, then the last ascent gradient."""
    scale: Optional[torch.Tensor] = None
    """First stage: ``embedding_scale`` of the embeds (relative ε), or None."""
    share: torch.Tensor = field(default_factory=lambda: torch.zeros(()))
    """First stage: the gradient's share of the last update."""
    embeds_grad: Optional[torch.Tensor] = None
    """First stage: pass 3's input leaf, then its gradient (pass 4 adds it)."""
    clean: Optional[torch.Tensor] = None
    """Last stage: the clean logits of the KL rows (detached), until pass 3."""
    split: Optional[SplitTerm] = None
    """Last stage: the term, from pass 3's backward until pass 4's."""
    term: Optional[torch.Tensor] = None
    """Last stage: the adversarial divergence before α."""
    flips: Optional[torch.Tensor] = None
    """Last stage: the share of predictions δ flips."""
    skipped: bool = False
    """The term was dropped: a non-finite ascent gradient (every rank), or term (last stage)."""

    @property
    def active(self) -> bool:
        return self.rows is not None and not self.skipped


class PipelineAlumStep:
    """One optimizer step of ALUM under PP (the four passes of the module docstring)."""

    def __init__(self, trainer, micro: List[Dict[str, torch.Tensor]]):
        self.t = trainer
        self.micro = micro
        self.alum = trainer.cfg.alum
        self.model = trainer.engine.module
        self.first = bool(self.model.pre_process)
        self.last = bool(self.model.post_process)
        self.states = [MicroBatchState(b, kl_rows(b, trainer.cfg.alum_positions))
                       for b in micro]

    # -- the schedule ---------------------------------------------------------
    def _schedule(self, step_func, forward_only: bool) -> List[Dict]:
        from alum.parallel.pipeline import run_schedule

        t = self.t
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision, torch.float32)
        counter = iter(range(len(self.micro)))

        def forward_step(data_iterator, view):
            return step_func(next(counter), next(data_iterator), view.module)

        with torch.no_grad() if forward_only else contextlib.nullcontext():
            return run_schedule([self.model], t._parallel_config(), model=self.model.config,
                                data_iterator=iter(self.micro),
                                num_microbatches=len(self.micro),
                                seq_length=t.cfg.data.seq_length,
                                micro_batch_size=t.cfg.train.micro_batch_size,
                                forward_only=forward_only, forward_step_func=forward_step,
                                pipeline_dtype=dtype)

    def _layout(self, s: MicroBatchState) -> AlumLayout:
        """``s``'s layout: on the first stage (embeds known) with δ's random start."""
        if s.layout is None:
            seed = self.t.cfg.train.seed if s.embeds is not None else None
            s.layout = build_alum_layout(self.model, s.batch, s.embeds, self.alum,
                                         s.rows.rows_mask, seed)
        return s.layout

    # -- pass 1: clean, forward only -------------------------------------------
    def _clean_forward(self, m: int, batch, model):
        s = self.states[m]
        embeds, out = clean_pass(model)(*clean_pass_args(batch, s.rows))
        if self.first:
            s.embeds = embeds.detach()

        def loss_func(logits):
            if self.last and s.rows is not None:
                s.clean = logits.detach()
            return torch.zeros((), device=logits.device), {}
        return out, loss_func

    # -- pass 2: ascent --------------------------------------------------------
    def _ascent_forward(self, m: int, batch, model):
        s = self.states[m]
        perturbed = None
        if self.first:
            s.grad = s.delta.detach().requires_grad_(True)  # its .grad after the schedule
            perturbed = s.embeds + s.grad
        out = model.forward_from_embeddings(perturbed, batch["attention_mask"],
                                            clean_head_rows(s.batch, s.rows))

        def loss_func(logits):
            if not s.active:
                return _zero_loss(logits), {}
            layout = self._layout(s)
            div = layout.divergences.ascent(logits, s.clean, layout.row_weights)
            # × M: the schedule divides by M; × the fp16 scale (unscaled after).
            return div * (len(self.micro) * self.loss_scale), {}
        return out, loss_func

    def _ascent(self) -> None:
        """δ's random start on the first stage (zero without KL rows), then K ascent steps."""
        for s in self.states if self.first else ():
            if s.rows is None:
                s.delta = torch.zeros_like(s.embeds)
                continue
            mask = self._layout(s).delta_mask
            s.scale = embedding_scale(s.embeds, self.alum, mask)
            s.delta = random_start(s.embeds, self.alum, mask, s.scale, s.layout.init_noise)
        for _ in range(self.alum.steps):
            with frozen_parameters(self.model):
                self._schedule(self._ascent_forward, forward_only=False)
            for s in self.states if self.first else ():  # the leaves' gradients, unscaled
                g = s.grad.grad if s.grad.grad is not None else torch.zeros_like(s.grad)
                s.grad = g / self.loss_scale if self.loss_scale != 1.0 else g
            live = [s for s in self.states if s.active]
            # Only the first stage holds ∇δ: one all-reduce over the model-parallel group
            # per ascent step, so that every rank skips the same micro-batches.
            finite = all_finite_each([s.grad for s in live], ps.get_model_parallel_group(),
                                     self.t.engine.device)
            for s, ok in zip(live, finite):
                self._update_delta(s, ok)

    def _update_delta(self, s: MicroBatchState, finite: bool) -> None:
        """δ ← the ascent update of ``s`` (first stage), or the agreed skip (every stage)."""
        s.skipped = not finite
        if self.first and finite:
            s.delta, s.share, _ = ascent_update(s.delta, s.grad, self.alum, s.layout.delta_mask,
                                                s.scale, s.layout.update, lambda _grad: finite)

    # -- pass 3: perturbed, forward and backward ----------------------------------
    def _perturbed_forward(self, m: int, batch, model):
        s = self.states[m]
        embeds = None
        if self.first:
            embeds = s.embeds
            if s.active:
                embeds = embeds + s.delta
                if not self.alum.detach_embeddings:  # its .grad after the schedule
                    s.embeds_grad = embeds.requires_grad_(True)
        rows = clean_head_rows(s.batch, s.rows)
        out = model.forward_from_embeddings(embeds, batch["attention_mask"], rows)

        def loss_func(adv):
            if not s.active:
                return _zero_loss(adv), {}
            layout = self._layout(s)
            split = layout.split_term(adv, s.clean)
            # Equal on the TP ranks of the last stage: agreed against a rank-local fault.
            if not all_finite_over(split.value, ps.get_tensor_model_parallel_group()):
                s.skipped = True
                return _zero_loss(adv), {}
            s.term = split.value
            if layout.divergences.flips is not None:
                s.flips = layout.divergences.flips(adv.detach(), s.clean, layout.row_weights)
            s.clean = None  # pass 4 recomputes the clean logits with a graph
            s.split = split
            return self.alum.alpha * split.perturbed(), {}
        return out, loss_func

    # -- pass 4: clean, forward and backward ---------------------------------------
    def _clean_train_forward(self, m: int, batch, model):
        s = self.states[m]
        _, out = clean_pass(model, s.embeds_grad)(*clean_pass_args(batch, s.rows))

        def loss_func(logits):
            c = clean_objective(model, logits, batch, s.rows)
            loss = c.mlm
            if self.last and s.split is not None:
                loss = c.mlm + self.alum.alpha * s.split.clean(c.kl_rows)
                s.split = None
            mean = c.mlm.detach().clone().float()
            n = c.predicted
            return loss, {"loss_sum": mean * n, "correct": c.correct.float(),
                          "predicted": n.float(), "mean": mean}
        return out, loss_func

    # -- the whole step ----------------------------------------------------------
    def run(self, loss_scale: float = 1.0) -> Tuple[List[Dict], Dict[str, float]]:
        """The four passes; returns pass 4's loss dicts (last stage) and the step's ALUM
        statistics summed over the pipeline (sums and counts; see ``stats_vector``)."""
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

    def stats_vector(self) -> Dict[str, float]:
        """ALUM's statistics of the step, each stage contributing what it holds (the first:
        δ's, the last: the term's and the flips), summed over the pipeline group."""
        acc = dict.fromkeys(STAT_KEYS, 0.0)
        for s in self.states if self.first else ():
            if s.active:
                st = perturbation_stats(s.embeds, Perturbation(s.delta, s.grad, s.share),
                                        self.alum, s.layout.delta_mask)
                acc["delta_rel_sum"] += float(st["delta_rel_norm"])
                acc["cos_sum"] += float(st["cos_delta_grad"])
                acc["share_sum"] += float(st["grad_share"])
                acc["delta_count"] += 1
        for s in self.states if self.last else ():
            acc["skipped"] += float(s.rows is not None and s.skipped)
            if s.term is not None:
                acc["adv_loss_sum"] += float(s.term)
                acc["term_count"] += 1
            if s.flips is not None:
                acc["flip_sum"] += float(s.flips)
                acc["flip_count"] += 1
        vec = torch.tensor([acc[k] for k in STAT_KEYS], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            vec = vec.to(self.t.engine.device)
            dist.all_reduce(vec, group=ps.get_pipeline_model_parallel_group())
        return dict(zip(STAT_KEYS, vec.cpu().tolist()))


def pipeline_alum_step(trainer, batches: Iterator, loss_scale: float = 1.0
                       ) -> Tuple[List[float], Dict[str, Optional[float]]]:
    """Runs ``PipelineAlumStep`` over the next ``grad_accum_steps`` micro-batches.

    Returns [loss x tokens, correct, predicted, mean loss] summed over the micro-batches
    (every rank of the pipeline, as ``PipelineSteps._run_pipeline``) and the step's
    ALUM statistics (means over this rank's data-parallel replica's micro-batches, and
    the skipped count)."""
    tc = trainer.cfg.train
    micro = [trainer._to_device(next(batches)) for _ in range(tc.grad_accum_steps)]
    outputs, stats = PipelineAlumStep(trainer, micro).run(loss_scale)
    sums = torch.zeros(4, dtype=torch.float64)
    for out in outputs:
        sums += torch.stack([out["loss_sum"], out["correct"], out["predicted"],
                             out["mean"]]).double().cpu()
    sums = sums.to(trainer.engine.device)
    dist.broadcast(sums, src=ps.get_pipeline_model_parallel_last_rank(),
                   group=ps.get_pipeline_model_parallel_group())
    return sums.cpu().tolist(), stats

