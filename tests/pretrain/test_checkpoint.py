"""Checkpoints: resume equals the uninterrupted run, crash safety, keep-last-N, zero_to_fp32."""
import logging
import os

import pytest
import torch

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.checkpoint_tags import LATEST, MARKER, complete_tags, incomplete_reason
from alum.pretrain.checkpoint import resumable_tag

from .conftest import tiny_config
from .test_training import RELATIVE


def ckpt_dir(out):
    return os.path.join(str(out), "checkpoints")


@pytest.mark.parametrize("ds_config", ["zero1", pytest.param("zero3", marks=pytest.mark.slow)])
def test_resume_gives_the_uninterrupted_loss_curve(tmp_path, sample_cache, ds_config):
    # Dropout on and ALUM switched on half-way, so the data position, every RNG stream,
    # the optimizer moments and the LR schedule must all be restored.
    kw = dict(steps=6, dropout=0.1, grad_accum=2, ds_config=ds_config,
              alum=AlumConfig(start_step=2, **RELATIVE))
    straight = Trainer(tiny_config(tmp_path / "straight", sample_cache, **kw)).train()
    first = Trainer(tiny_config(tmp_path / "split", sample_cache, max_steps=3, **kw)).train()
    assert first.end_step == 3 and first.checkpoint == "global_step3"
    second = Trainer(tiny_config(tmp_path / "split", sample_cache, resume="auto",
                                 **kw)).train()
    assert second.start_step == 3 and second.end_step == 6
    resumed = first.losses + second.losses
    assert resumed == pytest.approx(straight.losses, abs=1e-6)
    assert second.evals[-1]["loss"] == pytest.approx(straight.evals[-1]["loss"], abs=1e-6)


def test_crash_while_saving_keeps_the_previous_checkpoint(tmp_path, sample_cache,
                                                           monkeypatch, caplog):
    out = tmp_path / "run"
    trainer = Trainer(tiny_config(out, sample_cache, steps=4, save_interval=2))
    real_save = trainer.engine.save_checkpoint
    calls = []

    def crashing_save(save_dir, tag=None, **kwargs):
        calls.append(tag)
        if len(calls) == 2:  # the second save dies half-way through its files
            real_save(save_dir, tag=tag, **kwargs)
            raise KeyboardInterrupt("killed while saving")
        return real_save(save_dir, tag=tag, **kwargs)

    monkeypatch.setattr(trainer.engine, "save_checkpoint", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    d = ckpt_dir(out)
    assert open(os.path.join(d, LATEST)).read() == "global_step2"
    assert "no alum_complete.json" in incomplete_reason(d, "global_step4")
    assert resumable_tag(d) == "global_step2"

    # A run that resumes continues from step 2 and ends complete.
    resumed = Trainer(tiny_config(out, sample_cache, steps=4, resume="auto")).train()
    assert resumed.start_step == 2 and resumed.end_step == 4

    # latest naming a damaged tag (a truncated file): warn and fall back.
    victim = os.path.join(d, "global_step4", "mp_rank_00_model_states.pt")
    with open(victim, "r+b") as f:
        f.truncate(10)
    with caplog.at_level(logging.WARNING, logger="alum.pretrain"):
        assert resumable_tag(d) == "global_step2"
    assert "not usable" in caplog.text and "global_step2" in caplog.text

    # An empty latest (a crash during a non-atomic write) also falls back.
    open(os.path.join(d, LATEST), "w").close()
    assert resumable_tag(d) == "global_step2"


def test_keep_last_n_complete_checkpoints(tmp_path, sample_cache):
    out = tmp_path / "run"
    Trainer(tiny_config(out, sample_cache, steps=5, save_interval=1, keep_last=2)).train()
    d = ckpt_dir(out)
    assert [t for _, t in complete_tags(d)] == ["global_step4", "global_step5"]
    assert sorted(n for n in os.listdir(d) if n.startswith("global_step")) == \
        ["global_step4", "global_step5"]
    assert open(os.path.join(d, LATEST)).read() == "global_step5"
    assert os.path.isfile(os.path.join(d, "global_step5", MARKER))


def test_fresh_run_refuses_a_directory_with_checkpoints(tmp_path, sample_cache):
    out = tmp_path / "run"
    Trainer(tiny_config(out, sample_cache, steps=1)).train()
    with pytest.raises(ValueError, match="resume='never'"):
        Trainer(tiny_config(out, sample_cache, steps=1, resume="never"))


@pytest.mark.parametrize("ds_config", ["zero1", "zero2", "zero3"])
def test_zero_to_fp32_consolidates_our_checkpoints(tmp_path, sample_cache, ds_config):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    out = tmp_path / ds_config
    trainer = Trainer(tiny_config(out, sample_cache, steps=2, ds_config=ds_config))
    trainer.train()
    consolidated = get_fp32_state_dict_from_zero_checkpoint(ckpt_dir(out))  # via `latest`
    model = trainer.engine.module
    if ds_config == "zero3":
        import deepspeed

        params = dict(model.named_parameters())
        with deepspeed.zero.GatheredParameters(list(params.values())):
            expected = {k: v.detach().clone() for k, v in params.items()}
    else:
        expected = {k: v.detach().clone() for k, v in model.named_parameters()}
    assert set(expected) <= set(consolidated)
    for name, value in expected.items():
        torch.testing.assert_close(consolidated[name].float(), value.float(), rtol=0, atol=0,
                                   msg=name)
