"""Pre-training of BERT/RoBERTa masked LMs with ALUM under DeepSpeed (docs/pretrain.md).

``alum-pretrain`` (``alum.pretrain.cli``) with no arguments runs the README's main
job on the shipped sample corpus. Programmatic use::

    from alum.pretrain import PretrainConfig, Trainer
    summary = Trainer(PretrainConfig(...)).train()

Names are imported lazily: importing the package does not import DeepSpeed.
"""
from __future__ import annotations

from alum.lazy_exports import lazy_getattr

_EXPORTS = {
    "PretrainConfig": "config", "DataConfig": "config", "ModelChoice": "config",
    "OptimConfig": "config", "TrainConfig": "config", "CheckpointConfig": "config",
    "LoggingConfig": "config",
    "Trainer": "trainer", "TrainSummary": "trainer",
    "CheckpointManager": "checkpoint", "resumable_tag": "checkpoint",
    "HFMaskedLMAdapter": "hf_mlm_adapter", "load_hf_masked_lm": "hf_mlm_adapter",
    "build_ds_config": "ds_config", "ds_config_dir": "ds_config",
    "mlm_micro_batch": "mlm_step",
    "forward_flops_per_sequence": "flops",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
