"""The ``ModelConfig`` a pre-training run builds: a named size, the run's overrides, its tokenizer.

One derivation, used where a run's model is built (``alum.pretrain.model_builder``)
and where a run's checkpoint is read without a recorded ``model_config``
(alum-convert rebuilds the architecture from the run's saved choices).
"""
from __future__ import annotations

from .config import ModelConfig


def megatron_model_config(choice, vocab_size: int, pad_token_id: int,
                          seq_length: int) -> ModelConfig:
    """The ModelConfig of ``choice`` for a tokenizer of ``vocab_size`` tokens (pad id
    ``pad_token_id``) and sequences of ``seq_length`` tokens.

    ``choice``: the run's model choice, anything with the attributes ``model_size``,
    ``family``, ``hidden_size``, ``num_layers`` (None: the named size's), ``dropout``
    and ``init_seed`` (``alum.pretrain.config.ModelChoice``, or its saved record).
    """
    overrides: dict = dict(vocab_size=vocab_size, pad_token_id=pad_token_id,
                           hidden_dropout=choice.dropout, attention_dropout=choice.dropout,
                           init_seed=choice.init_seed)
    if choice.hidden_size is not None:
        overrides["hidden_size"] = choice.hidden_size
    if choice.num_layers is not None:
        overrides["num_layers"] = choice.num_layers
    offset = pad_token_id + 1 if choice.family == "roberta" else 0
    # Short runs use short position tables: fewer parameters, same model otherwise.
    overrides["max_position_embeddings"] = max(seq_length + offset, 8)
    if choice.family == "roberta":
        overrides["type_vocab_size"] = 1
    config = ModelConfig.named(choice.model_size, family=choice.family, **overrides)
    if config.hidden_size % config.num_attention_heads:
        raise ValueError(f"ModelChoice.hidden_size={config.hidden_size} is not divisible by "
                         f"the {config.num_attention_heads} heads of size {choice.model_size!r}")
    if choice.hidden_size is not None:
        config = config.replace(ffn_hidden_size=4 * config.hidden_size)
    return config
