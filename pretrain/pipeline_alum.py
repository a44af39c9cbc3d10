"""ALUM through the pipeline: the lean order as separate schedule passes.

Under pipeline parallelism megatron-core's schedule owns forward and backward, and δ
lives on the first stage while the logits live on the last. One optimizer step over
the M accumulation micro-batches runs the lean order of docs/algorithm.md's cost model
(alum.pretrain.lean_order) as whole-pipeline passes, each through the schedule:

1. **clean, forward only**: the first stage keeps each micro-batch's embedding output
   (detached) and the generator state before its embedding; the last stage keeps the
   clean logits of the KL rows (detached: the KL's target);
2. **ascent** (K times), parameters frozen: the first stage feeds ``embeds + δ`` with δ a
   leaf; the last stage's loss is the ascent divergence; the schedule's backward crosses
   every stage and stops at δ on the first, with no weight gradient anywhere (frozen
   parameters; megatron's frozen-weight linears save no inputs either). The first stage
   updates δ (adv_project); a NaN/Inf gradient is agreed over the model-parallel group;
3. **perturbed, forward and backward** of α·KL(stopgrad p_clean ‖ p_adv): the embedding
   output is recomputed under the clean pass's generator state (same dropout), δ added;
   the last stage evaluates the symmetric KL once, value and gradient, and keeps the
   gradient (alum.pretrain.split_term; other divergences keep the perturbed rows);
4. **clean, forward and backward** of MLM + α·KL(stopgrad p_adv ‖ p_clean), replaying
   pass 1's generator state on every stage (same dropout masks as the KL's target); the
   KL's gradient into the clean logits is the negative of pass 3's.

Passes 3 and 4 accumulate Algorithm 1's g_θ exactly (see lean_order's docstring); the
schedule divides each micro-batch's loss by M as DeepSpeed's accumulation does. The
ascent's loss is multiplied by M (and by the fp16 loss scale) so that δ's gradient is the
divergence's own. The interleaved schedule is refused with ALUM at config time: its
forward order across model chunks is not the forward-only schedule's, which the replay
relies on.
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist

from alum.adversarial import (Perturbation, adversarial_stats, frozen_parameters,
                              gradient_share)
from alum.perturbation import embedding_scale, row_mask

from .alum_layout import all_finite_over, build_alum_layout
from .checkpoint import capture_rng_state, restore_rng_state
from .mlm_step import clean_head_rows, clean_objective, kl_rows
from .split_term import SplitTerm


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """A zero loss with a graph back to ``logits`` (padded vocabulary columns are -inf)."""
    return torch.nan_to_num(logits.float()).sum() * 0.0


class PipelineAlumStep:
    """One optimizer step of ALUM under PP (the four passes of the module docstring)."""

    def __init__(self, trainer, micro: List[Dict[str, torch.Tensor]]):
        self.t = trainer
        self.micro = micro
        self.m_count = len(micro)
        self.alum = trainer.cfg.alum
        self.positions = trainer.cfg.alum_positions
        self.model = trainer.engine.module
        self.first = bool(self.model.pre_process)
        self.last = bool(self.model.post_process)
        n = self.m_count
        self.rows = [kl_rows(b, self.positions) for b in micro]
        self.embeds: List[Optional[torch.Tensor]] = [None] * n
        self.embed_rng: List[Optional[Dict[str, Any]]] = [None] * n
        self.clean: List[Optional[torch.Tensor]] = [None] * n
        self.split: List[Optional[SplitTerm]] = [None] * n
        self.delta: List[Optional[torch.Tensor]] = [None] * n
        self.grad: List[Optional[torch.Tensor]] = [None] * n
        self.share: List[torch.Tensor] = [torch.zeros(())] * n
        self.skipped = [False] * n
        self.terms: List[Optional[torch.Tensor]] = [None] * n
        self.flips: List[Optional[torch.Tensor]] = [None] * n
        self.layouts: List[Any] = [None] * n

    # -- the schedule ---------------------------------------------------------
    def _schedule(self, step_func, forward_only: bool) -> List[Dict]:
        from alum.parallel.pipeline import run_schedule

        t = self.t
        tc = t.cfg.train
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(t.precision,
                                                                   torch.float32)
        counter = iter(range(self.m_count))

        def forward_step(data_iterator, view):
            return step_func(next(counter), next(data_iterator), view.module)

        context = torch.no_grad() if forward_only else contextlib.nullcontext()
        with context:
            return run_schedule([self.model], t._parallel_config(), model=self.model.config,
                                data_iterator=iter(self.micro), num_microbatches=self.m_count,
                                seq_length=t.cfg.data.seq_length,
                                micro_batch_size=tc.micro_batch_size,
                                forward_only=forward_only, forward_step_func=forward_step,
                                pipeline_dtype=dtype)

    def _layout(self, m: int, batch, embeds: Optional[torch.Tensor]):
        """The divergences (and on the first stage δ's mask and random start) of ``m``."""
        if self.layouts[m] is None:
            rows = self.rows[m]
            seed = self.t.cfg.train.seed if embeds is not None else None
            self.layouts[m] = build_alum_layout(self.model, batch, embeds, self.alum,
                                                rows.rows_mask, seed)
        return self.layouts[m]

    def _divergences(self, m: int, batch):
        return self._layout(m, batch, None).divergences

    def _head_rows(self, m: int) -> Optional[torch.Tensor]:
        """Where every pass runs the MLM head for micro-batch ``m`` (the KL's rows)."""
        return clean_head_rows(self.micro[m], self.rows[m])

    def _active(self, m: int) -> bool:
        return self.rows[m] is not None and not self.skipped[m]

    # -- pass 1: clean, forward only -------------------------------------------
    def _clean_forward(self, m: int, batch, model):
        embeds = None  # a later stage reads the previous stage's activation
        if self.first:
            self.embed_rng[m] = capture_rng_state()
            embeds = model.embed(batch["input_ids"], batch.get("token_type_ids"))
            self.embeds[m] = embeds.detach()
        out = model.forward_from_embeddings(embeds, batch["attention_mask"], self._head_rows(m))

        def loss_func(logits):
            if self.last and self.rows[m] is not None:
                self.clean[m] = logits.detach()
            return torch.zeros((), device=logits.device), {}
        return out, loss_func

    # -- pass 2: ascent --------------------------------------------------------
    def _ascent_forward(self, m: int, batch, model):
        perturbed = None
        if self.first:
            leaf = self.delta[m].detach().requires_grad_(True)
            self.grad[m] = leaf  # replaced by its gradient after the schedule
            perturbed = self.embeds[m] + leaf
        out = model.forward_from_embeddings(perturbed, batch["attention_mask"],
                                            self._head_rows(m))

        def loss_func(logits):
            if not self._active(m):
                return _zero_loss(logits), {}
            div = self._divergences(m, batch).ascent(logits, self.clean[m], None)
            # × M: the schedule divides by M; × the fp16 scale (unscaled after).
            return div * (self.m_count * self.loss_scale), {}
        return out, loss_func

    def _init_delta(self) -> None:
        """δ's random start on the first stage (zero for a micro-batch without KL rows)."""
        if not self.first:
            return
        for m, batch in enumerate(self.micro):
            self.delta[m] = torch.zeros_like(self.embeds[m])
            if self.rows[m] is not None:
                layout = self._layout(m, batch, self.embeds[m])
                if layout.init_noise is not None:
                    self.delta[m] = layout.init_noise

    def _ascent(self) -> None:
        cfg = self.alum
        for _ in range(cfg.steps):
            with frozen_parameters(self.model):
                self._schedule(self._ascent_forward, forward_only=False)
            flags = torch.zeros(self.m_count, dtype=torch.float32)
            if self.first:
                for m in range(self.m_count):
                    leaf = self.grad[m]
                    g = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
                    self.grad[m] = g / self.loss_scale if self.loss_scale != 1.0 else g
                    if self._active(m) and not bool(torch.isfinite(self.grad[m]).all()):
                        flags[m] = 1.0
            device = self.t.engine.device
            flags = flags.to(device)
            if dist.is_available() and dist.is_initialized():
                from megatron.core import parallel_state as ps

                dist.all_reduce(flags, group=ps.get_model_parallel_group())
            for m in range(self.m_count):
                if float(flags[m]) > 0 and not self.skipped[m]:
                    self.skipped[m] = True
                    self.skip_reasons.append("the ascent gradient")
            if self.first:
                for m in range(self.m_count):
                    if self._active(m):
                        self._update_delta(m)

    def _update_delta(self, m: int) -> None:
        cfg = self.alum
        layout = self.layouts[m]
        embeds, delta, grad = self.embeds[m], self.delta[m], self.grad[m]
        scale = embedding_scale(embeds, cfg, layout.delta_mask)
        self.share[m] = gradient_share(delta, grad, cfg, row_mask(layout.delta_mask, delta),
                                       scale)
        with torch.no_grad():
            self.delta[m] = layout.update(delta, grad, cfg, layout.delta_mask, scale).detach()

    # -- pass 3: perturbed, forward and backward ----------------------------------
    def _perturbed_forward(self, m: int, batch, model):
        embeds = None
        if self.first:
            now = capture_rng_state()
            restore_rng_state(self.embed_rng[m])  # the clean pass's embedding dropout
            embeds = model.embed(batch["input_ids"], batch.get("token_type_ids"))
            restore_rng_state(now)
            if self.alum.detach_embeddings:
                embeds = embeds.detach()
            if self._active(m):
                embeds = embeds + self.delta[m]
        out = model.forward_from_embeddings(embeds, batch["attention_mask"], self._head_rows(m))

        def loss_func(adv):
            if not self._active(m):
                return _zero_loss(adv), {}
            layout = self._layout(m, batch, None)
            split = SplitTerm(layout.divergences.final, layout.final_value_and_grad, adv,
                              self.clean[m])
            if not all_finite_over_tensor_parallel(split.value):
                self.skipped[m] = True
                self.skip_reasons.append("the adversarial term")
                return _zero_loss(adv), {}
            self.terms[m] = split.value
            if layout.divergences.flips is not None:
                self.flips[m] = layout.divergences.flips(adv.detach(), self.clean[m], None)
            self.clean[m] = None  # pass 4 recomputes the clean logits with a graph
            self.split[m] = split
            return self.alum.alpha * split.perturbed(), {}
        return out, loss_func

    # -- pass 4: clean, forward and backward ---------------------------------------
    def _clean_train_forward(self, m: int, batch, model):
        out = model(batch["input_ids"], batch["attention_mask"],
                    token_type_ids=batch.get("token_type_ids"), rows=self._head_rows(m))

        def loss_func(logits):
            c = clean_objective(model, logits, batch, self.rows[m])
            loss = c.mlm
            if self.last and self.split[m] is not None:
                loss = c.mlm + self.alum.alpha * self.split[m].clean(c.kl_rows)
                self.split[m] = None
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
        self.skip_reasons: List[str] = []
        start = capture_rng_state()
        self._schedule(self._clean_forward, forward_only=True)
        self._init_delta()
        self._ascent()
        self._schedule(self._perturbed_forward, forward_only=False)
        after = capture_rng_state()
        restore_rng_state(start)
        outputs = self._schedule(self._clean_train_forward, forward_only=False)
        restore_rng_state(after)
        return outputs, self.stats_vector()

    def stats_vector(self) -> Dict[str, float]:
        """ALUM's statistics of the step, each stage contributing what it holds (the first:
        δ's, the last: the term's and the flips), summed over the pipeline group."""
        vec = torch.zeros(9, dtype=torch.float64)
        cfg = self.alum
        if self.first:
            for m in range(self.m_count):
                if not self._active(m):
                    continue
                layout = self.layouts[m]
                pert = Perturbation(self.delta[m], self.grad[m], self.share[m])
                zero = torch.zeros((), device=self.delta[m].device)
                s = adversarial_stats(self.embeds[m], pert, zero, zero, zero, cfg,
                                      layout.delta_mask, _no_flips(layout.divergences))
                vec[3] += float(s.delta_rel_norm)
                vec[4] += float(s.cos_delta_grad)
                vec[5] += float(s.grad_share)
                vec[6] += 1
        if self.last:
            for m in range(self.m_count):
                if self.terms[m] is not None:
                    vec[0] += float(self.terms[m])
                    vec[2] += 1
                    if self.flips[m] is not None:
                        vec[1] += float(self.flips[m])
                        vec[8] += 1
            vec[7] = float(sum(1 for m in range(self.m_count)
                               if self.rows[m] is not None and self.skipped[m]))
        if dist.is_available() and dist.is_initialized():
            from megatron.core import parallel_state as ps

            device = self.t.engine.device
            vec = vec.to(device)
            dist.all_reduce(vec, group=ps.get_pipeline_model_parallel_group())
            vec = vec.cpu()
        v = vec.tolist()
        return {"adv_loss_sum": v[0], "flip_sum": v[1], "term_count": v[2],
                "delta_rel_sum": v[3], "cos_sum": v[4], "share_sum": v[5],
                "delta_count": v[6], "skipped": v[7], "flip_count": v[8]}


def _no_flips(divergences):
    from alum.divergence import Divergences

    return Divergences(divergences.ascent, divergences.final, None)


def all_finite_over_tensor_parallel(value: torch.Tensor) -> bool:
    """The last stage's NaN test of the term, agreed over its TP group (the term is equal
    on its TP ranks; the all-reduce only guards against a rank-local fault)."""
    from megatron.core import parallel_state as ps

    return all_finite_over(value, ps.get_tensor_model_parallel_group())


def pipeline_alum_step(trainer, batches: Iterator, loss_scale: float = 1.0
                       ) -> Tuple[List[float], Dict[str, Optional[float]]]:
    """Runs ``PipelineAlumStep`` over the next ``grad_accum_steps`` micro-batches.

    Returns [loss x tokens, correct, predicted, mean loss] summed over the micro-batches
    (every rank of the pipeline, as ``PipelineSteps._run_pipeline``) and the step's
    ALUM statistics (means over this rank's data-parallel replica's micro-batches, and
    the skipped count)."""
    from megatron.core import parallel_state as ps

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

