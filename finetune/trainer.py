"""ALUM fine-tuning as a Hugging Face ``Trainer``: the task loss plus α·D_sym (ALUM.md).

Only ``compute_loss`` changes. The clean pass records the embedding output
(``EmbeddingSite``), ``alum.adversarial_loss`` runs the ascent on δ and the
final perturbed pass, and the sum is returned to the Trainer, which does the
rest: optimizer, schedule, gradient accumulation, mixed precision, DeepSpeed,
evaluation, checkpoints and logging.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Dict, Optional

import torch
from transformers import Trainer

from alum import AlumConfig, adversarial_loss

from .embedding_site import EmbeddingSite


class AlumTrainer(Trainer):
    """``transformers.Trainer`` whose training loss carries ALUM's adversarial term.

    ``alum_config=None`` (or α = 0) trains the standard objective. The curriculum's
    ``start_step`` is compared with the Trainer's optimizer step count.
    """

    # compute_loss returns a per-batch mean: the Trainer divides by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, alum_config: Optional[AlumConfig] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.alum_config = alum_config
        self.adv_skipped = 0
        """Steps whose adversarial term was dropped for a NaN/Inf gradient (ALUM.md)."""
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
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}

        def forward_fn(perturbed: torch.Tensor) -> torch.Tensor:
            with site.inject(perturbed):
                return model(**model_inputs).logits

        adv, stats = adversarial_loss(forward_fn, site.output, outputs.logits, cfg,
                                      mask=inputs.get("attention_mask"),
                                      loss_scale=self._loss_scale())
        self.adv_steps += 1
        if stats.skipped:
            self.adv_skipped += 1
        else:
            for key, value in stats.to_dict().items():
                if key != "skipped":
                    self._adv_window[key].append(value)
        loss = outputs.loss + adv.to(outputs.loss.dtype)
        return (loss, outputs) if return_outputs else loss

    def _loss_scale(self) -> float:
        """The fp16 grad scaler's current scale, so the inner gradient does not underflow
        (ALUM.md: the reference code ran it outside the scaler); 1 without fp16."""
        scaler = getattr(self.accelerator, "scaler", None)
        if scaler is None or not scaler.is_enabled():
            return 1.0
        return float(scaler.get_scale())

    def log(self, logs: Dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Adds the adversarial statistics, averaged since the last log, to training logs."""
        # Training logs carry "loss"; the closing one ("train_runtime") flushes the rest.
        if ("loss" in logs or "train_runtime" in logs) and self.alum_config is not None:
            for key, values in self._adv_window.items():
                if values:
                    logs[f"adv_{key}"] = round(sum(values) / len(values), 6)
            logs["adv_skipped"] = self.adv_skipped
            self._adv_window.clear()
        super().log(logs, *args, **kwargs)

