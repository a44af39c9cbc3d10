"""Checkpoints written by the real training loop (one process), and continual pre-training
from converted weights (``--init-from``)."""
import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from alum.models.hf_state_dict import canonical_to_hf, entries
from alum.tools.convert.from_hf import from_hf
from alum.tools.convert.sharding import unshard
from alum.tools.convert.to_hf import to_hf
from tests.pretrain.conftest import alum_from, tiny_config


def first_valid_batch(trainer):
    from alum.pretrain.data import valid_batches

    return next(iter(valid_batches(trainer.data.valid, 4, 1, 0, 1)))


def hf_logits(path, batch):
    from transformers import AutoModelForMaskedLM

    model = AutoModelForMaskedLM.from_pretrained(path).eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


def our_logits(trainer, batch, vocab):
    module = trainer.engine.module
    module.eval()
    with torch.no_grad():
        return module(batch["input_ids"], batch["attention_mask"])[..., :vocab].float()


def test_zero1_run_exports_with_equal_logits(tmp_path, sample_cache):
    from alum.pretrain import Trainer

    run = tmp_path / "run"
    trainer = Trainer(tiny_config(run, sample_cache, steps=3, layers=2, hidden=64))
    trainer.train()
    to_hf(str(run), str(tmp_path / "hf"))
    batch = first_valid_batch(trainer)
    vocab = len(trainer.data.tokenizer)
    theirs = hf_logits(str(tmp_path / "hf"), batch)
    assert float((our_logits(trainer, batch, vocab) - theirs).abs().max()) <= 1e-5
    # A run directory written before config.json recorded model_config: rebuilt from the
    # run's settings and its tokenizer copy, same export.
    record = json.loads((run / "config.json").read_text())
    del record["model_config"]
    (run / "config.json").write_text(json.dumps(record))
    to_hf(str(run), str(tmp_path / "hf_old"))
    a, b = load_file(str(tmp_path / "hf" / "model.safetensors")), \
        load_file(str(tmp_path / "hf_old" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    from transformers import AutoTokenizer
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "hf"))) == vocab


def test_zero3_bf16_run_exports_its_fp32_master_weights(tmp_path, sample_cache):
    """ZeRO-3 keeps the weights only as fp32 partitions in the optimizer files."""
    import deepspeed

    from alum.pretrain import Trainer
    from alum.tools.convert.errors import ConvertError

    run = tmp_path / "run"
    trainer = Trainer(tiny_config(run, sample_cache, steps=2, layers=2, hidden=64,
                                  ds_config="zero3", precision="bf16"))
    trainer.train()
    to_hf(str(run), str(tmp_path / "hf"))          # auto: the masters
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    module = trainer.engine.module
    cfg = module.config
    params = dict(module.named_parameters())
    for entry in entries(cfg.family, cfg.num_layers):
        master = deepspeed.utils.safe_get_full_fp32_param(params[entry.ours]).cpu()
        for name, tensor in zip(entry.hf, canonical_to_hf(entry, unshard(entry, [master], cfg),
                                                        cfg)):
            assert exported[name].dtype == torch.float32
            assert torch.equal(exported[name], tensor), name
    with pytest.raises(ConvertError, match="ZeRO-3 placeholders"):
        to_hf(str(run), str(tmp_path / "hf2"), weights="module")


@pytest.fixture
def converted(tmp_path, sample_cache):
    """A random HF BERT over the sample corpus's tokenizer, converted with from-hf."""
    from transformers import AutoTokenizer

    from .conftest import make_hf_model

    tok = AutoTokenizer.from_pretrained(os.path.join(sample_cache, "tokenizer"))
    hf = make_hf_model("bert", vocab_size=len(tok), max_position_embeddings=64)
    hf.save_pretrained(tmp_path / "hf")
    tok.save_pretrained(tmp_path / "hf")

    def convert(tp=1):
        out = tmp_path / f"ours_tp{tp}"
        from_hf(str(tmp_path / "hf"), str(out), tp=tp)
        return str(out)
    return hf, convert


def init_config(run, cache, init_from, **changes):
    cfg = tiny_config(run, cache, hidden=None, layers=None, resume="auto", **changes)
    return dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint,
                                                                   init_from=init_from))


def test_init_from_starts_from_the_weights_and_resume_takes_precedence(
        tmp_path, sample_cache, converted, caplog):
    from alum.pretrain import Trainer

    hf, convert = converted
    ckpt = convert()
    run = tmp_path / "run"
    trainer = Trainer(init_config(run, sample_cache, ckpt, steps=4, max_steps=2,
                                  alum=alum_from(0)))
    batch = first_valid_batch(trainer)
    with torch.no_grad():
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert float((our_logits(trainer, batch, hf.config.vocab_size) - theirs).abs().max()) <= 1e-5
    assert trainer.step == 0 and trainer.engine.global_steps == 0
    trainer.engine.module.train()
    summary = trainer.train()
    assert (summary.start_step, summary.end_step, summary.alum_steps) == (0, 2, 2)
    trained = {k: v.detach().clone() for k, v in trainer.engine.module.named_parameters()}
    # Same output dir, same --init-from: this run's own checkpoint wins.
    resumed = Trainer(init_config(run, sample_cache, ckpt, steps=4, alum=alum_from(0)))
    assert resumed.step == 2
    for name, value in resumed.engine.module.named_parameters():
        assert torch.equal(value, trained[name]), name
    assert "not loaded" in resumed.run.init_note


def test_init_from_mismatches_name_the_field(tmp_path, sample_cache, converted):
    from alum.pretrain import Trainer

    _, convert = converted
    ckpt = convert()
    with pytest.raises(ValueError, match="ModelChoice.hidden_size=32"):
        Trainer(dataclasses.replace(
            init_config(tmp_path / "a", sample_cache, ckpt),
            model=dataclasses.replace(init_config(tmp_path / "a", sample_cache, ckpt).model,
                                      hidden_size=32)))
    with pytest.raises(ValueError, match=r"TrainConfig.tensor_parallel_size=1 .*reshape"):
        Trainer(init_config(tmp_path / "b", sample_cache, convert(tp=2)))
    with pytest.raises(ValueError, match="DataConfig.seq_length=128"):
        Trainer(init_config(tmp_path / "c", sample_cache, ckpt, seq=128))


def test_init_from_config_validation():
    from alum.pretrain.config import CheckpointConfig, ModelChoice, PretrainConfig

    with pytest.raises(ValueError, match="CheckpointConfig.init_from"):
        CheckpointConfig(init_from="x", resume="/some/run/checkpoints")
    with pytest.raises(ValueError, match="CheckpointConfig.init_from"):
        PretrainConfig(model=ModelChoice(model_kind="hf", hf_model="m"),
                       checkpoint=CheckpointConfig(init_from="x"))
    assert CheckpointConfig(init_from="").init_from is None


def test_alum_pretrain_help_documents_init_from(capsys):
    from alum.pretrain.cli import build_parser

    text = " ".join(build_parser().format_help().split())
    assert "--init-from" in text and "fresh (step 0)" in text


def test_zero0_bf16_run_exports_the_module_weights_and_says_so(tmp_path, sample_cache, capfd):
    """Without ZeRO DeepSpeed keeps the fp32 masters unnamed in the model file."""
    from alum.pretrain import Trainer
    from alum.pretrain.ds_config import load_ds_config
    from alum.tools.convert.errors import ConvertError

    ds = load_ds_config("zero1")
    ds["zero_optimization"] = {"stage": 0}
    (tmp_path / "zero0.json").write_text(json.dumps(ds))
    run = tmp_path / "run"
    trainer = Trainer(tiny_config(run, sample_cache, steps=2, layers=2, hidden=64,
                                  ds_config=str(tmp_path / "zero0.json"), precision="bf16"))
    trainer.train()
    to_hf(str(run), str(tmp_path / "hf"))
    assert "reading the module's 16-bit weights" in capfd.readouterr().err
    exported = load_file(str(tmp_path / "hf" / "model.safetensors"))
    word = trainer.engine.module.embeddings.word_embeddings.weight
    assert word.dtype == torch.bfloat16
    assert torch.equal(exported["bert.embeddings.word_embeddings.weight"],
                       word.detach().float()[:len(trainer.data.tokenizer)])
    with pytest.raises(ConvertError, match="use --weights module"):
        to_hf(str(run), str(tmp_path / "hf2"), weights="masters")
