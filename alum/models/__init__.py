"""BERT/RoBERTa masked-LM models built from a layer spec (docs/model.md)."""
from .bert import BertMLM, extended_attention_mask, roberta_position_ids, sdpa_attention_mask
from .config import FAMILIES, NAMED_SIZES, ModelConfig
from .spec import ModelSpec

__all__ = ["BertMLM", "ModelConfig", "ModelSpec", "FAMILIES", "NAMED_SIZES",
           "extended_attention_mask", "roberta_position_ids", "sdpa_attention_mask"]
