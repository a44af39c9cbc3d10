"""``alum-convert reshape``: our checkpoint from one TP x PP layout to another (weights only).

Every parameter is merged to its canonical form and split again
(``sharding``): vocabulary padding follows the new TP size, layers move between
stages, the last stage gets its tied embedding copy. The optimizer state is not
carried over: the result starts a run through ``alum-pretrain --init-from``
with a fresh optimizer, LR schedule and step 0 (AdamW's moments rebuild over
the first steps; use a short warmup).
"""
from __future__ import annotations

from typing import Optional

from .checkpoint_writer import write_checkpoint
from .hf_model import note
from .our_checkpoint import OurCheckpoint

OPTIMIZER_STATEMENT = ("the optimizer state is not converted: continue from the result with "
                       "alum-pretrain --init-from (fresh optimizer, LR schedule and step 0)")


def reshape(src: str, dst: str, *, tp: int, pp: int, tag: Optional[str] = None,
            weights: str = "auto", dtype: str = "fp32", overwrite: bool = False) -> str:
    """Rewrite ``src`` at ``tp`` x ``pp`` into ``dst``."""
    ckpt = OurCheckpoint.open(src, tag)
    note(f"reading {ckpt.describe()}")
    out = write_checkpoint(dst, ckpt.model_config, tp, pp, ckpt.canonical(weights),
                           dtype=dtype, tokenizer_dir=ckpt.tokenizer_dir, overwrite=overwrite,
                           record={"converted_by": "alum-convert reshape",
                                   "source": ckpt.tag_dir, "source_step": ckpt.step,
                                   "source_layout": {"tensor_parallel_size": ckpt.tp,
                                                     "pipeline_parallel_size": ckpt.pp}})
    note(f"wrote {out} at TP={tp} x PP={pp} (from TP={ckpt.tp} x PP={ckpt.pp}); "
         + OPTIMIZER_STATEMENT)
    return out
