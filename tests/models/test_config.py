"""ModelConfig / ParallelConfig: named sizes, family defaults, validation naming the field."""
import pytest

from alum.models import ModelConfig
from alum.parallel import ParallelConfig


def test_named_sizes_and_family_defaults():
    tiny = ModelConfig.named("tiny", "bert")
    assert (tiny.hidden_size, tiny.num_layers, tiny.num_attention_heads) == (64, 2, 2)
    base = ModelConfig.named("base", "roberta")
    assert (base.hidden_size, base.num_layers, base.num_attention_heads) == (768, 12, 12)
    assert (base.vocab_size, base.type_vocab_size, base.pad_token_id) == (50265, 1, 1)
    assert base.layer_norm_eps == 1e-5 and base.max_sequence_length == 512
    large = ModelConfig.named("large", "bert")
    assert (large.hidden_size, large.num_layers, large.num_attention_heads) == (1024, 24, 16)
    assert large.layer_norm_eps == 1e-12 and large.type_vocab_size == 2
    assert ModelConfig.named("small", "bert", vocab_size=1000).vocab_size == 1000


@pytest.mark.parametrize("changes, field", [
    (dict(num_attention_heads=5), "num_attention_heads"),
    (dict(family="gpt"), "family"),
    (dict(hidden_size=0), "hidden_size"),
    (dict(hidden_dropout=1.0), "hidden_dropout"),
    (dict(pad_token_id=40000), "pad_token_id"),
    (dict(layer_norm_eps=0.0), "layer_norm_eps"),
])
def test_invalid_fields_are_named(changes, field):
    with pytest.raises(ValueError, match=rf"ModelConfig\.{field}="):
        ModelConfig(**{**ModelConfig.named("tiny", "bert").to_dict(), **changes})


def test_roberta_needs_one_token_type():
    with pytest.raises(ValueError, match="type_vocab_size"):
        ModelConfig.named("tiny", "roberta", type_vocab_size=2)


def test_unknown_names():
    with pytest.raises(ValueError, match="unknown model size"):
        ModelConfig.named("huge")
    with pytest.raises(ValueError, match="unknown ModelConfig fields"):
        ModelConfig.from_dict({"hidden": 3})
    cfg = ModelConfig.named("tiny", "roberta")
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_megatron_vocab_padding():
    cfg = ModelConfig.named("base", "bert")
    assert cfg.padded_vocab_size(1) == 30592          # multiple of 128
    assert cfg.padded_vocab_size(2) == 30720          # multiple of 256
    assert cfg.padded_vocab_size(8) % (128 * 8) == 0
    assert ModelConfig.named("base", "roberta").padded_vocab_size(1) == 50304


def test_parallel_config_validation():
    with pytest.raises(ValueError, match=r"ParallelConfig\.sequence_parallel"):
        ParallelConfig(sequence_parallel=True)
    with pytest.raises(ValueError, match=r"ParallelConfig\.tensor_parallel_size"):
        ParallelConfig(tensor_parallel_size=0)
    with pytest.raises(ValueError, match=r"ParallelConfig\.virtual_pipeline_size"):
        ParallelConfig(virtual_pipeline_size=2)
    model = ModelConfig.named("tiny", "bert")                  # 2 heads, ffn 256, 2 layers
    with pytest.raises(ValueError, match="num_attention_heads"):
        ParallelConfig(tensor_parallel_size=4).check_model(model)
    with pytest.raises(ValueError, match="ffn_hidden_size"):
        ParallelConfig(tensor_parallel_size=2).check_model(model.replace(ffn_hidden_size=255))
    with pytest.raises(ValueError, match="num_layers"):
        ParallelConfig(pipeline_parallel_size=4).check_model(model)
    with pytest.raises(ValueError, match="seq_length"):
        ParallelConfig(tensor_parallel_size=2, sequence_parallel=True).check_model(model, 15)
    ParallelConfig(tensor_parallel_size=2, sequence_parallel=True,
                   pipeline_parallel_size=2).check_model(model, 16)
