"""The loop on the sample corpus: loss goes down, ALUM on/off and its curriculum, every
ds_config, ZeRO-stage equivalence, activation checkpointing, the HF adapter."""
import math

import pytest
import torch

from alum import AlumConfig
from alum.pretrain import Trainer

from .conftest import tiny_config

# An adversarial term large enough to change the updates at this scale (the
# "relative" preset, docs/algorithm.md "Update rules"); the paper's absolute 1e-5 barely moves a tiny model.
RELATIVE = dict(alpha=10.0, noise_std=1e-3, step_size=0.1, epsilon=0.1, steps=1, norm="l2",
                level="token", update="project", epsilon_scale="relative")


def run(tmp_path, cache, name="run", **kw):
    return Trainer(tiny_config(tmp_path / name, cache, **kw)).train()


def test_loss_goes_down_on_the_sample_corpus(tmp_path, sample_cache):
    s = run(tmp_path, sample_cache, steps=24, lr=5e-3, micro=8, hidden=64)
    assert len(s.losses) == 24 and all(math.isfinite(x) for x in s.losses)
    assert sum(s.losses[-4:]) / 4 < sum(s.losses[:4]) / 4 - 0.5
    assert s.evals and 0.0 <= s.evals[-1]["accuracy"] <= 1.0
    assert s.tokens_per_s > 0 and s.tflops_per_device > 0
    assert s.checkpoint == "global_step24"


def test_alum_curriculum_switches_the_term_on_at_start_step(tmp_path, sample_cache):
    standard = run(tmp_path, sample_cache, "std", steps=6)
    alum = AlumConfig(start_step=3, **RELATIVE)
    adv = run(tmp_path, sample_cache, "alum", steps=6, alum=alum)
    assert standard.alum_steps == 0 and standard.adv_means == {}
    assert adv.alum_steps == 3
    # Before start_step both runs are the same computation; after it the adversarial
    # gradient changes the parameters, hence the next clean losses.
    assert adv.losses[:4] == pytest.approx(standard.losses[:4], abs=1e-6)
    assert abs(adv.losses[5] - standard.losses[5]) > 1e-5  # runs are deterministic
    for key in ("adv_loss", "delta_rel_norm", "cos_delta_grad", "grad_share", "flip_rate"):
        assert key in adv.adv_means
    assert adv.adv_means["adv_loss"] > 0 and adv.adv_skipped == 0
    # Projected onto the relative ball of radius 0.1 (smaller where ||g|| is near the
    # guard 1e-6 of the normalised step, as at initialisation).
    assert 0.0 < adv.adv_means["delta_rel_norm"] <= 0.1 + 1e-6


def test_alum_over_all_positions_and_paper_preset(tmp_path, sample_cache):
    cfg = tiny_config(tmp_path / "all", sample_cache, steps=2,
                      alum=AlumConfig(start_step=0, **RELATIVE))
    cfg.alum_positions = "all"
    everywhere = Trainer(cfg).train()
    paper = run(tmp_path, sample_cache, "paper", steps=2,
                alum=AlumConfig.from_preset("paper-pretrain"))
    assert everywhere.alum_steps == 2 and paper.alum_steps == 2
    assert everywhere.adv_means["adv_loss"] > 0
    # Paper settings: eps = 1e-5 absolute, so delta is ~1e-5 of the embedding's scale.
    assert paper.adv_means["delta_rel_norm"] < 1e-3


def test_nan_adversarial_term_is_skipped_and_counted(tmp_path, sample_cache, monkeypatch):
    import alum.adversarial as adversarial

    real = adversarial.ascent_gradient

    def poisoned(*args, **kwargs):
        g, adv = real(*args, **kwargs)
        return g * float("nan"), adv

    monkeypatch.setattr(adversarial, "ascent_gradient", poisoned)
    s = run(tmp_path, sample_cache, steps=3, alum=AlumConfig(start_step=1, **RELATIVE))
    assert s.adv_skipped == 2 and all(math.isfinite(x) for x in s.losses)


@pytest.mark.parametrize("stage", ["zero2", pytest.param("zero3", marks=pytest.mark.slow)])
def test_zero_stages_equal_zero1_in_fp32(tmp_path, sample_cache, stage):
    base = run(tmp_path, sample_cache, "z1", steps=4, grad_accum=2,
               alum=AlumConfig(start_step=2, **RELATIVE))
    other = run(tmp_path, sample_cache, stage, steps=4, grad_accum=2, ds_config=stage,
                alum=AlumConfig(start_step=2, **RELATIVE))
    assert other.losses == pytest.approx(base.losses, abs=1e-5)


@pytest.mark.parametrize("name", ["zero1", "zero2", "zero3", "zero2_offload", "fp16"])
def test_every_shipped_ds_config_trains(tmp_path, sample_cache, name):
    if name == "fp16" and not torch.cuda.is_available():
        pytest.skip("fp16 needs a GPU: DeepSpeed refuses it on CPU (the refusal is tested "
                    "in test_config.py)")
    s = run(tmp_path, sample_cache, ds_config=name, precision="config", steps=3,
            alum=AlumConfig(start_step=2, **RELATIVE))
    assert len(s.losses) == 3 and all(math.isfinite(x) for x in s.losses)
    assert s.alum_steps == 1 and s.adv_skipped == 0


def test_activation_checkpointing_gives_the_same_losses(tmp_path, sample_cache):
    kw = dict(steps=3, dropout=0.1, layers=2, alum=AlumConfig(start_step=1, **RELATIVE))
    plain = run(tmp_path, sample_cache, "plain", **kw)
    ckpt = run(tmp_path, sample_cache, "ckpt", activation_checkpointing=True, **kw)
    assert ckpt.losses == pytest.approx(plain.losses, abs=1e-6)


def test_hf_model_through_the_adapter(tmp_path, sample_cache):
    from transformers import AutoTokenizer

    from alum.pretrain.hf_mlm_adapter import tiny_hf_bert

    tok = AutoTokenizer.from_pretrained(f"{sample_cache}/tokenizer")
    model = tiny_hf_bert(len(tok), hidden_size=32, num_layers=1, max_positions=64)
    model.save_pretrained(str(tmp_path / "hf"))
    cfg = tiny_config(tmp_path / "out", sample_cache, steps=3,
                      alum=AlumConfig(start_step=1, **RELATIVE))
    cfg.model.model_kind, cfg.model.hf_model = "hf", str(tmp_path / "hf")
    s = Trainer(cfg).train()
    assert s.alum_steps == 2 and all(math.isfinite(x) for x in s.losses)
