"""``alum-convert to-hf``: one of our checkpoints -> a Hugging Face ``*ForMaskedLM`` directory.

Output: ``config.json`` (``BertForMaskedLM`` / ``RobertaForMaskedLM``),
``model.safetensors`` (tied weights written once, as ``save_pretrained`` does),
the run's tokenizer files, and ``alum_convert.json`` (where it came from).

Memory: the safetensors file is streamed (``safetensors_stream``), so what is
held is one canonical tensor and the source's shards of one pipeline stage, and
those are read lazily: module weights are mmapped (pages come in per tensor);
ZeRO-3 masters are gathered per tensor by zero_to_fp32's lazy mode; ZeRO-1/2
masters are concatenated per model-parallel rank by zero_to_fp32 (one stage's
fp32 weights, the one place the bound is a stage rather than a tensor).
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Optional

from alum.models.hf_state_dict import (HF_ARCHITECTURES, NAME_MAP_VERSION, canonical_to_hf,
                                       entries, hf_shapes)

from .checkpoint_writer import DTYPES
from .hf_model import hf_config_for, note, tokenizer_files
from .our_checkpoint import OurCheckpoint
from .safetensors_stream import StreamingSafetensorsWriter
from .staging import staging_dir


def to_hf(src: str, dst: str, *, tag: Optional[str] = None, weights: str = "auto",
          dtype: str = "fp32", overwrite: bool = False) -> str:
    """Convert ``src`` (run dir, checkpoints dir or tag dir) into the HF directory ``dst``."""
    ckpt = OurCheckpoint.open(src, tag)
    cfg = ckpt.model_config
    torch_dtype = DTYPES[dtype]
    note(f"reading {ckpt.describe()}")
    layout = [(name, shape, torch_dtype)
              for entry in entries(cfg.family, cfg.num_layers)
              for name, shape in zip(entry.hf, hf_shapes(entry, cfg))]
    with staging_dir(dst, overwrite) as tmp:
        config = hf_config_for(cfg, dtype={"fp32": "float32", "bf16": "bfloat16",
                                           "fp16": "float16"}[dtype])
        config.save_pretrained(tmp)
        writer = StreamingSafetensorsWriter(os.path.join(tmp, "model.safetensors"), layout)
        for entry, tensor in ckpt.canonical(weights):
            for name, hf_tensor in zip(entry.hf, canonical_to_hf(entry, tensor, cfg)):
                writer.write(name, hf_tensor.to(torch_dtype))
        writer.close()
        files = tokenizer_files(ckpt.tokenizer_dir)
        for path in files:
            shutil.copy2(path, os.path.join(tmp, os.path.basename(path)))
        if not files:
            note(f"no tokenizer found next to {ckpt.tag_dir}: the HF directory has weights "
                 f"and config only")
        with open(os.path.join(tmp, "alum_convert.json"), "w") as f:
            json.dump({"source": ckpt.tag_dir, "step": ckpt.step, "weights": weights,
                       "dtype": dtype, "name_map_version": NAME_MAP_VERSION,
                       "source_layout": {"tensor_parallel_size": ckpt.tp,
                                         "pipeline_parallel_size": ckpt.pp,
                                         "zero_stage": ckpt.zero_stage}}, f, indent=1)
    note(f"wrote {dst} ({HF_ARCHITECTURES[cfg.family]}, {dtype})")
    return os.path.abspath(dst)
