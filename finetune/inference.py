"""Batched prediction for every head type, clean or under the embedding attack.

The Trainer's own ``predict`` pads and concatenates outputs across batches and cannot
run an attack inside its loop; evaluation of QA (which needs per-window logits of
varying length) and the robustness command both use this loop instead.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from .embedding_attack import AttackConfig, attacked_outputs
from .trainer import embedding_mask, head_logits


def predict(model: torch.nn.Module, dataset: Any, collator: Any, batch_size: int = 32,
            attack: Optional[AttackConfig] = None,
            device: Optional[torch.device] = None,
            loss_fn: Optional[Callable[..., torch.Tensor]] = None) -> Dict[str, Any]:
    """Logits for every row of ``dataset``.

    Returns ``{"logits": [N, C] array}`` for classification and multiple choice, and
    ``{"start_logits": [...], "end_logits": [...]}`` (one array per feature, trimmed to
    its length) for span QA. With ``attack``, the dataset must hold the gold targets;
    ``loss_fn(outputs, batch, mask)`` replaces the attack's default task loss.
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    out: Dict[str, List] = {}
    try:
        for begin in range(0, len(dataset), batch_size):
            rows = [dataset[i] for i in range(begin, min(begin + batch_size, len(dataset)))]
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v
                     for k, v in collator(rows).items()}
            if attack is None:
                inputs = {k: v for k, v in batch.items()
                          if k not in ("labels", "start_positions", "end_positions")}
                with torch.no_grad():
                    outputs = model(**inputs)
            else:
                outputs = attacked_outputs(model, batch, attack,
                                           **({"loss_fn": loss_fn} if loss_fn else {}))
            _collect(out, outputs, batch, rows)
    finally:
        model.train(was_training)
    if "logits" in out:
        return {"logits": np.concatenate(out["logits"], axis=0)}
    return out


def _collect(out: Dict[str, List], outputs: Any, batch: Dict[str, Any],
             rows: List[Dict[str, Any]]) -> None:
    if getattr(outputs, "start_logits", None) is None:
        out.setdefault("logits", []).append(outputs.logits.detach().float().cpu().numpy())
        return
    mask = batch.get("attention_mask")
    start, end = head_logits(outputs, embedding_mask(mask, outputs.start_logits.unsqueeze(-1))
                             if mask is not None else None)
    start, end = start.detach().float().cpu().numpy(), end.detach().float().cpu().numpy()
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        out.setdefault("start_logits", []).append(start[i, :n])
        out.setdefault("end_logits", []).append(end[i, :n])
