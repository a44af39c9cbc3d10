"""``ParallelConfig``: how the model is split over ranks, checked against a ``ModelConfig``."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..models.config import ModelConfig


@dataclass
class ParallelConfig:
    """Tensor / sequence / pipeline parallel layout (data parallel is what is left)."""

    tensor_parallel_size: int = 1
    """Ranks that split every layer (attention heads, MLP width, vocabulary)."""
    sequence_parallel: bool = False
    """Split LayerNorm/dropout activations along the sequence over the TP ranks
    (Korthikanti et al., 2022); needs ``tensor_parallel_size > 1``."""
    pipeline_parallel_size: int = 1
    """Pipeline stages; the layers are divided evenly between them."""
    virtual_pipeline_size: Optional[int] = None
    """Model chunks per stage for megatron's interleaved schedule (None: not interleaved)."""

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"ParallelConfig.{field}={getattr(self, field)!r}: {why}")

        for field in ("tensor_parallel_size", "pipeline_parallel_size"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(field, "must be a positive integer")
        if self.sequence_parallel and self.tensor_parallel_size == 1:
            raise bad("sequence_parallel", "needs tensor_parallel_size > 1")
        if self.virtual_pipeline_size is not None:
            if self.virtual_pipeline_size < 1:
                raise bad("virtual_pipeline_size", "must be a positive integer or None")
            if self.virtual_pipeline_size > 1 and self.pipeline_parallel_size == 1:
                raise bad("virtual_pipeline_size", "needs pipeline_parallel_size > 1")

    @property
    def model_chunks(self) -> int:
        """Pipeline chunks in the whole model (stages x virtual stages)."""
        return self.pipeline_parallel_size * (self.virtual_pipeline_size or 1)

    def check_model(self, model: ModelConfig, seq_length: Optional[int] = None) -> None:
        """Raise a ValueError naming the field when ``model`` cannot be split this way."""
        tp = self.tensor_parallel_size
        if model.num_attention_heads % tp:
            raise ValueError(f"ModelConfig.num_attention_heads={model.num_attention_heads} "
                             f"is not divisible by tensor_parallel_size={tp}")
        if model.ffn_hidden_size % tp:
            raise ValueError(f"ModelConfig.ffn_hidden_size={model.ffn_hidden_size} "
                             f"is not divisible by tensor_parallel_size={tp}")
        padded = model.padded_vocab_size(tp)
        if padded % tp:  # cannot happen with the Megatron rule, kept as the invariant
            raise ValueError(f"padded vocabulary {padded} is not divisible by "
                             f"tensor_parallel_size={tp}")
        if model.num_layers % self.model_chunks:
            raise ValueError(f"ModelConfig.num_layers={model.num_layers} is not divisible by "
                             f"pipeline_parallel_size x virtual_pipeline_size="
                             f"{self.model_chunks}")
        if seq_length is not None:
            if seq_length > model.max_sequence_length:
                raise ValueError(f"seq_length={seq_length} exceeds the model's "
                                 f"{model.max_sequence_length} positions")
            if self.sequence_parallel and seq_length % tp:
                raise ValueError(f"seq_length={seq_length} is not divisible by "
                                 f"tensor_parallel_size={tp} (sequence_parallel)")

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)
