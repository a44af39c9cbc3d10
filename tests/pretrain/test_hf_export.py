"""--export-hf: the trained HF model written as a directory that from_pretrained loads."""
import os

import pytest
import torch

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.pretrain.config import CheckpointConfig, ModelChoice, PretrainConfig

from .conftest import tiny_config

RELATIVE = dict(alpha=10.0, noise_std=1e-3, step_size=0.1, epsilon=0.1, steps=1, norm="l2",
                level="token", update="project", epsilon_scale="relative")


def test_export_hf_needs_an_hf_model():
    with pytest.raises(ValueError, match=r"CheckpointConfig\.export_hf"):
        PretrainConfig(checkpoint=CheckpointConfig(export_hf="out/hf"))
    PretrainConfig(model=ModelChoice(model_kind="hf", hf_model="x"),
                   checkpoint=CheckpointConfig(export_hf="out/hf"))


@pytest.mark.parametrize("ds_config", ["zero1", "zero3"])
def test_export_hf_reloads_with_the_trained_weights(tmp_path, sample_cache, ds_config):
    import deepspeed
    from transformers import (AutoModelForMaskedLM, AutoModelForSequenceClassification,
                              AutoTokenizer)

    from alum.pretrain.hf_mlm_adapter import tiny_hf_bert

    tok = AutoTokenizer.from_pretrained(f"{sample_cache}/tokenizer")
    tiny_hf_bert(len(tok), hidden_size=32, num_layers=1,
                 max_positions=64).save_pretrained(str(tmp_path / "hf"))
    export = tmp_path / "exported"
    os.makedirs(export)  # an existing directory is replaced
    (export / "stale.txt").write_text("old")
    cfg = tiny_config(tmp_path / "out", sample_cache, steps=2, ds_config=ds_config,
                      alum=AlumConfig(start_step=0, **RELATIVE))
    cfg.model.model_kind, cfg.model.hf_model = "hf", str(tmp_path / "hf")
    cfg.checkpoint.export_hf = str(export)
    trainer = Trainer(cfg)
    summary = trainer.train()
    assert summary.export_hf == str(export)
    assert not (export / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "hf", "out"]

    module = trainer.engine.module.mlm_model
    with deepspeed.zero.GatheredParameters(list(module.parameters())):
        live = {k: v.detach().clone() for k, v in module.state_dict().items()}
    before = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).state_dict()
    mlm, info = AutoModelForMaskedLM.from_pretrained(str(export), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    reloaded = mlm.state_dict()
    assert set(reloaded) == set(live)
    for name, value in live.items():
        assert torch.equal(reloaded[name], value), name
    # Training changed the weights, so the check above compares something.
    assert not torch.equal(before["bert.embeddings.word_embeddings.weight"],
                           live["bert.embeddings.word_embeddings.weight"])

    cls, info = AutoModelForSequenceClassification.from_pretrained(
        str(export), num_labels=3, output_loading_info=True)
    # A masked LM has no pooler: a classifier built from it gets a new one and a new head.
    assert set(info["missing_keys"]) == {"classifier.weight", "classifier.bias",
                                         "bert.pooler.dense.weight", "bert.pooler.dense.bias"}
    assert torch.equal(cls.bert.encoder.layer[0].output.dense.weight,
                       live["bert.encoder.layer.0.output.dense.weight"])
    assert len(AutoTokenizer.from_pretrained(str(export))) == len(tok)
