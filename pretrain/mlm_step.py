"""One optimizer step of MLM pre-training without pipeline parallelism (PP = 1).

Read top to bottom, this file is the step: how a pass reaches the model through the
DeepSpeed engine (runners), the positions ALUM's KL reads, the clean objective, one
micro-batch in ALUM's *fast* order (the clean graph stays alive through the ascent and
the final perturbed pass, one backward at the end: docs/algorithm.md, "Cost model"), and
``MicroBatchSteps``, the step strategy the trainer's loop calls: ``grad_accum_steps``
micro-batches, ``engine.backward`` and ``engine.step`` (DeepSpeed steps the optimizer and
the LR schedule at the accumulation boundary, with clipping and fp16 loss scaling), then
the step's metrics summed over data parallel. The *lean* order (one graph at a time,
alum.pretrain.lean_order) reuses these pieces; the pipeline (PP > 1) is
alum.pretrain.pipeline_loop.

The clean forward runs in two halves (``embed``, then ``forward_from_embeddings``) so that
ALUM gets the embedding output that produced the clean logits; the adversarial term (the
core's staged step, alum.adversarial.AlumStep, all stages at once) perturbs that output.
Layouts (TP, sequence parallel, DP) enter through alum.pretrain.alum_layout: the
vocabulary-parallel divergences, the per-sample random start and the NaN test that all
ranks of a model-parallel group agree on.

Why the clean pass goes through ``engine(...)`` and the ALUM passes do not:
DeepSpeed's forward registers hooks on its outputs that start its backward
bookkeeping (ZeRO's backward prologue, gradient-accumulation scaling of direct
``tensor.backward`` calls). The loss's backward must see them once; ALUM's
ascent takes ``autograd.grad`` w.r.t. δ alone and must not (it would enter
ZeRO's backward and scale δ's gradient). The ascent and final perturbed passes
start from ``embeds.detach() + δ``, so they never reach the clean outputs' hooks.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
from torch import nn

from alum import AlumConfig, AdversarialStats
from alum.adversarial import AlumStep
from alum.split_term import add_gradient

from .alum_layout import build_alum_step, predicted_ids
from .config import PretrainConfig
from .data import valid_batches


# -- how a pass reaches the model -------------------------------------------------
# A pass is a function run *as the module's forward* (``call_through_hooks``), so that the
# hooks of the module and of the DeepSpeed engine wrapping it run: ZeRO-3 gathers its
# partitioned parameters there, and the engine's forward registers the hooks that start its
# backward bookkeeping. The fast order runs its clean pass through a runner; the lean order
# (alum.pretrain.lean_order) runs every pass and backward through one.

def call_through_hooks(model: nn.Module, method: Callable, *args: torch.Tensor,
                       via: Optional[Callable] = None):
    """``method(*args)`` invoked as ``model(*args)`` (or ``via(*args)``, a wrapper of
    ``model`` such as the DeepSpeed engine), so the module's own hooks run.

    ZeRO-3 gathers partitioned parameters in forward hooks; a parameter used by a
    module that does not own it (the MLM decoder reading the tied word embedding) is
    gathered only by the root module's hooks, which a plain method call skips.
    """
    model.forward = method
    try:
        return (via or model)(*args)
    finally:
        del model.forward


@dataclass
class PassRunner:
    """How a pass reaches the model: ``forward(fn, *args)`` runs ``fn`` as the module's
    forward (so DeepSpeed's/ZeRO's hooks run); ``backward(loss, last)`` back-propagates,
    ``last`` marking the micro-batch's final backward (DeepSpeed reduces gradients there)."""

    model: nn.Module
    forward: Callable[..., Any]
    backward: Callable[[torch.Tensor, bool], None]


def module_runner(model: nn.Module) -> PassRunner:
    """Passes straight through the module (no DeepSpeed engine)."""
    return PassRunner(model, lambda fn, *args: call_through_hooks(model, fn, *args),
                      lambda loss, last: loss.backward())


def engine_runner(engine) -> PassRunner:
    """Passes through a DeepSpeed engine. Only a micro-batch's last backward may be an
    accumulation boundary: ZeRO-0/1 all-reduce there, once for both backward passes."""
    module = engine.module

    def forward(fn, *args):
        return call_through_hooks(module, fn, *args, via=engine)

    def backward(loss: torch.Tensor, last: bool) -> None:
        if last:
            engine.backward(loss)
            return
        _zero3_fresh_partitions(engine)
        engine.set_gradient_accumulation_boundary(False)
        try:
            engine.backward(loss)
        finally:
            engine.set_gradient_accumulation_boundary(None)

    return PassRunner(module, forward, backward)


def _zero3_fresh_partitions(engine) -> None:
    """Zero ZeRO-3's gradient partitions before an optimizer step's first backward.

    ZeRO-3 *copies* a gradient into its partition during the step's first backward
    (``micro_step_id == 0``) and adds afterwards, so the partitions keep the previous
    step's values until overwritten. Measured (DeepSpeed 0.19.8, tests/pretrain/
    test_alum_orders.py): after a non-boundary backward, some gradients (the embedding
    layer's, the last produced) reach their partitions only during the next backward,
    with ``micro_step_id == 1``, and are added to the stale values. With one backward per
    micro-batch that never happens at micro step 0; the lean order's two do. Starting the
    step from zeroed partitions makes copy and add agree. Both attributes are private to
    DeepSpeed's ZeRO-3 optimizer: checked, so that a release renaming them stops the run
    with its version instead of silently skipping the fix; still needed while
    tests/pretrain/test_alum_orders.py (lean order under ZeRO-3) fails without it.
    """
    if engine.zero_optimization_stage() != 3:
        return
    from alum.parallel.internals import require_instance_attrs

    optimizer = engine.optimizer
    require_instance_attrs(optimizer, "deepspeed", ("micro_step_id", "grad_partitions_flat_buffer"),
                           use="zeroes the gradient partitions before a step's first backward")
    if optimizer.micro_step_id != 0:
        return
    buffer = optimizer.grad_partitions_flat_buffer
    if buffer is not None:
        buffer.zero_()


def to_device(batch: Dict[str, torch.Tensor], device: torch.device) -> Dict[str, torch.Tensor]:
    """A micro-batch's tensors on the engine's device."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


@dataclass
class MicroBatchResult:
    """What one micro-batch's forward produced (losses keep their graphs)."""

    loss: torch.Tensor
    """The objective to back-propagate: MLM loss (+ α·adversarial term)."""
    mlm_loss: torch.Tensor
    """The clean MLM cross entropy (detached)."""
    correct: torch.Tensor
    """Predicted positions whose argmax equals the label."""
    predicted: torch.Tensor
    """Predicted positions (labels != -100)."""
    adv: Optional[AdversarialStats] = None
    """ALUM's statistics, when the adversarial term ran."""


@dataclass
class AlumPositions:
    """Where ALUM's KL is taken: the positions the MLM head runs at in ALUM's passes, and
    the KL's weights over those rows."""

    head_rows: Optional[torch.Tensor]
    """``[b, s]`` bool: the head runs at these positions only (``masked``: the predicted
    ones, which the MLM loss reads too); None: at all positions (``all``)."""
    kl_weights: Optional[torch.Tensor]
    """Weights of the KL's rows (``[b, s]`` padding mask for ``all``; None: all count)."""


def kl_positions(batch: Dict[str, torch.Tensor], alum_positions: str) -> Optional[AlumPositions]:
    """``alum_positions`` (PretrainConfig's): ``masked``: the predicted positions (the authors' code); ``all``: every non-padding
    position. None when nothing is predicted (no KL positions either)."""
    if alum_positions == "masked":
        selected = batch["labels"].ne(-100)
        if not bool(selected.any()):
            return None
        return AlumPositions(selected, None)
    return AlumPositions(None, batch["attention_mask"])


# -- the fraction of the batch that gets the term (AlumConfig.fraction) ------------------
# The adversarial term covers the first ceil(fraction × b) sequences of each micro-batch;
# with ``alum_positions="masked"`` that is every masked position of those sequences
# (sequences, not positions, so that the perturbed passes run on fewer sequences: the
# saving). The first sequences rather than a random subset: the choice depends on the
# batch alone, so a resumed run, every TP/SP/DP layout and gradient accumulation select
# the same sequences (docs/algorithm.md, "Cheaper variants").

@dataclass
class AdversarialPart:
    """The sequences of a micro-batch that get the adversarial term, and their tensors."""

    n: int
    """How many (the first ``n`` of the batch)."""
    batch: Dict[str, torch.Tensor]
    """The batch's tensors, their first ``n`` rows."""
    head_rows: Optional[torch.Tensor]
    """``[n, s]`` bool: the KL's positions (``masked``), or None (``all``)."""
    kl_weights: Optional[torch.Tensor]
    """The KL rows' weights, ``[n, s]`` (``all``), or None."""
    logit_rows: Optional[int]
    """Rows of the clean ALUM logits that belong to these sequences: the first ``logit_rows``
    of ``[positions, V]`` logits (``masked``), or the first ``n`` of ``[b, s, V]``; None
    when the part is the whole micro-batch (then nothing is counted: no device sync)."""

    @property
    def whole(self) -> bool:
        """The part is the whole micro-batch (fraction 1, or rounding)."""
        return self.logit_rows is None

    def logits(self, clean: torch.Tensor) -> torch.Tensor:
        """The part's rows of the clean pass's ALUM logits."""
        return clean if self.whole else clean[:self.logit_rows]

    def embeds(self, embeds: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
        """The part's rows of the embedding output (``[b, s_local, h]``)."""
        return embeds if self.whole or embeds is None else embeds[:self.n]

    def full_grad(self, grad: Optional[torch.Tensor], like: torch.Tensor
                  ) -> Optional[torch.Tensor]:
        """A gradient at the part's embedding rows, zero-padded to the whole batch's."""
        if grad is None or self.whole:
            return grad
        out = torch.zeros_like(like)
        out[:self.n] = grad
        return out


def adversarial_part(alum: AlumConfig, batch: Dict[str, torch.Tensor], positions
                     ) -> Optional[AdversarialPart]:
    """The first ceil(fraction × b) sequences (``positions``: the micro-batch's
    ``AlumPositions``); None when those sequences have no masked position."""
    b = batch["input_ids"].shape[0]
    n = alum.adversarial_rows(b)
    if n == b:
        return AdversarialPart(b, batch, positions.head_rows, positions.kl_weights, None)
    part = {k: v[:n] if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == b
            else v for k, v in batch.items()}
    head = None if positions.head_rows is None else positions.head_rows[:n]
    weights = None if positions.kl_weights is None else positions.kl_weights[:n]
    if head is not None:
        count = int(head.sum())  # the masked positions are row-major: these come first
        if count == 0:
            return None
        return AdversarialPart(n, part, head, weights, count)
    return AdversarialPart(n, part, None, weights, n)


def part_step(model, part: AdversarialPart, embeds: Optional[torch.Tensor], alum: AlumConfig,
              run_seed: Optional[int], loss_scale: float) -> AlumStep:
    """The layout's staged step (build_alum_step) on the part's sequences."""
    return build_alum_step(model, part.batch, part.embeds(embeds), alum, part.kl_weights,
                           run_seed, loss_scale)


def part_forward(model: nn.Module, part: AdversarialPart
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    """perturbed embedding output of the part → the KL rows of its logits (through the
    module's hooks)."""
    def forward_fn(perturbed: torch.Tensor) -> torch.Tensor:
        return call_through_hooks(model, model.forward_from_embeddings, perturbed,
                                  part.batch["attention_mask"], part.head_rows)
    return forward_fn


def clean_head_rows(batch: Dict[str, torch.Tensor],
                    positions: Optional[AlumPositions]) -> Optional[torch.Tensor]:
    """Where the clean pass runs the MLM head: at the predicted positions (``[b, s]``
    bool), unless ALUM's KL reads all positions (None). The ``[b, s, V]`` decoder output
    is most of the head's cost; the loss reads ≈15% of it (docs/alum_cost.md)."""
    if positions is None:
        return batch["labels"].ne(-100)
    return positions.head_rows  # the predicted positions (masked) or None (all)


def clean_pass_args(batch: Dict[str, torch.Tensor], positions: Optional[AlumPositions]) -> Tuple:
    """``clean_pass``'s arguments for ``batch``: its inputs and ``clean_head_rows``."""
    return (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"),
            clean_head_rows(batch, positions))


@dataclass
class CleanObjective:
    """The clean pass's MLM loss, accuracy counts and the clean logits ALUM's KL reads."""

    mlm: torch.Tensor
    correct: torch.Tensor
    predicted: torch.Tensor
    alum_logits: Optional[torch.Tensor]
    """The logits at ``AlumPositions.head_rows`` (None without ALUM)."""


def clean_objective(model: nn.Module, logits: torch.Tensor, batch: Dict[str, torch.Tensor],
                    positions: Optional[AlumPositions]) -> CleanObjective:
    """MLM loss and counts from the logits of a clean pass run at
    ``clean_head_rows(batch, positions)``: ``[n, V/tp]`` at the predicted positions, or
    ``[b, s, V/tp]`` when the KL reads all positions (the predicted rows are then
    selected once, for the loss and the counts). Vocabulary-parallel logits under TP are
    handled by ``predicted_ids`` and the model's own (vocab-parallel) cross entropy.
    """
    labels = batch["labels"]
    selected = labels.ne(-100)
    full = positions is not None and positions.head_rows is None  # clean_head_rows gave None
    picked = logits[selected] if full else logits
    target = labels[selected]
    mlm = model.mlm_loss(picked, target)
    with torch.no_grad():
        correct = predicted_ids(model, picked).eq(target).sum()
    clean = None if positions is None else logits
    return CleanObjective(mlm, correct, selected.sum(), clean)


def clean_pass(model: nn.Module, embeds_grad: Optional[torch.Tensor] = None,
               on_grad: Optional[Callable[[torch.Tensor], None]] = None,
               ) -> Callable[..., Tuple[torch.Tensor, torch.Tensor]]:
    """``(input_ids, attention_mask, token_type_ids, rows) -> (embedding output, logits)``:
    the clean forward in the two halves ALUM needs, the head at ``rows`` (see
    ``clean_head_rows``), to be run as the module's forward (so the DeepSpeed engine's and
    ZeRO-3's hooks run: ``call_through_hooks``). ``embeds_grad``: a gradient
    the embedding output also receives in the backward pass (the lean passes' pass 4).
    ``on_grad``: called with the embedding output's gradient in the backward pass (the
    free direction's; hooked here, inside the forward, because ZeRO-3's hooks hand the
    caller a copy of the outputs that the loss does not depend on).
    A later pipeline stage has no embedding output (None) and reads its input tensor."""
    def forward(input_ids, attention_mask, token_type_ids=None, rows=None):
        embeds = None
        if getattr(model, "pre_process", True):
            embeds = model.embed(input_ids, token_type_ids)
            if embeds_grad is not None:  # the lean order's pass 4 only
                embeds = add_gradient(embeds, embeds_grad)
            if on_grad is not None and embeds.requires_grad:  # the free direction's
                embeds.register_hook(on_grad)
        return embeds, model.forward_from_embeddings(embeds, attention_mask, rows)
    return forward


def mlm_micro_batch(model: Union[nn.Module, PassRunner], batch: Dict[str, torch.Tensor],
                    alum: Optional[AlumConfig], alum_active: bool, alum_positions: str = "masked",
                    loss_scale: float = 1.0,
                    run_seed: Optional[int] = None) -> MicroBatchResult:
    """Forward one micro-batch and build its loss (the caller back-propagates it).

    Args:
        model: the module (embed / forward_from_embeddings / mlm_loss), or a
            ``PassRunner`` the clean pass goes through (the trainer's: through the
            DeepSpeed engine, ``engine_runner``).
        batch: ``input_ids``, ``attention_mask``, ``labels`` (and ``token_type_ids``,
            ``sample_index``).
        alum: ALUM's config, or None for standard MLM.
        alum_active: the curriculum's decision for this optimizer step.
        alum_positions: ``masked`` (KL at labels != -100, the authors' code) or ``all``
            (every non-padding position).
        loss_scale: DeepSpeed's current fp16 loss scale, so the inner gradient does
            not underflow (1 otherwise).
        run_seed: seeds δ's random start per sample (alum.pretrain.alum_layout); None:
            the global generator.
    """
    runner = model if isinstance(model, PassRunner) else module_runner(model)
    model = runner.model
    positions = kl_positions(batch, alum_positions) if alum is not None and alum_active else None
    embeds, logits = runner.forward(clean_pass(model), *clean_pass_args(batch, positions))
    clean = clean_objective(model, logits, batch, positions)
    del logits
    if positions is None:
        return MicroBatchResult(clean.mlm, clean.mlm.detach(), clean.correct, clean.predicted)
    if alum.direction == "free":
        raise ValueError("AlumConfig.direction='free' runs its own two backward passes: "
                         "use alum.pretrain.alum_variants.free_micro_batch")
    part = adversarial_part(alum, batch, positions)  # AlumConfig.fraction's sequences
    if part is None:  # none of them has a masked position: no term
        return MicroBatchResult(clean.mlm, clean.mlm.detach(), clean.correct, clean.predicted)
    # Every stage now, the clean graph alive throughout (the step freezes the parameters
    # during the ascent: megatron's linears compute weight gradients in any backward that
    # reaches them, even autograd.grad w.r.t. δ alone).
    step = part_step(model, part, embeds, alum, run_seed, loss_scale)
    adv_term, stats = step.run(part_forward(model, part), part.logits(clean.alum_logits))
    return MicroBatchResult(clean.mlm + adv_term, clean.mlm.detach(), clean.correct,
                            clean.predicted, stats)


# -- the step's metrics ------------------------------------------------------------
ADV_KEYS = ("adv_loss", "delta_rel_norm", "cos_delta_grad", "grad_share", "flip_rate")


def all_reduce_sum(values: List[float]) -> List[float]:
    """Sums over the data-parallel group (TP ranks of a group hold the same values)."""
    t = torch.tensor(values, dtype=torch.float64)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from megatron.core import parallel_state as ps

        dist.all_reduce(t, group=ps.get_data_parallel_group())
    return t.tolist()


def grad_norm(engine) -> Optional[float]:
    value = engine.get_global_grad_norm()
    if value is None:
        return None
    return float(value.item() if torch.is_tensor(value) else value)


def current_loss_scale(engine) -> float:
    """DeepSpeed's dynamic fp16 loss scale (1 when not training in fp16)."""
    if not engine.fp16_enabled():
        return 1.0
    opt = engine.optimizer
    for holder in (opt, getattr(opt, "loss_scaler", None)):
        for name in ("cur_scale", "loss_scale"):
            value = getattr(holder, name, None) if holder is not None else None
            if isinstance(value, (int, float)) or torch.is_tensor(value):
                return float(value)
    return 1.0


class AlumTotals:
    """Sums and counts of ALUM's per-micro-batch statistics (``ADV_KEYS``) and the number of
    skipped terms: what a step strategy adds up and reduces over its ranks (``vector``),
    then turns into the step's metrics (``means``)."""

    def __init__(self) -> None:
        self.sums = dict.fromkeys(ADV_KEYS, 0.0)
        self.counts = dict.fromkeys(ADV_KEYS, 0.0)
        self.skipped = 0.0

    def add(self, key: str, value: Optional[Any]) -> None:
        """One micro-batch's value of ``key`` (None: not measured, not counted)."""
        if value is not None:
            self.sums[key] += float(value)
            self.counts[key] += 1

    def vector(self) -> List[float]:
        return [self.sums[k] for k in ADV_KEYS] + [self.counts[k] for k in ADV_KEYS] \
            + [self.skipped]

    @staticmethod
    def means(vector: List[float]) -> Dict[str, Optional[float]]:
        """The metrics from a (reduced) ``vector``: each key's mean (None when nothing was
        counted) and ``adv_skipped``."""
        n = len(ADV_KEYS)
        out: Dict[str, Optional[float]] = {
            k: vector[i] / vector[n + i] if vector[n + i] else None
            for i, k in enumerate(ADV_KEYS)}
        out["adv_skipped"] = vector[2 * n]
        return out


def step_metrics(sums: List[float], n_micro: int, lr_scheduler,
                 norm: Optional[float]) -> Dict[str, Any]:
    """A step's metrics from its sums over data parallel, ``[loss, correct, predicted] +
    AlumTotals.vector()`` (``loss``: the micro-batches' mean losses, ``n_micro`` of them),
    with the LR and the gradient norm ``norm``; both step strategies report these."""
    out: Dict[str, Any] = {"loss": sums[0] / n_micro,
                           "accuracy": sums[1] / max(sums[2], 1.0),
                           "lr": float(lr_scheduler.get_last_lr()[0]),
                           "grad_norm": norm, "predicted": sums[2]}
    out.update(AlumTotals.means(sums[3:]))
    return out


class MicroBatchSteps:
    """The PP = 1 step strategy of alum.pretrain.trainer.Trainer.

    Args:
        engine: the DeepSpeed engine (its module, device, backward and step).
        cfg: the run's configuration (the order, ALUM's positions, batch sizes, seed).
        lr_scheduler: the engine's LR schedule (the step reports its rate).
        dp_rank, dp_size: this rank's data-parallel slice of the validation set.
        micro_batch: one micro-batch in the run's order (PretrainConfig.resolved_alum_order):
            ``mlm_micro_batch`` (fast, the default; the step back-propagates its loss) or
            alum.pretrain.lean_order's ``lean_micro_batch`` (which runs its own backward
            passes).
    """

    def __init__(self, engine, cfg: PretrainConfig, lr_scheduler, dp_rank: int, dp_size: int,
                 micro_batch: Optional[Callable[..., MicroBatchResult]] = None):
        self.engine, self.cfg, self.lr_scheduler = engine, cfg, lr_scheduler
        self.dp_rank, self.dp_size = dp_rank, dp_size
        self.device = engine.device
        self.micro_batch = micro_batch or mlm_micro_batch

    def optimizer_step(self, batches: Iterator, alum_on: bool) -> Dict[str, Any]:
        """grad_accum_steps micro-batches and the optimizer step; per-step metrics
        (``adv_skipped``: the micro-batches whose term was dropped, over data parallel)."""
        cfg, tc = self.cfg, self.cfg.train
        runner = engine_runner(self.engine)
        micro_batch = self.micro_batch
        loss_sum = correct = predicted = 0.0
        totals = AlumTotals()
        for _ in range(tc.grad_accum_steps):
            batch = to_device(next(batches), self.device)
            result = micro_batch(runner, batch, cfg.alum, alum_on, cfg.alum_positions,
                                 current_loss_scale(self.engine), run_seed=tc.seed)
            if micro_batch is mlm_micro_batch:  # the lean order ran its backward passes
                self.engine.backward(result.loss)
            self.engine.step()
            loss_sum += float(result.mlm_loss)
            correct += float(result.correct)
            predicted += float(result.predicted)
            if result.adv is not None:
                totals.skipped += int(result.adv.skipped)
                if not result.adv.skipped:  # a skipped term's statistics are NaN: not averaged
                    stats = result.adv.to_dict()
                    for k in ADV_KEYS:
                        totals.add(k, stats.get(k))
        sums = all_reduce_sum([loss_sum, correct, predicted] + totals.vector())
        return step_metrics(sums, tc.grad_accum_steps * self.dp_size, self.lr_scheduler,
                            grad_norm(self.engine))

    @torch.no_grad()
    def evaluate(self, valid) -> Optional[Dict[str, float]]:
        """Mean MLM loss and accuracy over the predicted tokens of the first
        ``eval_batches`` validation micro-batches (summed over data-parallel ranks)."""
        model = self.engine.module
        was_training = model.training
        self.engine.eval()
        loss_sum = correct = predicted = 0.0
        tc = self.cfg.train
        for batch in valid_batches(valid, tc.micro_batch_size, tc.eval_batches, self.dp_rank,
                                   self.dp_size):
            batch = to_device(batch, self.device)
            logits = model(batch["input_ids"], batch["attention_mask"],
                           batch.get("token_type_ids"), rows=clean_head_rows(batch, None))
            c = clean_objective(model, logits, batch, None)
            n = float(c.predicted)
            loss_sum += float(c.mlm) * n
            correct += float(c.correct)
            predicted += n
        if was_training:
            self.engine.train()
        loss_sum, correct, predicted = all_reduce_sum([loss_sum, correct, predicted])
        if predicted == 0:
            return None
        return {"loss": loss_sum / predicted, "accuracy": correct / predicted}
