"""A Hugging Face masked LM behind the interface the pre-training loop codes against.

The loop (alum.pretrain.trainer) needs four methods, which alum.models.BertMLM has:

* ``embed(input_ids, token_type_ids=None, position_ids=None)`` -> the embedding output
  (word + position + type embeddings, LayerNorm, dropout): where ALUM adds δ;
* ``forward_from_embeddings(embedding_output, attention_mask, rows=None)`` -> MLM logits
  (at the ``rows`` positions only, when given);
* ``forward(input_ids, attention_mask, token_type_ids=None)`` -> logits, equal to the
  two above composed (so δ = 0 gives exactly the clean pass);
* ``mlm_loss(logits, labels)`` -> mean cross entropy over labels != -100;

and optionally ``embedding_mask(attention_mask)``: the padding mask in the embedding
output's leading dimensions (see alum.pretrain.mlm_step.embedding_mask).

``HFMaskedLMAdapter`` gives these to a ``BertForMaskedLM`` / ``RobertaForMaskedLM``
(continual pre-training of a released model at TP=1). The embedding output is fed to
the encoder directly, never back through ``inputs_embeds`` (that would add the
position/type embeddings and LayerNorm a second time, so the perturbed input would
not be the embedding output that ALUM perturbs).
"""
from __future__ import annotations

import os
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn


class HFMaskedLMAdapter(nn.Module):
    """Wraps an HF ``*ForMaskedLM`` whose base model has ``embeddings`` and ``encoder``."""

    def __init__(self, mlm_model: nn.Module):
        super().__init__()
        base_name = getattr(mlm_model, "base_model_prefix", "bert")
        base = getattr(mlm_model, base_name, None)
        if base is None or not hasattr(base, "embeddings") or not hasattr(base, "encoder"):
            raise ValueError(f"{type(mlm_model).__name__} has no BERT-style base model "
                             f"(.{base_name}.embeddings / .encoder)")
        self.mlm_model = mlm_model
        self.base_name = base_name
        self.config = mlm_model.config

    @property
    def base(self) -> nn.Module:
        return getattr(self.mlm_model, self.base_name)

    def head(self) -> nn.Module:
        """The MLM head (``cls`` for BERT, ``lm_head`` for RoBERTa)."""
        for name in ("cls", "lm_head"):
            module = getattr(self.mlm_model, name, None)
            if module is not None:
                return module
        raise ValueError(f"{type(self.mlm_model).__name__} has no MLM head (cls / lm_head)")

    def freeze_encoder(self) -> int:
        """Freezes every parameter outside the MLM head (a decoder tied to the word
        embeddings stays frozen with them); the number of parameters left trainable."""
        head = {id(p) for p in self.head().parameters()}
        frozen = {id(p) for p in self.base.parameters()}
        trainable = 0
        for p in self.mlm_model.parameters():
            if id(p) in frozen or id(p) not in head:
                p.requires_grad_(False)
            else:
                trainable += p.numel()
        if trainable == 0:
            raise ValueError(f"{type(self.mlm_model).__name__}: freezing the encoder leaves "
                             f"no trainable parameter in the MLM head")
        return trainable

    def embed(self, input_ids: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None,
              position_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Embedding output ``[b, s, h]`` after LayerNorm and dropout."""
        if token_type_ids is not None and getattr(self.config, "type_vocab_size", 1) <= 1:
            token_type_ids = torch.zeros_like(token_type_ids)
        return self.base.embeddings(input_ids=input_ids, token_type_ids=token_type_ids,
                                    position_ids=position_ids)

    def forward_from_embeddings(self, embedding_output: torch.Tensor,
                                attention_mask: torch.Tensor,
                                rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Encoder and MLM head from the (possibly perturbed) embedding output; the head
        only at ``rows`` (``[b, s]`` bool, giving ``[n, V]`` = ``logits[rows]``) if given."""
        keep = attention_mask[:, None, None, :].to(embedding_output.dtype)
        additive = (1.0 - keep) * torch.finfo(embedding_output.dtype).min
        hidden = self.base.encoder(embedding_output, attention_mask=additive)
        hidden = hidden[0] if isinstance(hidden, (tuple, list)) else hidden.last_hidden_state
        return self.head()(hidden if rows is None else hidden[rows])

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: Optional[torch.Tensor] = None,
                rows: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.forward_from_embeddings(self.embed(input_ids, token_type_ids),
                                            attention_mask, rows)

    def mlm_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy (fp32) over the predicted positions; 0 when there are none."""
        selected = labels.ne(-100)
        if not bool(selected.any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits[selected].float(), labels[selected])

    def embedding_mask(self, attention_mask: torch.Tensor) -> torch.Tensor:
        """The padding mask over the embedding output's ``[b, s]`` leading dimensions."""
        return attention_mask

    def enable_activation_checkpointing(self) -> None:
        self.mlm_model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False})

    def save_pretrained(self, directory: str) -> None:
        """Writes the wrapped model in HF format (loadable with ``from_pretrained``)."""
        os.makedirs(directory, exist_ok=True)
        self.mlm_model.save_pretrained(directory)


def load_hf_masked_lm(path: str, dropout: Optional[float] = None) -> HFMaskedLMAdapter:
    """A local HF model as a masked LM; a checkpoint without an MLM head gets a new one.

    Nothing is downloaded (``local_files_only``). Sentence-embedding checkpoints such
    as all-MiniLM ship only the encoder: the head is then initialised (its decoder tied
    to the word embeddings), which is what continual pre-training needs.
    """
    from transformers import AutoConfig, AutoModelForMaskedLM

    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if dropout is not None:
        config.hidden_dropout_prob = dropout
        config.attention_probs_dropout_prob = dropout
    model = AutoModelForMaskedLM.from_pretrained(path, config=config, local_files_only=True)
    return HFMaskedLMAdapter(model)


def tiny_hf_bert(vocab_size: int, hidden_size: int = 64, num_layers: int = 2,
                 num_heads: int = 2, max_positions: int = 128, dropout: float = 0.0,
                 seed: int = 0) -> HFMaskedLMAdapter:
    """A randomly initialised small ``BertForMaskedLM`` (tests, smoke runs)."""
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden_size,
                        num_hidden_layers=num_layers, num_attention_heads=num_heads,
                        intermediate_size=4 * hidden_size, max_position_embeddings=max_positions,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BertForMaskedLM(config)
    return HFMaskedLMAdapter(model)
