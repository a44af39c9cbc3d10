"""Where ALUM perturbs a Hugging Face encoder: the output of its embeddings module.

δ must be added after word + position + type embeddings, their LayerNorm and
dropout (docs/algorithm.md). The authors' fine-tuning code instead fed normalised
embeddings back in as ``inputs_embeds``, so HF added position/type embeddings
and LayerNorm a second time and the perturbed branch differed from the clean
one even at δ = 0. Here the clean pass records the embedding output once, and
each perturbed pass replaces the embeddings module's result with
``embedding_output + δ`` without running the embeddings again, so with δ = 0
(dropout off) the perturbed forward equals the clean forward exactly.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Optional

import torch


def find_embeddings(model: torch.nn.Module) -> torch.nn.Module:
    """The embeddings module of a HF encoder (BERT, RoBERTa and their relatives)."""
    base = getattr(model, "base_model", model)
    emb = getattr(base, "embeddings", None)
    if not isinstance(emb, torch.nn.Module):
        raise ValueError(
            f"{type(model).__name__} has no `base_model.embeddings` module: ALUM fine-tuning "
            "supports HF encoders of the BERT/RoBERTa family")
    return emb


class EmbeddingSite:
    """Captures the embedding output of a clean pass and injects a perturbed one."""

    def __init__(self, model: torch.nn.Module):
        self.module = find_embeddings(model)
        self.output: Optional[torch.Tensor] = None

    @contextlib.contextmanager
    def capture(self) -> Iterator["EmbeddingSite"]:
        """Within the block, the embeddings module's output is kept in ``self.output``."""
        self.output = None

        def hook(_module, _inputs, output):
            self.output = output

        handle = self.module.register_forward_hook(hook)
        try:
            yield self
        finally:
            handle.remove()

    @contextlib.contextmanager
    def inject(self, embedding_output: torch.Tensor) -> Iterator[None]:
        """Within the block, the embeddings module returns ``embedding_output`` unrun.

        An instance attribute ``forward`` shadows the class's method for this module
        only; the module's parameters and any hooks stay in place.
        """
        if "forward" in vars(self.module):
            raise RuntimeError("EmbeddingSite.inject cannot be nested")

        def forward(*_args, **_kwargs):
            return embedding_output

        self.module.forward = forward
        try:
            yield
        finally:
            del self.module.forward
