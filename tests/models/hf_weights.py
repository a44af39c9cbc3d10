"""Copy a TP=1 ``BertMLM``'s weights into a Hugging Face BertForMaskedLM / RobertaForMaskedLM.

A test helper proving the layouts match (the checkpoint-conversion tool builds on
it). Differences it handles: our fused QKV is in megatron's per-head layout
``[heads, (q, k, v), head_dim]``; our vocabulary is padded Megatron-style (HF
takes the first ``vocab_size`` rows); our LayerNorm/linear names differ.
"""
from __future__ import annotations

from typing import Dict

import torch


def hf_config(cfg):
    """The HF config of the same architecture (eager attention, same dropouts)."""
    from transformers import BertConfig, RobertaConfig

    cls = BertConfig if cfg.family == "bert" else RobertaConfig
    return cls(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
               num_hidden_layers=cfg.num_layers, num_attention_heads=cfg.num_attention_heads,
               intermediate_size=cfg.ffn_hidden_size, hidden_act="gelu",
               max_position_embeddings=cfg.max_position_embeddings,
               type_vocab_size=cfg.type_vocab_size, pad_token_id=cfg.pad_token_id,
               layer_norm_eps=cfg.layer_norm_eps, hidden_dropout_prob=cfg.hidden_dropout,
               attention_probs_dropout_prob=cfg.attention_dropout,
               initializer_range=cfg.init_std, attn_implementation="eager")


def to_hf_state_dict(model) -> Dict[str, torch.Tensor]:
    """Our (TP=1, PP=1) state dict under HF's names."""
    cfg = model.config
    sd = {k: v.detach().clone() for k, v in model.state_dict().items() if v is not None}
    base = "bert" if cfg.family == "bert" else "roberta"
    head = "cls.predictions.transform." if cfg.family == "bert" else "lm_head."
    head_norm = "LayerNorm" if cfg.family == "bert" else "layer_norm"
    bias_key = "cls.predictions.bias" if cfg.family == "bert" else "lm_head.bias"
    decoder = "cls.predictions.decoder" if cfg.family == "bert" else "lm_head.decoder"
    V, h, nh, d = cfg.vocab_size, cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    out = {}
    word = sd["embeddings.word_embeddings.embedding.weight"][:V]
    out[f"{base}.embeddings.word_embeddings.weight"] = word
    out[f"{decoder}.weight"] = word
    for name in ("position_embeddings", "token_type_embeddings"):
        out[f"{base}.embeddings.{name}.weight"] = sd[f"embeddings.{name}.weight"]
    for p in ("weight", "bias"):
        out[f"{base}.embeddings.LayerNorm.{p}"] = sd[f"embeddings.layer_norm.{p}"]
    for i in range(cfg.num_layers):
        ours, theirs = f"layers.{i}.", f"{base}.encoder.layer.{i}."
        w = sd[ours + "attention.qkv.linear.weight"].view(nh, 3, d, h)
        b = sd[ours + "attention.qkv.linear.bias"].view(nh, 3, d)
        for j, name in enumerate(("query", "key", "value")):
            out[theirs + f"attention.self.{name}.weight"] = w[:, j].reshape(h, h)
            out[theirs + f"attention.self.{name}.bias"] = b[:, j].reshape(h)
        pairs = {"attention.out.linear": "attention.output.dense",
                 "attention_norm": "attention.output.LayerNorm",
                 "ffn_in.linear": "intermediate.dense",
                 "ffn_out.linear": "output.dense",
                 "ffn_norm": "output.LayerNorm"}
        for a, t in pairs.items():
            for p in ("weight", "bias"):
                out[theirs + f"{t}.{p}"] = sd[ours + f"{a}.{p}"]
    for p in ("weight", "bias"):
        out[f"{head}dense.{p}"] = sd[f"head.dense.{p}"]
        out[f"{head}{head_norm}.{p}"] = sd[f"head.layer_norm.{p}"]
    bias = sd["head.decoder.linear.bias"][:V]
    out[bias_key] = bias
    out[f"{decoder}.bias"] = bias
    return out


def hf_model_like(model):
    """A transformers MLM model holding exactly ``model``'s weights (eval mode)."""
    from transformers import BertForMaskedLM, RobertaForMaskedLM

    cfg = model.config
    cls = BertForMaskedLM if cfg.family == "bert" else RobertaForMaskedLM
    hf = cls(hf_config(cfg))
    hf_sd = to_hf_state_dict(model)
    missing, unexpected = hf.load_state_dict(hf_sd, strict=False)
    missing = [k for k in missing if "position_ids" not in k]
    assert not missing and not unexpected, (missing, unexpected)
    return hf.eval()
