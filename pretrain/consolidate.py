"""One fp32 state dict of the whole model from a checkpoint of any TP x PP x ZeRO layout.

DeepSpeed's ``zero_to_fp32`` consolidates the ZeRO partitions of *one* model-parallel
rank: it reads ``mp_rank_00`` only, and a checkpoint with several (TP x PP > 1: one
``mp_rank_XX`` model file and one set of ``*_mp_rank_XX_optim_states.pt`` per
model-parallel rank) stops it with "Expected 1 of '*_optim_states.pt' ... but found N".
``consolidated_state_dict`` does what it cannot, as a thin layer over alum-convert's
reader (``alum.tools.convert.our_checkpoint.OurCheckpoint``, docs/convert.md), the one
implementation of reading our checkpoints:

1. the architecture comes from the run's ``config.json`` (``model_config``) and the
   TP/PP sizes from DeepSpeed's ``checkpoint_parallel_dimensions``, checked against
   each other and against every rank's files and tensor shapes (``ConvertError``, a
   ``ValueError``, naming the file);
2. each model-parallel rank's weights are read: the module's tensors when they are
   full fp32 ones, else the fp32 master weights that DeepSpeed's own ``zero_to_fp32``
   rebuilds from that rank's ZeRO partitions (16-bit ZeRO-0 runs keep no named
   masters: their module weights are taken, in fp32);
3. the ranks are put together with the name map (``alum.models.hf_state_dict``,
   ``sharding``): a stage's layers get their global indices (interleaved chunks
   ``chunks.<v>.`` unwrapped), tensor-parallel shards are concatenated along their
   split dimension, replicated tensors are taken from TP rank 0, and the last
   stage's copy of the tied word embedding (``output_word_embeddings``) is dropped:
   the first stage's ``embeddings.word_embeddings`` is the weight.

The result has the names of the TP=1, PP=1 ``alum.models.BertMLM``, so its
``load_state_dict`` takes it; unlike alum-convert's canonical form, the word
embedding and decoder bias keep the vocabulary padding of the saved TP size
(Megatron pads to a multiple of 128 x TP), so each tensor is exactly what the model
held. A checkpoint with one model-parallel rank gives what ``zero_to_fp32`` gives.
A run of a Hugging Face model (``model_kind hf``) is refused: use ``zero_to_fp32``
or the run's ``--export-hf`` output.

    python -m alum.pretrain.consolidate RUN/checkpoints model_fp32.pt [--tag global_step100]
"""
from __future__ import annotations

import argparse
from typing import Any, Dict, List, Optional

import torch
from torch import nn

LAYOUT_KEY = "parallel_layout"


def parallel_layout(module: nn.Module) -> Optional[Dict[str, Any]]:
    """What this rank holds of the model, recorded under ``LAYOUT_KEY`` in every
    checkpoint's ``client_state`` (``pretrain/run_state.py``): its TP and PP ranks, each
    model chunk's parameter-name prefix and first global layer, and the partition
    dimension of every tensor-parallel (sharded) parameter. None for a model that is
    not a megatron-core ``BertMLM`` (an HF model: always TP=1, PP=1).

    A description for people and older readers only: ``consolidated_state_dict`` (the
    convert reader) derives the layout from the model config and the name map, and
    does not read this record."""
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


def consolidated_state_dict(checkpoint_dir: str, tag: Optional[str] = None,
                            weights: str = "auto") -> Dict[str, torch.Tensor]:
    """The whole model in fp32 with TP=1/PP=1 names (see the module docstring).

    Args:
        checkpoint_dir: the run's ``checkpoints/`` directory (``global_step<N>`` tags);
            the run directory or one tag directory are taken too.
        tag: which checkpoint (default: ``latest`` if complete, else the newest
            complete one: the one a resume would load).
        weights: ``auto``, ``module`` or ``masters`` (``OurCheckpoint.rank_state``).
    """
    from alum.tools.convert.our_checkpoint import OurCheckpoint

    ckpt = OurCheckpoint.open(checkpoint_dir, tag)
    # A copy in memory: module tensors are mmapped views of the checkpoint's files.
    return {entry.ours: tensor.to(torch.float32, copy=True)
            for entry, tensor in ckpt.canonical(weights, keep_vocab_padding=True)}


def main(argv: Optional[List[str]] = None) -> None:
    from alum.tools.convert.errors import ConvertError
    from alum.tools.convert.our_checkpoint import WEIGHTS

    parser = argparse.ArgumentParser(
        prog="python -m alum.pretrain.consolidate",
        description="Write one fp32 state dict (TP=1/PP=1 names) of an alum-pretrain "
                    "checkpoint of any tensor/pipeline/ZeRO layout.")
    parser.add_argument("checkpoint_dir", help="the run's checkpoints/ directory (or the "
                        "run directory, or one global_stepN tag directory)")
    parser.add_argument("output", help="where to torch.save the state dict")
    parser.add_argument("--tag", default=None,
                        help="checkpoint tag (default: 'latest' if complete, else the newest "
                             "complete one)")
    parser.add_argument("--weights", default="auto", choices=WEIGHTS,
                        help="the module's tensors or the fp32 master weights (default auto: "
                             "the module when it holds full fp32 tensors, else the masters)")
    args = parser.parse_args(argv)
    try:
        state = consolidated_state_dict(args.checkpoint_dir, args.tag, args.weights)
    except ConvertError as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    torch.save(state, args.output)
    print(f"wrote {len(state)} tensors ({sum(t.numel() for t in state.values()):,} values) "
          f"to {args.output}")


if __name__ == "__main__":
    main()
