"""Writing our checkpoint format (from-hf, reshape): model weights only, any TP x PP.

The destination looks like an alum-pretrain run directory, so ``--init-from``,
``to-hf`` and ``reshape`` read it like one::

    DST/config.json                      model_config, parallel sizes, name-map version,
                                         where the weights came from
    DST/tokenizer/                       the tokenizer files, when the source had them
    DST/checkpoints/latest               "global_step0"
    DST/checkpoints/global_step0/mp_rank_XX_model_states.pt
                                         {"module": this rank's state dict, DeepSpeed's
                                          mp_world_size / checkpoint_parallel_dimensions}
    DST/checkpoints/global_step0/alum_complete.json

There are no optimizer files: DeepSpeed's ``load_checkpoint`` cannot resume from
it; ``alum-pretrain --init-from DST`` starts a run from its weights (fresh
optimizer, LR schedule, step 0). Each rank's file is written once its pipeline
stage is complete (``sharding.ShardWriter``), so memory holds one stage.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from alum.atomic_write import atomic_write_text
from alum.checkpoint_tags import mark_complete
from alum.models.hf_state_dict import NAME_MAP_VERSION, Entry

from .hf_model import tokenizer_files
from .sharding import ShardWriter, check_layout, mp_rank
from .staging import staging_dir

TAG = "global_step0"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def write_checkpoint(dst: str, cfg, tp: int, pp: int,
                     canonical: Iterable[Tuple[Entry, torch.Tensor]], *, dtype: str = "fp32",
                     tokenizer_dir: Optional[str] = None, record: Dict[str, Any],
                     overwrite: bool = False) -> str:
    """Shard ``canonical`` (entry, tensor) pairs into ``dst`` at ``tp`` x ``pp``; all or nothing.

    ``record`` is added to ``config.json`` (provenance). Returns ``dst``.
    """
    check_layout(cfg, tp, pp)
    torch_dtype = DTYPES[dtype]
    with staging_dir(dst, overwrite) as tmp:
        save_dir = os.path.join(tmp, "checkpoints")
        tag_dir = os.path.join(save_dir, TAG)
        os.makedirs(tag_dir)

        def emit(tp_rank: int, pp_rank: int, state: Dict[str, torch.Tensor]) -> None:
            mp = mp_rank(tp_rank, pp_rank, tp)
            payload = {
                "module": {k: v.to(torch_dtype) for k, v in state.items()},
                "mp_world_size": tp * pp, "dp_world_size": 1,
                "checkpoint_parallel_dimensions": {"tp_degree": tp, "pp_degree": pp},
                "buffer_names": [], "step": 0,
                "alum_convert": {"name_map_version": NAME_MAP_VERSION, "tp_rank": tp_rank,
                                 "pp_rank": pp_rank},
            }
            torch.save(payload, os.path.join(tag_dir, f"mp_rank_{mp:02d}_model_states.pt"))

        writer = ShardWriter(cfg, tp, pp, emit)
        for entry, tensor in canonical:
            writer.add(entry, tensor)
        writer.close()
        mark_complete(save_dir, TAG, 0)
        files = tokenizer_files(tokenizer_dir)
        if files:
            os.makedirs(os.path.join(tmp, "tokenizer"))
            for path in files:
                shutil.copy2(path, os.path.join(tmp, "tokenizer", os.path.basename(path)))
        config = {"model_config": cfg.to_dict(),
                  "parallel": {"tensor_parallel_size": tp, "pipeline_parallel_size": pp},
                  "name_map_version": NAME_MAP_VERSION, "dtype": dtype,
                  "optimizer": "none: model weights only (alum-pretrain --init-from starts a "
                               "fresh optimizer, LR schedule and step 0)"}
        config.update(record)
        atomic_write_text(os.path.join(tmp, "config.json"), json.dumps(config, indent=1))
    return os.path.abspath(dst)
