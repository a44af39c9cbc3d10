"""Fixtures for the pre-training tests: the sample corpus prepared once, tiny configs.

Every test builds a tiny megatron-core BERT (hidden 32, 1-2 layers, sequence 32)
and trains a handful of steps in this process (a world of one over gloo).
"""
from __future__ import annotations

import os
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "1")
warnings.filterwarnings("ignore", message=".*Transformer Engine.*")

import pytest  # noqa: E402

from alum import AlumConfig  # noqa: E402
from alum.pretrain.config import (CheckpointConfig, DataConfig, LoggingConfig,  # noqa: E402
                                  ModelChoice, OptimConfig, PretrainConfig, TrainConfig)


@pytest.fixture(scope="session")
def xdg_cache(tmp_path_factory):
    """An ``XDG_CACHE_HOME`` whose sample-corpus cache is prepared once per test run."""
    from alum.pretrain.data import prepare_sample_corpus

    base = tmp_path_factory.mktemp("xdg_cache")
    prepare_sample_corpus(os.path.join(str(base), "alum", "pretrain_sample"))
    return str(base)


@pytest.fixture(scope="session")
def sample_cache(xdg_cache):
    """The prepared sample-corpus cache directory (``DataConfig.cache_dir``)."""
    return os.path.join(xdg_cache, "alum", "pretrain_sample")


def tiny_config(output_dir, cache, *, steps=6, alum=None, dropout=0.0, ds_config="zero1",
                precision="fp32", grad_accum=1, micro=4, seq=32, lr=2e-3, resume="never",
                max_steps=None, save_interval=0, keep_last=2, layers=1, hidden=32,
                **train_extra) -> PretrainConfig:
    """A run of a few optimizer steps on the sample corpus (seconds on one thread)."""
    return PretrainConfig(
        data=DataConfig(cache_dir=cache, seq_length=seq),
        model=ModelChoice(hidden_size=hidden, num_layers=layers, dropout=dropout),
        optim=OptimConfig(lr=lr, warmup_steps=2, clip_grad=1.0, weight_decay=0.01),
        train=TrainConfig(train_steps=steps, micro_batch_size=micro, grad_accum_steps=grad_accum,
                          ds_config=ds_config, precision=precision, eval_interval=0,
                          eval_batches=2, log_interval=1000, max_steps=max_steps,
                          **train_extra),
        checkpoint=CheckpointConfig(output_dir=str(output_dir), resume=resume,
                                    save_interval=save_interval, keep_last=keep_last),
        logging=LoggingConfig(tensorboard=False, progress_bar=False),
        alum=alum)


def alum_from(start_step=0, **overrides) -> AlumConfig:
    return AlumConfig.from_preset("paper-pretrain", start_step=start_step, **overrides)
