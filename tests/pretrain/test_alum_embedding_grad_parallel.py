"""With ``detach_embeddings=False`` and a large δ, the pipeline's lean passes (PP=2) and the
lean order under TP=2 + sequence parallel train to the TP=1/PP=1 fast order's losses: the
perturbed branch's gradient at the embedding output (pass 3) reaches the embedding layer
in pass 4. Without that hand-over the last two losses differ by ≈5·10⁻⁴."""
import json
import os
import shutil

import pytest

from alum import AlumConfig
from alum.pretrain import Trainer

from ..launch import launch_deepspeed
from .conftest import tiny_config
from .test_training import RELATIVE

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.slow
def test_pipeline_and_sequence_parallel_lean_send_the_perturbed_gradient_to_embeddings(
        tmp_path, sample_cache):
    if shutil.which("deepspeed") is None:
        pytest.skip("the deepspeed launcher is not on PATH")
    alum = AlumConfig(start_step=1, **dict(RELATIVE, epsilon=1.0, step_size=1.0,
                                           detach_embeddings=False))
    cfg = tiny_config(tmp_path / "run", sample_cache, steps=4, grad_accum=2, hidden=64,
                      layers=2, alum=alum)
    cfg.train.eval_batches = 2
    reference = Trainer(cfg).train()
    assert reference.adv_skipped == 0 and reference.adv_means["adv_loss"] > 0
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg.to_dict()))
    out = tmp_path / "out.json"
    launch_deepspeed(os.path.join(HERE, "alum_embedding_grad_worker.py"), cfg_path, out,
                     nprocs=2, port=29653)
    results = json.loads(out.read_text())
    assert sorted(results) == ["pp2", "tp2_sp_lean"]
    for name, got in results.items():
        assert got["adv_skipped"] == 0, name
        assert got["losses"] == pytest.approx(reference.losses, abs=1e-5), name
        assert got["adv"]["adv_loss"] == pytest.approx(reference.adv_means["adv_loss"],
                                                       rel=1e-4), name
