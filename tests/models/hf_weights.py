"""Copy a TP=1 ``BertMLM``'s weights into a Hugging Face BertForMaskedLM / RobertaForMaskedLM.

A test helper proving the layouts match. The mapping itself is alum-convert's one
name map (``alum.models.hf_state_dict``: per-head fused QKV, vocabulary padding,
names); this file only applies it to a live model.
"""
from __future__ import annotations

from typing import Dict

import torch

from alum.models.hf_state_dict import tied_hf_names, to_hf_state_dict as canonical_to_hf
from alum.tools.convert.hf_model import hf_config_for
from alum.tools.convert.sharding import canonical_from_ranks


def hf_config(cfg):
    """The HF config of the same architecture (eager attention, same dropouts)."""
    return hf_config_for(cfg, attn_implementation="eager")


def to_hf_state_dict(model) -> Dict[str, torch.Tensor]:
    """Our (TP=1, PP=1) state dict under HF's names (tied weights once)."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if v is not None}
    canonical = {e.ours: t for e, t in canonical_from_ranks(cfg, 1, lambda rank: [sd])}
    return canonical_to_hf(canonical, cfg)


def hf_model_like(model):
    """A transformers MLM model holding exactly ``model``'s weights (eval mode)."""
    from transformers import BertForMaskedLM, RobertaForMaskedLM

    cfg = model.config
    cls = BertForMaskedLM if cfg.family == "bert" else RobertaForMaskedLM
    hf = cls(hf_config(cfg))
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    tied = tied_hf_names(cfg.family)   # the same parameters as their sources
    missing = [k for k in missing if "position_ids" not in k and k not in tied]
    assert not missing and not unexpected, (missing, unexpected)
    return hf.eval()
