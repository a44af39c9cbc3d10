"""``alum-convert from-hf``: a local HF BERT/RoBERTa directory -> our checkpoint at TP x PP.

The architecture comes from the HF ``config.json`` (``hf_model.model_config_from_hf``),
the weights through the name map; a missing MLM head is initialised (stderr says
so). The result (``checkpoint_writer``) is what ``alum-pretrain --init-from``
starts continual pre-training from.
"""
from __future__ import annotations

import os

from .checkpoint_writer import write_checkpoint
from .hf_model import HFWeights, model_config_from_hf, note, tokenizer_files
from .sharding import check_layout


def from_hf(src: str, dst: str, *, tp: int = 1, pp: int = 1, dtype: str = "fp32",
            make_vocab_size_divisible_by: int = 128, seed: int = 0,
            overwrite: bool = False) -> str:
    """Convert the HF directory ``src`` into our checkpoint ``dst`` split ``tp`` x ``pp``."""
    src = os.path.abspath(src)
    cfg = model_config_from_hf(src, make_vocab_size_divisible_by)
    check_layout(cfg, tp, pp)
    weights = HFWeights(src, cfg)
    if not tokenizer_files(src):
        note(f"{src} has no tokenizer files: pass the model's tokenizer to alum-pretrain "
             f"with --tokenizer")
    out = write_checkpoint(dst, cfg, tp, pp, weights.canonical(seed), dtype=dtype,
                           tokenizer_dir=src, overwrite=overwrite,
                           record={"converted_by": "alum-convert from-hf", "source": src})
    note(f"wrote {out}: {cfg.family}, hidden {cfg.hidden_size}, {cfg.num_layers} layers, "
         f"vocab {cfg.vocab_size} (padded to {cfg.padded_vocab_size(tp)}), TP={tp} x PP={pp}")
    return out
