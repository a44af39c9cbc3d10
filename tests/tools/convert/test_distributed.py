"""Multi-rank checkpoints (four gloo processes, ``dist_worker.py``) converted here.

* TP=2 x PP=2 (ZeRO-1) -> HF: logits equal the distributed model's (<= 1e-5, fp32), for
  BERT and RoBERTa, from the module weights and from the fp32 masters;
* reshape TP=2 x PP=2 -> TP=1 x PP=1 -> TP=2 x PP=1: the TP=1 model (here) and the
  TP=2 model (in the worker, loaded by --init-from's loader) give the same logits;
* the real training loop at TP=2, ZeRO-3, DP=2 -> HF: logits equal the engine's;
* the real loop at TP=2 x PP=2, interleaved (two chunks per stage) -> HF: the export's MLM
  validation loss equals the loop's.

ZeRO-3 is tested at TP=2 x PP=1: the loop refuses ZeRO-2/3 under pipeline parallelism.
"""
import json
import os
import shutil

import pytest
import torch

from alum.tools.convert.to_hf import to_hf

from ...launch import launch_deepspeed
from .conftest import batch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
VOCAB = 1030


@pytest.fixture(scope="module")
def worker_out(tmp_path_factory, xdg_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    out = tmp_path_factory.mktemp("convert_dist")
    cache = os.path.join(xdg_cache, "alum", "pretrain_sample")
    launch_deepspeed(os.path.join(HERE, "dist_worker.py"), out, cache, nprocs=4, port=29779,
                     timeout=900, cwd=ROOT)
    return out


def hf_model_logits(path, ids, mask, types=None):
    from transformers import AutoModelForMaskedLM

    model, info = AutoModelForMaskedLM.from_pretrained(path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    with torch.no_grad():
        return model.eval()(input_ids=ids, attention_mask=mask, token_type_ids=types).logits


@pytest.mark.slow
@pytest.mark.parametrize("family", ["bert", "roberta"])
@pytest.mark.parametrize("weights", ["module", "masters"])
def test_tp2_pp2_to_hf_equals_the_distributed_logits(worker_out, tmp_path, family, weights):
    results = json.loads((worker_out / "results.json").read_text())
    assert results[f"mp_rank_formula_{family}"]
    dst = tmp_path / "hf"
    to_hf(str(worker_out / f"tp2pp2_{family}"), str(dst), weights=weights)
    ids, mask, types = batch(family, VOCAB)
    theirs = hf_model_logits(str(dst), ids, mask, types if family == "bert" else None)
    ours = torch.load(worker_out / f"tp2pp2_{family}_logits.pt")
    assert float(theirs.abs().max()) > 0.1          # not a degenerate model
    assert float((ours - theirs).abs().max()) <= 1e-5


@pytest.mark.slow
def test_reshape_chain_preserves_logits(worker_out, single_process_parallel):
    from alum.parallel import ParallelConfig, build_model
    from alum.pretrain.model_builder import load_init_weights
    from alum.tools.convert.our_checkpoint import OurCheckpoint

    reference = torch.load(worker_out / "tp2pp2_bert_logits.pt")
    ckpt = OurCheckpoint.open(str(worker_out / "tp1pp1"))
    assert (ckpt.tp, ckpt.pp) == (1, 1)
    (model,) = build_model(ckpt.model_config, ParallelConfig())
    load_init_weights(model, ckpt)
    ids, mask, types = batch("bert", VOCAB)
    with torch.no_grad():
        tp1 = model.eval()(ids, mask, types)[..., :VOCAB]
    assert float((tp1 - reference).abs().max()) <= 1e-5
    tp2 = torch.load(worker_out / "tp2pp1_logits.pt")
    assert float((tp2 - reference).abs().max()) <= 1e-5
    config = json.loads((worker_out / "tp2pp1" / "config.json").read_text())
    assert config["parallel"] == {"tensor_parallel_size": 2, "pipeline_parallel_size": 1}
    assert "optimizer" in config


@pytest.mark.slow
def test_zero3_tp2_training_run_to_hf_equals_the_engine_logits(worker_out, tmp_path):
    saved = torch.load(worker_out / "zero3_tp2_logits.pt")
    results = json.loads((worker_out / "results.json").read_text())["zero3_tp2"]
    assert results["dp_size"] == 2
    to_hf(str(worker_out / "zero3_tp2"), str(tmp_path / "hf"))
    b = saved["batch"]
    theirs = hf_model_logits(str(tmp_path / "hf"), b["input_ids"], b["attention_mask"])
    assert float((saved["logits"] - theirs).abs().max()) <= 1e-5


@pytest.mark.slow
def test_interleaved_tp2_pp2_training_run_to_hf_keeps_the_validation_loss(worker_out):
    got = json.loads((worker_out / "results.json").read_text())["interleaved"]
    assert got["dp_size"] == 1
    assert abs(got["hf_valid_loss"] - got["loop_valid_loss"]) <= 1e-5, got
