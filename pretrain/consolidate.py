"""One fp32 state dict of the whole model from a tensor/pipeline-parallel checkpoint.

DeepSpeed's ``zero_to_fp32`` consolidates the ZeRO partitions of *one* model-parallel
rank: it reads ``mp_rank_00`` only, and a checkpoint with several (TP x PP > 1: one
``mp_rank_XX`` model file and one set of ``*_mp_rank_XX_optim_states.pt`` per
model-parallel rank) stops it with "Expected 1 of '*_optim_states.pt' ... but found N".
``consolidated_state_dict`` does what it cannot:

1. each model-parallel rank's files are shown to DeepSpeed's own
   ``get_fp32_state_dict_from_zero_checkpoint`` as ``mp_rank_00`` (symbolic links in a
   temporary directory), which merges that rank's ZeRO partitions into fp32 tensors;
   without ZeRO (stage 0) there are none, and the model file's weights are taken;
2. the ranks are put together with the layout each one recorded in its checkpoint
   (``parallel_layout``, saved in DeepSpeed's ``client_state``): a stage's layers get
   their global indices (``layers.<i>`` → ``layers.<i + offset>``; interleaved chunks
   ``chunks.<v>.`` unwrapped), tensor-parallel shards are concatenated along their
   partition dimension in TP-rank order, replicated tensors are taken from TP rank 0,
   and the last stage's copy of the tied word embedding (``output_word_embeddings``)
   is dropped: the first stage's ``embeddings.word_embeddings`` is the weight.

The result has the names of the TP=1, PP=1 model, so ``BertMLM.load_state_dict``
of a single-rank model takes it (the word embedding and decoder bias keep the
vocabulary padding of the saved TP size: Megatron pads to a multiple of 128 x TP).
Checkpoints with one model-parallel rank go to ``zero_to_fp32`` unchanged.

    python -m alum.pretrain.consolidate RUN/checkpoints model_fp32.pt [--tag global_step100]
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import tempfile
from collections import defaultdict
from typing import Any, Dict, List, Optional

import torch
from torch import nn

LAYOUT_KEY = "parallel_layout"
_MP_FILE = re.compile(r"mp_rank_(\d+)")
_LAYER = re.compile(r"^layers\.(\d+)\.")


def parallel_layout(module: nn.Module) -> Optional[Dict[str, Any]]:
    """What this rank holds of the model, for ``consolidated_state_dict``: its TP and PP
    ranks, each model chunk's parameter-name prefix and first global layer, and the
    partition dimension of every tensor-parallel (sharded) parameter. None for a model
    that is not a megatron-core ``BertMLM`` (an HF model: always TP=1, PP=1)."""
    from megatron.core import parallel_state as ps

    from alum.parallel.pipeline import PipelineChunks, model_chunks

    chunks = model_chunks(module)
    if not all(hasattr(c, "layer_range") for c in chunks):
        return None
    interleaved = isinstance(module, PipelineChunks)
    prefixes = [f"chunks.{v}." if interleaved else "" for v in range(len(chunks))]
    partition_dims = {}
    for prefix, chunk in zip(prefixes, chunks):
        for name, p in chunk.named_parameters():
            if getattr(p, "tensor_model_parallel", False):
                partition_dims[prefix + name] = int(p.partition_dim)
    return {"tensor_parallel_rank": ps.get_tensor_model_parallel_rank(),
            "tensor_parallel_size": ps.get_tensor_model_parallel_world_size(),
            "pipeline_parallel_rank": ps.get_pipeline_model_parallel_rank(),
            "pipeline_parallel_size": ps.get_pipeline_model_parallel_world_size(),
            "chunks": [{"prefix": prefix, "layer_offset": int(chunk.layer_range[0])}
                       for prefix, chunk in zip(prefixes, chunks)],
            "partition_dims": partition_dims}


def _tag_of(checkpoint_dir: str, tag: Optional[str]) -> str:
    if tag is not None:
        return tag
    from .checkpoint import resumable_tag

    found = resumable_tag(checkpoint_dir)
    if found is None:
        raise FileNotFoundError(f"no complete checkpoint in {checkpoint_dir}")
    return found


def _model_parallel_ranks(tag_dir: str) -> List[int]:
    ranks = set()
    for path in glob.glob(os.path.join(tag_dir, "*mp_rank_*.pt")):
        match = _MP_FILE.search(os.path.basename(path))
        if match:
            ranks.add(int(match.group(1)))
    if not ranks:
        raise FileNotFoundError(f"{tag_dir} holds no DeepSpeed model files (*mp_rank_XX*.pt)")
    return sorted(ranks)


def _model_file(tag_dir: str, mp: int) -> str:
    for name in (f"mp_rank_{mp:02d}_model_states.pt",
                 f"zero_pp_rank_0_mp_rank_{mp:02d}_model_states.pt"):  # ZeRO-3
        path = os.path.join(tag_dir, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{tag_dir} has no model file of model-parallel rank {mp}")


def _rank_fp32_state_dict(tag_dir: str, tag: str, mp: int) -> Dict[str, torch.Tensor]:
    """Model-parallel rank ``mp``'s parameters in fp32, its ZeRO partitions merged."""
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    own = f"mp_rank_{mp:02d}"
    files = [n for n in os.listdir(tag_dir) if own in n and n.endswith(".pt")]
    if not any(n.endswith("_optim_states.pt") for n in files):
        # ZeRO stage 0: no partitions; the model file holds the weights (the run's dtype).
        state = torch.load(_model_file(tag_dir, mp), map_location="cpu", weights_only=False)
        return {k: v.float() if v.is_floating_point() else v
                for k, v in state["module"].items() if not k.endswith("._extra_state")}
    with tempfile.TemporaryDirectory(prefix="alum_consolidate_") as tmp:
        view = os.path.join(tmp, tag)
        os.makedirs(view)
        for name in files:
            os.symlink(os.path.abspath(os.path.join(tag_dir, name)),
                       os.path.join(view, name.replace(own, "mp_rank_00")))
        return dict(get_fp32_state_dict_from_zero_checkpoint(tmp, tag=tag))


def _global_name(name: str, layout: Dict[str, Any]) -> Optional[str]:
    """The TP=1/PP=1 name of a stage's parameter; None for the tied embedding's copy."""
    chunks = layout["chunks"]
    chunk = next((c for c in chunks if c["prefix"] and name.startswith(c["prefix"])),
                 chunks[0])
    local = name[len(chunk["prefix"]):]
    if local.startswith("output_word_embeddings."):
        return None
    match = _LAYER.match(local)
    if match:
        index = int(match.group(1)) + chunk["layer_offset"]
        local = f"layers.{index}." + local[match.end():]
    return local


def consolidated_state_dict(checkpoint_dir: str, tag: Optional[str] = None
                            ) -> Dict[str, torch.Tensor]:
    """The whole model in fp32 with TP=1/PP=1 names (see the module docstring).

    Args:
        checkpoint_dir: the run's ``checkpoints/`` directory (``global_step<N>`` tags).
        tag: which checkpoint (default: the one a resume would load).
    """
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    tag = _tag_of(checkpoint_dir, tag)
    tag_dir = os.path.join(checkpoint_dir, tag)
    ranks = _model_parallel_ranks(tag_dir)
    if ranks == [0]:
        return dict(get_fp32_state_dict_from_zero_checkpoint(checkpoint_dir, tag=tag))
    shards: Dict[str, Dict[int, torch.Tensor]] = defaultdict(dict)
    dims: Dict[str, Optional[int]] = {}
    for mp in ranks:
        saved = torch.load(_model_file(tag_dir, mp), map_location="cpu", weights_only=False)
        layout = saved.get(LAYOUT_KEY)
        if layout is None:
            raise ValueError(f"{tag_dir} has {len(ranks)} model-parallel ranks but no "
                             f"'{LAYOUT_KEY}' in their model files (saved before the loop "
                             f"recorded it): it cannot be put together")
        tp_rank = layout["tensor_parallel_rank"]
        for name, value in _rank_fp32_state_dict(tag_dir, tag, mp).items():
            target = _global_name(name, layout)
            if target is None:
                continue
            shards[target][tp_rank] = value
            dims[target] = layout["partition_dims"].get(name)
    out = {}
    for name, parts in shards.items():
        if dims[name] is None:
            out[name] = parts[min(parts)]  # replicated over TP: rank 0's
        else:
            out[name] = torch.cat([parts[r] for r in sorted(parts)], dim=dims[name])
    return out


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m alum.pretrain.consolidate",
        description="Write one fp32 state dict (TP=1/PP=1 names) of an alum-pretrain "
                    "checkpoint of any tensor/pipeline/ZeRO layout.")
    parser.add_argument("checkpoint_dir", help="the run's checkpoints/ directory")
    parser.add_argument("output", help="where to torch.save the state dict")
    parser.add_argument("--tag", default=None,
                        help="checkpoint tag (default: the newest complete one)")
    args = parser.parse_args(argv)
    state = consolidated_state_dict(args.checkpoint_dir, args.tag)
    torch.save(state, args.output)
    print(f"wrote {len(state)} tensors ({sum(t.numel() for t in state.values()):,} values) "
          f"to {args.output}")


if __name__ == "__main__":
    main()
