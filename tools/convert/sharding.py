"""Splitting canonical tensors into tensor/pipeline-parallel shards and merging them back.

The layout of a shard is megatron-core's as our model builds it
(``alum.parallel.build_model``): pipeline stage ``p`` of ``pp`` holds the
layers ``chunk_layer_range(num_layers, p, pp)`` under *local* indices
(``layers.0`` is its first layer), the first stage the embeddings, the last
the MLM head and, when ``pp > 1``, its own copy of the tied word embedding.
Within a stage, tensor-parallel rank ``t`` of ``tp`` holds slice ``t`` of every
split parameter (``alum.models.hf_state_dict.Param.split``) and a full copy of the others.

DeepSpeed names each rank's file by its rank in megatron's *model-parallel*
group (TP x PP): ``mp_rank_XX``. megatron-core orders ranks tp fastest, then
dp, then pp, and torch numbers a group's members in increasing global rank, so
``mp_rank = pp_rank * tp + tp_rank`` (``mp_rank``; checked against a real
TP=2 x PP=2 world in tests/convert/dist_worker.py).
"""
from __future__ import annotations

from typing import Dict, Iterator, List, Optional, Tuple

import torch

from alum.models.hf_state_dict import OUTPUT_EMBEDDING, Entry, canonical_shape, entries, pad_vocab

from .errors import ConvertError


def mp_rank(tp_rank: int, pp_rank: int, tp: int) -> int:
    """DeepSpeed's ``mp_rank_XX`` of the (tp_rank, pp_rank) shard."""
    return pp_rank * tp + tp_rank


def check_layout(cfg, tp: int, pp: int) -> None:
    """Raise ConvertError naming the field when ``cfg`` cannot be split tp x pp."""
    from alum.parallel import ParallelConfig

    try:
        ParallelConfig(tensor_parallel_size=tp, pipeline_parallel_size=pp).check_model(cfg)
    except ValueError as err:
        raise ConvertError(str(err)) from None


def chunk_of(entry: Entry, num_layers: int, chunks: int) -> int:
    """The model chunk (pipeline stage when not interleaved) holding ``entry``."""
    from alum.parallel import chunk_layer_range

    if entry.param.block == "embeddings":
        return 0
    if entry.param.block == "head":
        return chunks - 1
    for chunk in range(chunks):
        start, end = chunk_layer_range(num_layers, chunk, chunks)
        if start <= entry.layer < end:
            return chunk
    raise ConvertError(f"layer {entry.layer} is outside the {num_layers} layers")


def stage_of(entry: Entry, num_layers: int, pp: int) -> int:
    """The pipeline stage holding ``entry`` (not interleaved)."""
    return chunk_of(entry, num_layers, pp)


def chunk_prefix(chunk: int, pp: int, virtual: int) -> str:
    """The name prefix of model chunk ``chunk`` in its rank's state dict: interleaved
    ranks hold ``PipelineChunks`` (``chunks.<v>.``; chunk c lives on pipeline rank
    ``c % pp`` as its virtual chunk ``c // pp``, megatron's order)."""
    return f"chunks.{chunk // pp}." if virtual > 1 else ""


def local_name(entry: Entry, num_layers: int, pp: int, virtual: int = 1) -> str:
    """``entry``'s name in its rank's state dict (layer index local to its chunk)."""
    from alum.parallel import chunk_layer_range

    chunk = chunk_of(entry, num_layers, pp * virtual)
    name = entry.ours
    if entry.layer is not None:
        start, _ = chunk_layer_range(num_layers, chunk, pp * virtual)
        name = entry.param.ours.format(i=entry.layer - start)
    return chunk_prefix(chunk, pp, virtual) + name


def chunk_entries(cfg, chunks: int, chunk: int) -> List[Entry]:
    """The canonical entries model chunk ``chunk`` holds, in the model's order."""
    return [e for e in entries(cfg.family, cfg.num_layers)
            if chunk_of(e, cfg.num_layers, chunks) == chunk]


def stage_entries(cfg, pp: int, stage: int) -> List[Entry]:
    """The canonical entries pipeline stage ``stage`` holds (not interleaved)."""
    return chunk_entries(cfg, pp, stage)


def rank_names(cfg, pp: int, pp_rank: int, virtual: int = 1) -> List[Tuple[Entry, str]]:
    """(entry, local name) of every parameter pipeline rank ``pp_rank`` holds."""
    out = []
    for chunk in range(pp_rank, pp * virtual, pp):
        out += [(e, local_name(e, cfg.num_layers, pp, virtual))
                for e in chunk_entries(cfg, pp * virtual, chunk)]
    return out


def output_embedding_name(pp: int, virtual: int = 1) -> Optional[str]:
    """Name of the last chunk's copy of the tied word embedding (None when PP=1)."""
    if pp == 1:
        return None
    return chunk_prefix(pp * virtual - 1, pp, virtual) + OUTPUT_EMBEDDING


def word_embedding_entry(cfg) -> Entry:
    return next(entries(cfg.family, cfg.num_layers))


def shard_shape(entry: Entry, cfg, tp: int) -> Tuple[int, ...]:
    """Shape of one TP rank's piece of ``entry`` (vocabulary padded for ``tp``)."""
    shape = list(canonical_shape(entry, cfg))
    if entry.param.transform == "vocab":
        shape[0] = cfg.padded_vocab_size(tp)
    if entry.param.split is not None:
        shape[entry.param.split] //= tp
    return tuple(shape)


def shard(entry: Entry, tensor: torch.Tensor, cfg, tp: int) -> List[torch.Tensor]:
    """Canonical tensor -> its ``tp`` pieces (padded vocabulary; copies, contiguous)."""
    if entry.param.transform == "vocab":
        tensor = pad_vocab(tensor, cfg.padded_vocab_size(tp))
    if entry.param.split is None:
        return [tensor.clone() for _ in range(tp)]
    return [t.contiguous().clone() for t in torch.chunk(tensor, tp, dim=entry.param.split)]


def unshard(entry: Entry, pieces: List[torch.Tensor], cfg,
            keep_vocab_padding: bool = False) -> torch.Tensor:
    """The ``tp`` pieces -> the canonical tensor (vocabulary padding removed).

    A replicated parameter is taken from TP rank 0 (every rank holds the same copy).
    ``keep_vocab_padding`` keeps Megatron's padding rows of the pieces' TP size (the
    whole ``BertMLM`` tensor at TP=1, as ``alum.pretrain.consolidate`` returns it).
    """
    if entry.param.split is None:
        tensor = pieces[0]
    else:
        tensor = torch.cat(list(pieces), dim=entry.param.split)
    if entry.param.transform == "vocab" and not keep_vocab_padding:
        tensor = tensor[:cfg.vocab_size]
    return tensor


def check_shard_shape(entry: Entry, tensor, cfg, tp: int, where: str) -> None:
    """ConvertError naming the file and the tensor when a shard has an unexpected shape."""
    expected = shard_shape(entry, cfg, tp)
    got = tuple(tensor.shape)
    if got == expected:
        return
    why = ""
    if entry.param.transform == "vocab":
        why = (f" (vocabulary: ModelConfig.vocab_size={cfg.vocab_size} padded to a multiple of "
               f"make_vocab_size_divisible_by={cfg.make_vocab_size_divisible_by} x tp={tp} = "
               f"{cfg.padded_vocab_size(tp)} rows, split over {tp} rank(s))")
    raise ConvertError(f"{where}: {entry.ours} has shape {list(got)}, expected "
                       f"{list(expected)} for this model at tensor_parallel_size={tp}{why}")


class ShardWriter:
    """Consumes canonical tensors in the model's order and emits one state dict per rank.

    ``add(entry, tensor)`` shards the tensor into the current pipeline stage's TP
    ranks; when an entry of a later stage arrives, the finished stage's ``tp``
    state dicts are handed to ``emit(tp_rank, pp_rank, state)`` and dropped, so at
    most one stage is held. The last stage (``pp > 1``) also gets its copy of the
    word embedding, kept from the first entry.
    """

    def __init__(self, cfg, tp: int, pp: int, emit):
        self.cfg, self.tp, self.pp, self.emit = cfg, tp, pp, emit
        self.stage = 0
        self.states: List[Dict[str, torch.Tensor]] = [{} for _ in range(tp)]
        self.word_embedding: Optional[torch.Tensor] = None
        self.expected = [set(local_name(e, cfg.num_layers, pp) for e in stage_entries(cfg, pp, s))
                         for s in range(pp)]

    def add(self, entry: Entry, tensor: torch.Tensor) -> None:
        stage = stage_of(entry, self.cfg.num_layers, self.pp)
        while stage > self.stage:
            self._flush()
        if entry.ours == word_embedding_entry(self.cfg).ours and self.pp > 1:
            self.word_embedding = tensor
        name = local_name(entry, self.cfg.num_layers, self.pp)
        for state, piece in zip(self.states, shard(entry, tensor, self.cfg, self.tp)):
            state[name] = piece

    def _flush(self) -> None:
        missing = self.expected[self.stage] - set(self.states[0])
        if missing:
            raise ConvertError(f"pipeline stage {self.stage} lacks {sorted(missing)}")
        if self.stage == self.pp - 1 and self.pp > 1:
            if self.word_embedding is None:
                raise ConvertError("the word embedding never arrived (it comes first)")
            pieces = shard(word_embedding_entry(self.cfg), self.word_embedding, self.cfg, self.tp)
            for state, piece in zip(self.states, pieces):
                state[OUTPUT_EMBEDDING] = piece
        for tp_rank, state in enumerate(self.states):
            self.emit(tp_rank, self.stage, state)
        self.stage += 1
        self.states = [{} for _ in range(self.tp)]

    def close(self) -> None:
        """Emit the last stage (every stage must have been filled)."""
        while self.stage < self.pp:
            self._flush()


def canonical_from_ranks(cfg, pp: int, rank_states, virtual: int = 1,
                         keep_vocab_padding: bool = False
                         ) -> Iterator[Tuple[Entry, torch.Tensor]]:
    """(entry, canonical tensor) in the model's order from per-pipeline-rank shard readers.

    ``rank_states(pp_rank)`` returns that pipeline rank's ``tp`` state dicts (values may
    be lazy: anything with ``.contiguous()``, e.g. zero_to_fp32's gathered tensors).
    Chunks are read in the model's order, one at a time (an interleaved checkpoint asks
    for a rank again for each of its chunks). ``keep_vocab_padding``: see ``unshard``.
    """
    chunks = pp * virtual
    for chunk in range(chunks):
        states = rank_states(chunk % pp)
        for entry in chunk_entries(cfg, chunks, chunk):
            name = local_name(entry, cfg.num_layers, pp, virtual)
            pieces = [state[name].contiguous() for state in states]
            yield entry, unshard(entry, pieces, cfg, keep_vocab_padding)
        del states
