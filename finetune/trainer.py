"""ALUM fine-tuning as a Hugging Face ``Trainer``: the task loss plus α·D_sym.

Only ``compute_loss`` changes. The clean pass records the embedding output
(``EmbeddingSite``), ``alum.adversarial_loss`` runs the ascent on δ and the
final perturbed pass, and the sum is returned to the Trainer, which does the
rest: optimizer, schedule, gradient accumulation, mixed precision, DeepSpeed,
evaluation, checkpoints and logging.

The cheaper variants (``AlumConfig.direction``, ``.fraction``; docs/algorithm.md) run in the
same place: ``none`` and ``random`` skip the ascent pass, ``fraction`` runs the perturbed
passes on the first examples of the batch, and ``free`` back-propagates the clean task loss
inside ``compute_loss`` (its gradient at the embedding output gives δ), so the loss handed
to the Trainer carries the perturbed branch's term alone.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import fields
from typing import Any, Dict, Optional, Tuple

import torch
from transformers import Trainer

from alum import AlumConfig, adversarial_loss
from alum.adversarial import AdversarialStats
from alum.kernels import adv_project_dispatch
from alum.divergence import Logits

from .embedding_site import EmbeddingSite

# Gold targets of the heads the Trainer fine-tunes (classification, multiple choice, span QA):
# the perturbed passes need none of them, since the adversarial term is virtual.
LABEL_KEYS = frozenset({"labels", "start_positions", "end_positions"})

# The statistics a step logs (each AdversarialStats field but the skip flag).
ADV_STAT_KEYS = tuple(f.name for f in fields(AdversarialStats) if f.name != "skipped")

# Logit given to positions that are not answer candidates: finite, so that the KL's
# p·(log p − log q) is 0·finite there rather than 0·(−inf + inf) = NaN.
MASKED_LOGIT = -1e4


def embedding_mask(attention_mask: Optional[torch.Tensor],
                   embeds: torch.Tensor) -> Optional[torch.Tensor]:
    """The padding mask in the embedding output's layout.

    Multiple-choice models take ``[B, C, T]`` inputs and flatten them, so their embedding
    output is ``[B*C, T, H]``: the mask is reshaped to ``[B*C, T]`` to match.
    """
    if attention_mask is None:
        return None
    return attention_mask.reshape(embeds.shape[:-1])


def head_logits(outputs: Any, mask: Optional[torch.Tensor]) -> Logits:
    """The distributions ALUM's divergence compares, per head type (docs/algorithm.md,
    "Divergences").

    Span QA: the (start, end) pair; the divergences are summed by ``adversarial_loss``.
    Padding positions are set to ``MASKED_LOGIT`` (in fp32) so that they hold no
    probability mass: they are not answer candidates, and their logits move with δ only
    through attention. Classification and multiple choice: the logits over the classes
    or over the choices (``[B, C]``).
    """
    start = getattr(outputs, "start_logits", None)
    if start is None:
        return outputs.logits
    end = outputs.end_logits
    if mask is None or tuple(mask.shape) != tuple(start.shape):
        return start, end
    keep = mask.to(torch.bool)
    return (start.float().masked_fill(~keep, MASKED_LOGIT),
            end.float().masked_fill(~keep, MASKED_LOGIT))


class AlumTrainer(Trainer):
    """``transformers.Trainer`` whose training loss carries ALUM's adversarial term.

    Works for sequence classification/regression, multiple choice (KL over the choices)
    and span QA (KL over the start plus KL over the end distribution).

    ``alum_config=None`` (or α = 0) trains the standard objective. The curriculum's
    ``start_step`` is compared with the Trainer's optimizer step count.
    """

    # compute_loss returns a per-batch mean: the Trainer divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, alum_config: Optional[AlumConfig] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alum_config = alum_config
        self.adv_skipped = 0
        """Steps whose adversarial term was dropped for a NaN/Inf gradient
        (docs/algorithm.md, "Algorithm 1")."""
        self.adv_steps = 0
        self._adv_window: Dict[str, list] = defaultdict(list)

    def compute_loss(self, model: torch.nn.Module, inputs: Dict[str, Any],
                     return_outputs: bool = False, num_items_in_batch: Any = None):
        cfg = self.alum_config
        adversarial = model.training and cfg is not None and cfg.active(self.state.global_step)
        if not adversarial:
            outputs = model(**inputs)
            return (outputs.loss, outputs) if return_outputs else outputs.loss

        site = EmbeddingSite(self.accelerator.unwrap_model(model))
        with site.capture():
            outputs = model(**inputs)
        if site.output is None:
            raise RuntimeError("the model never called its embeddings module")
        model_inputs = {k: v for k, v in inputs.items() if k not in LABEL_KEYS}
        mask = embedding_mask(inputs.get("attention_mask"), site.output)

        # The perturbed passes call the module inside the engine or DDP wrapper: its
        # parameter gradients still reach the wrapper's per-parameter hooks in the Trainer's
        # one backward. Through the wrapper they would break both: DeepSpeed's engine hooks
        # every output of its forward so that a backward through it starts and ends a ZeRO
        # reduction, which the δ-only ascent gradient would run with no gradients staged
        # (IndexError in ZeRO-2); DDP (several processes without DeepSpeed) searches each
        # forward's graph for unused parameters and then marks them ready twice. The free
        # direction without DeepSpeed is the exception: its term's backward comes after the
        # clean one has run DDP's reduction, and only a forward through the wrapper re-arms
        # DDP so that it averages that backward's gradients over the processes too.
        deepspeed = getattr(self, "is_deepspeed_enabled", False)
        perturbed_model = (model if cfg.direction == "free" and not deepspeed
                           else self.accelerator.unwrap_model(model))

        batch = site.output.shape[0]
        examples = next(v.shape[0] for v in model_inputs.values()
                        if isinstance(v, torch.Tensor) and v.dim() > 0)

        def forward_fn(perturbed: torch.Tensor) -> Logits:
            inputs_now, mask_now = model_inputs, mask
            if perturbed.shape[0] < batch:  # AlumConfig.fraction: the first examples only
                n = perturbed.shape[0] * examples // batch
                inputs_now = {k: v[:n] if isinstance(v, torch.Tensor) and v.dim() > 0
                              and v.shape[0] == examples else v for k, v in model_inputs.items()}
                mask_now = None if mask is None else mask[:perturbed.shape[0]]
            with site.inject(perturbed):
                return head_logits(perturbed_model(**inputs_now), mask_now)

        # The free direction takes δ from the task loss's gradient at the embedding output:
        # the clean backward runs now, before the perturbed pass, and the term then sends
        # gradient into the perturbed branch only (docs/algorithm.md, "Cheaper variants").
        task_grad = self._clean_backward(outputs.loss, site.output) \
            if cfg.direction == "free" else None
        adv, stats = adversarial_loss(forward_fn, site.output, head_logits(outputs, mask), cfg,
                                      mask=mask, task_grad=task_grad,
                                      loss_scale=self._loss_scale(),
                                      update=adv_project_dispatch.adv_project)
        self.adv_steps += 1
        if stats.skipped:
            self.adv_skipped += 1
        else:
            for key, value in stats.to_dict().items():
                if key != "skipped":
                    self._adv_window[key].append(value)
        clean_loss = outputs.loss.detach() if task_grad is not None else outputs.loss
        loss = clean_loss + adv.to(outputs.loss.dtype)
        if not loss.requires_grad:  # free, term skipped: the Trainer's backward has nothing to do
            loss = loss.detach().requires_grad_(True)
        return (loss, outputs) if return_outputs else loss

    def _clean_backward(self, loss: torch.Tensor, embeds: torch.Tensor) -> torch.Tensor:
        """Back-propagates the clean task loss now (scaled as ``training_step`` scales the
        loss it returns) and returns its gradient at the embedding output: the free
        direction's δ comes from it, at no extra pass."""
        if not embeds.requires_grad:
            raise ValueError("AlumConfig.direction='free' needs the task loss's gradient at "
                             "the embedding output, but the embeddings are frozen")
        seen: Dict[str, torch.Tensor] = {}
        handle = embeds.register_hook(lambda g: seen.setdefault("grad", g.detach()))
        scaled = loss / self.current_gradient_accumulation_steps
        try:
            if getattr(self, "is_deepspeed_enabled", False):
                # accelerate's DeepSpeed backward steps the engine at every sync: this
                # backward is one more micro-step of the same optimizer step, so it runs
                # off the accumulation boundary and steps nothing; the Trainer's backward
                # of the term then closes the step (scaled as the Trainer scales it).
                engine = self.accelerator.deepspeed_engine_wrapped.engine
                engine.set_gradient_accumulation_boundary(is_boundary=False)
                engine.backward(scaled, scale_wrt_gas=False)
            else:
                self.accelerator.backward(scaled)
        finally:
            handle.remove()
        return seen["grad"]

    def _loss_scale(self) -> float:
        """The fp16 grad scaler's current scale, so the inner gradient does not underflow
        (the reference code ran it outside the scaler: docs/algorithm.md, "Known faults of
        the reference code"); 1 without fp16."""
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return 1.0
        return float(scaler.get_scale())

    def _adv_window_over_processes(self) -> Tuple[Dict[str, float], int]:
        """Each statistic's mean since the last log over every process's micro-batches, and
        the adversarial terms skipped so far on all of them. Every process logs at the
        same steps (the Trainer gathers the loss for it), so the sums are reduced here."""
        keys = ADV_STAT_KEYS
        sums = [float(sum(self._adv_window.get(k, ()))) for k in keys]
        counts = [float(len(self._adv_window.get(k, ()))) for k in keys]
        totals = torch.tensor(sums + counts + [float(self.adv_skipped)], dtype=torch.float64)
        if self.args.world_size > 1:
            totals = self.accelerator.reduce(totals.to(self.args.device), "sum").cpu()
        n = len(keys)
        means = {k: float(totals[i] / totals[n + i]) for i, k in enumerate(keys)
                 if totals[n + i] > 0}
        return means, int(totals[2 * n])

    def log(self, logs: Dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the adversarial statistics, averaged since the last log, to training logs."""
        # Training logs carry "loss"; the closing one ("train_runtime") flushes the rest.
        if ("loss" in logs or "train_runtime" in logs) and self.alum_config is not None:
            means, skipped = self._adv_window_over_processes()
            logs.update({f"adv_{key}": round(value, 6) for key, value in means.items()})
            logs["adv_skipped"] = skipped
            self._adv_window.clear()
        super().log(logs, *args, **kwargs)
