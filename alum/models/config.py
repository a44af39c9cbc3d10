"""``ModelConfig``: the architecture of the BERT / RoBERTa MLM models, with named sizes.

The fields follow Hugging Face's ``BertConfig`` / ``RobertaConfig`` so that a
checkpoint converts field by field. Parallel sizes live in
``alum.parallel.ParallelConfig``; the only parallel-aware piece here is the
Megatron-style vocabulary padding (``padded_vocab_size``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict

from alum.config_base import ConfigMixin

FAMILIES = ("bert", "roberta")

# Named sizes: (hidden, layers, heads, ffn). base/large are the published
# BERT/RoBERTa sizes; small is Turc et al.'s BERT-Small (4 layers, 512 hidden);
# tiny is for CI.
NAMED_SIZES: Dict[str, Dict[str, int]] = {
    "tiny": dict(hidden_size=64, num_layers=2, num_attention_heads=2, ffn_hidden_size=256),
    "small": dict(hidden_size=512, num_layers=4, num_attention_heads=8, ffn_hidden_size=2048),
    "base": dict(hidden_size=768, num_layers=12, num_attention_heads=12, ffn_hidden_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_attention_heads=16, ffn_hidden_size=4096),
}

# Family defaults, as in HF's bert-base-uncased and roberta-base configs.
FAMILY_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "bert": dict(vocab_size=30522, type_vocab_size=2, pad_token_id=0,
                 max_position_embeddings=512, layer_norm_eps=1e-12),
    "roberta": dict(vocab_size=50265, type_vocab_size=1, pad_token_id=1,
                    max_position_embeddings=514, layer_norm_eps=1e-5),
}


@dataclass
class ModelConfig(ConfigMixin):
    """Architecture of a post-LN BERT/RoBERTa encoder with its tied MLM head."""

    family: str = "bert"
    """"bert" (token types, positions 0..s-1) or "roberta" (one token type, positions
    counted from ``pad_token_id + 1`` over non-pad tokens, as HF's
    ``create_position_ids_from_input_ids``)."""
    vocab_size: int = 30522
    """Tokenizer vocabulary size (unpadded). BERT WordPiece 30522, RoBERTa BPE 50265."""
    hidden_size: int = 768
    """Width of the embeddings and of every layer's residual stream."""
    num_layers: int = 12
    """Number of transformer layers."""
    num_attention_heads: int = 12
    """Attention heads per layer; must divide ``hidden_size``."""
    ffn_hidden_size: int = 3072
    """Inner width of each layer's MLP (HF ``intermediate_size``)."""
    max_position_embeddings: int = 512
    """Rows of the learned position embedding (RoBERTa: 514 = 512 + pad + 1)."""
    type_vocab_size: int = 2
    """Token-type (segment) vocabulary; 2 for BERT, 1 for RoBERTa."""
    pad_token_id: int = 0
    """Padding token id: 0 for BERT, 1 for RoBERTa (also RoBERTa's position offset)."""
    layer_norm_eps: float = 1e-12
    """LayerNorm epsilon: 1e-12 in HF BERT, 1e-5 in RoBERTa."""
    hidden_dropout: float = 0.1
    """Dropout on the embedding output and on each sub-layer output before the residual."""
    attention_dropout: float = 0.1
    """Dropout on the attention probabilities."""
    init_std: float = 0.02
    """Std of the normal initialisation of every weight matrix (HF ``initializer_range``)."""
    init_seed: int = 1234
    """Seed of the weight initialisation. Each block (embeddings, layer i, head) is
    initialised from its own seed derived from this one, so any tensor/pipeline split
    builds slices of the same full weights."""
    make_vocab_size_divisible_by: int = 128
    """Megatron-style padding: the vocabulary is padded to a multiple of this times the
    tensor-parallel size (``padded_vocab_size``). Padded logits are masked out."""

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ValueError:
            return ValueError(f"ModelConfig.{field}={getattr(self, field)!r}: {why}")

        if self.family not in FAMILIES:
            raise bad("family", f"must be one of {FAMILIES}")
        for field in ("vocab_size", "hidden_size", "num_layers", "num_attention_heads",
                      "ffn_hidden_size", "max_position_embeddings", "type_vocab_size",
                      "make_vocab_size_divisible_by"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise bad(field, "must be a positive integer")
        if self.hidden_size % self.num_attention_heads != 0:
            raise bad("num_attention_heads",
                      f"must divide hidden_size={self.hidden_size}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise bad("pad_token_id", f"must lie in [0, vocab_size={self.vocab_size})")
        for field in ("hidden_dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, field) < 1.0:
                raise bad(field, "must lie in [0, 1)")
        if not self.layer_norm_eps > 0:
            raise bad("layer_norm_eps", "must be > 0")
        if not self.init_std > 0:
            raise bad("init_std", "must be > 0")
        if self.family == "roberta":
            if self.type_vocab_size != 1:
                raise bad("type_vocab_size", "RoBERTa has a single token type (1)")
            if self.max_position_embeddings < self.pad_token_id + 2:
                raise bad("max_position_embeddings",
                          f"RoBERTa positions start at pad_token_id+1={self.pad_token_id + 1}")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads

    @property
    def max_sequence_length(self) -> int:
        """Longest input the position embedding covers (RoBERTa loses pad+1 rows)."""
        if self.family == "roberta":
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    def padded_vocab_size(self, tensor_parallel_size: int = 1) -> int:
        """Vocabulary padded to a multiple of ``make_vocab_size_divisible_by * tp``.

        Megatron-LM's ``_vocab_size_with_padding``: every TP rank then holds an equal,
        aligned slice of the embedding and of the logits.
        """
        multiple = self.make_vocab_size_divisible_by * tensor_parallel_size
        return -(-self.vocab_size // multiple) * multiple

    @classmethod
    def named(cls, name: str, family: str = "bert", **overrides: Any) -> "ModelConfig":
        """A named size (tiny, small, base, large) of a family, with optional overrides."""
        if name not in NAMED_SIZES:
            raise ValueError(f"unknown model size {name!r}; choose from {sorted(NAMED_SIZES)}")
        if family not in FAMILY_DEFAULTS:
            raise ValueError(f"unknown model family {family!r}; choose from {FAMILIES}")
        fields = dict(family=family, **FAMILY_DEFAULTS[family], **NAMED_SIZES[name])
        fields.update(overrides)
        return cls(**fields)
