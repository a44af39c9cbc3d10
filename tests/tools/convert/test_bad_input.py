"""Bad input: clear errors naming the file or field, and nothing at the destination."""
import json
import os

import pytest

from alum.tools.convert.cli import main
from alum.tools.convert.errors import ConvertError
from alum.tools.convert.from_hf import from_hf
from alum.tools.convert.reshape import reshape
from alum.tools.convert.to_hf import to_hf

from .conftest import leftovers


@pytest.fixture
def ours(hf_dir, tmp_path):
    """Our checkpoint at TP=2 x PP=2 (from a random HF BERT)."""
    src, _ = hf_dir("bert")
    path = tmp_path / "ours"
    from_hf(src, str(path), tp=2, pp=2)
    return path


def tag_dir(path):
    return path / "checkpoints" / "global_step0"


def fails(call, *fragments, dst=None):
    with pytest.raises(ConvertError) as info:
        call()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    if dst is not None:
        assert not os.path.exists(dst) and not leftovers(dst)
    return message


def test_missing_shard_is_named(ours, tmp_path):
    dst = tmp_path / "hf"
    os.remove(tag_dir(ours) / "mp_rank_03_model_states.pt")
    fails(lambda: to_hf(str(ours), str(dst)), "mp_rank_03_model_states.pt", "missing", dst=dst)
    # Without the completeness marker the layout check names it too.
    os.remove(tag_dir(ours) / "alum_complete.json")
    fails(lambda: to_hf(str(tag_dir(ours)), str(dst)), "missing shard",
          "mp_rank_03_model_states.pt", dst=dst)


def test_mismatched_tensor_parallel_size(ours, tmp_path):
    dst = tmp_path / "hf"
    config = json.loads((ours / "config.json").read_text())
    config["parallel"]["tensor_parallel_size"] = 1
    (ours / "config.json").write_text(json.dumps(config))
    fails(lambda: to_hf(str(ours), str(dst)), "mismatched tensor_parallel_size",
          "mp_rank_00_model_states.pt", dst=dst)


def test_unsupported_architectures(tmp_path, hf_dir):
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = tmp_path / "gpt2"
    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=100)).save_pretrained(gpt)
    dst = tmp_path / "out"
    fails(lambda: from_hf(str(gpt), str(dst)), "model_type='gpt2'", "not supported", dst=dst)
    relu, _ = hf_dir("bert", name="relu", hidden_act="relu")
    fails(lambda: from_hf(relu, str(dst)), "hidden_act='relu'", dst=dst)
    assert main(["from-hf", str(gpt), str(dst)]) == 2


def test_sizes_that_do_not_divide(hf_dir, ours, tmp_path):
    src, _ = hf_dir("bert")                      # 2 heads, 2 layers
    dst = tmp_path / "out"
    fails(lambda: from_hf(src, str(dst), tp=3), "num_attention_heads=2",
          "tensor_parallel_size=3", dst=dst)
    fails(lambda: reshape(str(ours), str(dst), tp=1, pp=3), "num_layers=2", dst=dst)
    # A vocabulary padded for another TP size than the files hold.
    config = json.loads((ours / "config.json").read_text())
    config["model_config"]["make_vocab_size_divisible_by"] = 100
    (ours / "config.json").write_text(json.dumps(config))
    fails(lambda: to_hf(str(ours), str(dst)), "mp_rank_00_model_states.pt",
          "embeddings.word_embeddings.embedding.weight", "make_vocab_size_divisible_by=100",
          dst=dst)


def test_failure_half_way_leaves_nothing(hf_dir, tmp_path):
    """The second layer's tensor is bad: stage 0's files were already written, then removed."""
    import torch
    from safetensors.torch import load_file, save_file

    src, _ = hf_dir("bert")
    weights = load_file(os.path.join(src, "model.safetensors"))
    weights["bert.encoder.layer.1.output.dense.weight"] = torch.zeros(3, 3)
    save_file(weights, os.path.join(src, "model.safetensors"), metadata={"format": "pt"})
    dst = tmp_path / "ours"
    fails(lambda: from_hf(src, str(dst), pp=2), "bert.encoder.layer.1.output.dense.weight",
          "[3, 3]", dst=dst)


def test_existing_destination_needs_overwrite(ours, tmp_path, capsys):
    dst = tmp_path / "hf"
    dst.mkdir()
    (dst / "keep").write_text("x")
    assert main(["to-hf", str(ours), str(dst)]) == 2
    assert "exists" in capsys.readouterr().err and (dst / "keep").exists()
    assert main(["to-hf", str(ours), str(dst), "--overwrite"]) == 0
    assert not (dst / "keep").exists() and (dst / "model.safetensors").exists()
    assert not leftovers(dst)


def test_unknown_weights_are_not_dropped_silently(hf_dir, tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    src, _ = hf_dir("bert")
    weights = load_file(os.path.join(src, "model.safetensors"))
    weights["bert.encoder.layer.0.adapter.weight"] = torch.zeros(2)
    save_file(weights, os.path.join(src, "model.safetensors"), metadata={"format": "pt"})
    fails(lambda: from_hf(src, str(tmp_path / "x")), "bert.encoder.layer.0.adapter.weight",
          dst=tmp_path / "x")
