"""Batching MLM samples: stack equal-length samples, pad unequal ones."""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import torch

from .masking import IGNORE_INDEX

#: padding value per key (input_ids uses the tokenizer's pad id instead).
_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "labels": IGNORE_INDEX, "loss_mask": 0.0}


class MLMCollator:
    """Collates dicts of 1-D tensors (and scalar ``dataset_id``) into a batch.

    Samples of equal length are stacked as they are; otherwise each key is padded
    on the right to the longest sample (rounded up to ``pad_to_multiple_of``):
    ``input_ids`` with ``pad_token_id``, ``labels`` with -100, the masks with 0.

    Args:
        pad_token_id: the tokenizer's pad id (``MLMVocab.pad``).
        pad_to_multiple_of: round the padded length up to a multiple of this.
    """

    def __init__(self, pad_token_id: int = 0, pad_to_multiple_of: Optional[int] = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, samples: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        out: Dict[str, torch.Tensor] = {}
        for key in samples[0]:
            values: List[torch.Tensor] = [torch.as_tensor(s[key]) for s in samples]
            if values[0].dim() == 0:
                out[key] = torch.stack(values)
                continue
            length = max(v.shape[0] for v in values)
            if self.pad_to_multiple_of:
                m = int(self.pad_to_multiple_of)
                length = (length + m - 1) // m * m
            if all(v.shape[0] == length for v in values):
                out[key] = torch.stack(values)
                continue
            fill = self.pad_token_id if key == "input_ids" else _PAD_VALUES.get(key, 0)
            batch = torch.full((len(values), length), fill, dtype=values[0].dtype)
            for i, v in enumerate(values):
                batch[i, :v.shape[0]] = v
            out[key] = batch
        return out


def mlm_collate(samples: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stacks samples padded to the same length (the datasets' default output)."""
    return {key: torch.stack([torch.as_tensor(s[key]) for s in samples]) for key in samples[0]}
