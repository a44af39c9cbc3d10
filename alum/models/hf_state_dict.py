"""The one state-dict adapter between our BERT/RoBERTa (``BertMLM``) and Hugging Face's.

The name map and its transforms, both ways: ``canonical_to_hf`` / ``hf_to_canonical``
per parameter, ``to_hf_state_dict`` for a whole model. alum-convert (to-hf,
from-hf, reshape), its checkpoint reader behind ``alum-pretrain --init-from`` and
``alum.pretrain.consolidate``, and the tests comparing ``BertMLM`` with
transformers' models all go through this table; bump ``NAME_MAP_VERSION``
whenever a row or a transform changes (it is recorded in every converted
directory, so an old conversion can be told apart).

Three forms of a parameter appear:

* **canonical**: ours, unsplit, with *global* layer indices and the vocabulary
  *unpadded* (exactly ``vocab_size`` rows): what ``alum.models.BertMLM`` holds at
  TP=1, PP=1 minus Megatron's padding rows;
* **shard**: one tensor/pipeline rank's piece (``alum.tools.convert.sharding``):
  layer indices local to the stage, the vocabulary padded to a multiple of
  ``make_vocab_size_divisible_by × tp`` and split;
* **HF**: ``BertForMaskedLM`` / ``RobertaForMaskedLM`` names and layouts.

Transforms (canonical <-> HF), one per ``Param.transform``:

``copy``
    the same tensor.
``qkv``
    our attention input projection is one fused ColumnParallelLinear whose output
    rows are in megatron's per-head layout ``[heads, (q, k, v), head_dim]`` (so a
    TP slice of the rows holds whole heads); HF has separate ``query``/``key``/
    ``value`` of ``[heads * head_dim]`` rows each. Export: view the rows as
    ``[heads, 3, head_dim]`` and take index 0/1/2; import: interleave per head.
``vocab``
    word embedding rows and the decoder bias: canonical has ``vocab_size`` rows.
    Megatron's padding for TP divisibility is removed when reading a shard and
    added (zeros, as ``alum.models.bert.vocab_init`` initialises it) when
    writing one, so it never reaches HF.

Tying: the MLM decoder reuses the word embedding (and ``cls.predictions.bias`` /
``lm_head.bias`` is the decoder's bias). HF's ``save_pretrained`` writes each tied
pair once; so do we, and on import a ``*.decoder.weight``/``*.decoder.bias``
present in the file must equal its tied source (an untied decoder is refused).
Under pipeline parallelism the last stage holds its own copy of the word
embedding (``output_word_embeddings``); export reads the first stage's, import
writes both.

RoBERTa's positions start at ``padding_idx + 1`` in both implementations
(``alum.models.bert.roberta_position_ids`` equals HF's
``create_position_ids_from_input_ids``), so the position table is copied row for
row: rows ``0 .. padding_idx`` are HF's unused ones and stay where they are, and
``pad_token_id`` must be carried over unchanged (it is part of ``ModelConfig``).

Tensor-parallel splits (``Param.split``), as megatron-core's layers hold them:
``VocabParallelEmbedding`` and ``ColumnParallelLinear`` (weight and bias) split
dim 0, ``RowParallelLinear`` splits its weight on dim 1 and keeps its bias whole,
LayerNorms, position/type embeddings and the MLM head's dense layer are
replicated (``None``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch

NAME_MAP_VERSION = 1
"""Version of the table and transforms below (recorded in converted checkpoints)."""


@dataclass(frozen=True)
class Param:
    """One of our parameters and the HF parameter(s) it corresponds to."""

    ours: str
    """Canonical name; ``{i}`` is the global layer index."""
    hf: Tuple[str, ...]
    """HF name templates (three for ``qkv``): ``{base}``, ``{i}`` and the head's names."""
    transform: str
    """``copy``, ``qkv`` or ``vocab`` (module docstring)."""
    split: Optional[int]
    """Dimension split across tensor-parallel ranks; None: replicated."""
    block: str
    """``embeddings`` (first pipeline stage), ``layer`` or ``head`` (last stage)."""
    shape: Tuple[str, ...]
    """Canonical shape in ``ModelConfig`` terms: V vocab_size, P max_position_embeddings,
    T type_vocab_size, h hidden_size, f ffn_hidden_size, 3h three times hidden_size."""


# HF's names that differ between the families.
FAMILY_NAMES: Dict[str, Dict[str, str]] = {
    "bert": dict(base="bert", head_dense="cls.predictions.transform.dense",
                 head_norm="cls.predictions.transform.LayerNorm",
                 head_bias="cls.predictions.bias", decoder="cls.predictions.decoder"),
    "roberta": dict(base="roberta", head_dense="lm_head.dense",
                    head_norm="lm_head.layer_norm", head_bias="lm_head.bias",
                    decoder="lm_head.decoder"),
}

HF_ARCHITECTURES = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}


def _linear(ours: str, hf: str, out: str, inp: str, block: str = "layer",
            split_w: Optional[int] = None, split_b: Optional[int] = None) -> List[Param]:
    return [Param(f"{ours}.weight", (f"{hf}.weight",), "copy", split_w, block, (out, inp)),
            Param(f"{ours}.bias", (f"{hf}.bias",), "copy", split_b, block, (out,))]


def _norm(ours: str, hf: str, block: str = "layer") -> List[Param]:
    return [Param(f"{ours}.{p}", (f"{hf}.{p}",), "copy", None, block, ("h",))
            for p in ("weight", "bias")]


_L = "layers.{i}."
_HF_L = "{base}.encoder.layer.{i}."
_QKV = ("query", "key", "value")

PARAMS: Tuple[Param, ...] = tuple(
    [Param("embeddings.word_embeddings.embedding.weight",
           ("{base}.embeddings.word_embeddings.weight",), "vocab", 0, "embeddings", ("V", "h")),
     Param("embeddings.position_embeddings.weight",
           ("{base}.embeddings.position_embeddings.weight",), "copy", None, "embeddings",
           ("P", "h")),
     Param("embeddings.token_type_embeddings.weight",
           ("{base}.embeddings.token_type_embeddings.weight",), "copy", None, "embeddings",
           ("T", "h"))]
    + _norm("embeddings.layer_norm", "{base}.embeddings.LayerNorm", "embeddings")
    + [Param(_L + "attention.qkv.linear.weight",
             tuple(_HF_L + f"attention.self.{n}.weight" for n in _QKV), "qkv", 0, "layer",
             ("3h", "h")),
       Param(_L + "attention.qkv.linear.bias",
             tuple(_HF_L + f"attention.self.{n}.bias" for n in _QKV), "qkv", 0, "layer",
             ("3h",))]
    + _linear(_L + "attention.out.linear", _HF_L + "attention.output.dense", "h", "h",
              split_w=1)
    + _norm(_L + "attention_norm", _HF_L + "attention.output.LayerNorm")
    + _linear(_L + "ffn_in.linear", _HF_L + "intermediate.dense", "f", "h",
              split_w=0, split_b=0)
    + _linear(_L + "ffn_out.linear", _HF_L + "output.dense", "h", "f", split_w=1)
    + _norm(_L + "ffn_norm", _HF_L + "output.LayerNorm")
    + _linear("head.dense", "{head_dense}", "h", "h", block="head")
    + _norm("head.layer_norm", "{head_norm}", block="head")
    + [Param("head.decoder.linear.bias", ("{head_bias}",), "vocab", 0, "head", ("V",))])
"""Every parameter of the model, in the order the model declares them."""

OUTPUT_EMBEDDING = "output_word_embeddings.embedding.weight"
"""The last pipeline stage's copy of the tied word embedding (shard form only)."""


def tied_hf_names(family: str) -> Dict[str, str]:
    """HF's tied names -> their source (written once by ``save_pretrained``)."""
    n = FAMILY_NAMES[family]
    return {f"{n['decoder']}.weight": f"{n['base']}.embeddings.word_embeddings.weight",
            f"{n['decoder']}.bias": n["head_bias"]}


def _fill(template: str, family: str, layer) -> str:
    return template.format(i=layer, **FAMILY_NAMES[family])


@dataclass(frozen=True)
class Entry:
    """One parameter of a concrete model: a row of ``PARAMS`` with the names filled in."""

    param: Param
    ours: str
    """Canonical name (global layer index)."""
    hf: Tuple[str, ...]
    layer: Optional[int]
    """Global layer index, None outside the encoder layers."""


def entries(family: str, num_layers: int) -> Iterator[Entry]:
    """Every parameter of a model with ``num_layers`` layers, in the model's order:
    the embeddings, layer 0's parameters, layer 1's, ..., the head."""
    def block(name: str, i: Optional[int] = None) -> Iterator[Entry]:
        for p in PARAMS:
            if p.block == name:
                yield Entry(p, p.ours.format(i=i), tuple(_fill(t, family, i) for t in p.hf), i)

    yield from block("embeddings")
    for i in range(num_layers):
        yield from block("layer", i)
    yield from block("head")


def canonical_shape(entry: Entry, cfg) -> Tuple[int, ...]:
    """Shape of ``entry``'s canonical tensor for the ``ModelConfig`` ``cfg``."""
    sizes = {"V": cfg.vocab_size, "P": cfg.max_position_embeddings, "T": cfg.type_vocab_size,
             "h": cfg.hidden_size, "f": cfg.ffn_hidden_size, "3h": 3 * cfg.hidden_size}
    return tuple(sizes[s] for s in entry.param.shape)


def hf_shapes(entry: Entry, cfg) -> List[Tuple[int, ...]]:
    """Shapes of the HF tensor(s) of ``entry``."""
    shape = canonical_shape(entry, cfg)
    if entry.param.transform == "qkv":
        return [(shape[0] // 3,) + shape[1:]] * 3
    return [shape]


# -- transforms ------------------------------------------------------------------
def split_qkv(fused: torch.Tensor, num_heads: int) -> List[torch.Tensor]:
    """Fused per-head ``[heads*(q,k,v)*head_dim, ...]`` rows -> [query, key, value]."""
    rows = fused.shape[0]
    head_dim = rows // (3 * num_heads)
    per_head = fused.reshape(num_heads, 3, head_dim, *fused.shape[1:])
    return [per_head[:, j].reshape(rows // 3, *fused.shape[1:]) for j in range(3)]


def merge_qkv(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
              num_heads: int) -> torch.Tensor:
    """HF query/key/value -> the fused per-head layout (inverse of ``split_qkv``)."""
    rows = query.shape[0]
    head_dim = rows // num_heads
    parts = [t.reshape(num_heads, head_dim, *t.shape[1:]) for t in (query, key, value)]
    return torch.stack(parts, dim=1).reshape(3 * rows, *query.shape[1:])


def canonical_to_hf(entry: Entry, tensor: torch.Tensor, cfg) -> List[torch.Tensor]:
    """Our canonical tensor -> its HF tensor(s), in ``entry.hf``'s order."""
    if entry.param.transform == "qkv":
        return split_qkv(tensor, cfg.num_attention_heads)
    return [tensor]


def hf_to_canonical(entry: Entry, tensors: List[torch.Tensor], cfg) -> torch.Tensor:
    """HF tensor(s) (in ``entry.hf``'s order) -> our canonical tensor."""
    if entry.param.transform == "qkv":
        return merge_qkv(*tensors, num_heads=cfg.num_attention_heads)
    (tensor,) = tensors
    return tensor


def pad_vocab(tensor: torch.Tensor, padded_rows: int) -> torch.Tensor:
    """Append zero rows up to Megatron's padded vocabulary (shard form)."""
    extra = padded_rows - tensor.shape[0]
    if extra < 0:
        raise ValueError(f"cannot pad {tensor.shape[0]} vocabulary rows to {padded_rows}")
    if extra == 0:
        return tensor
    return torch.cat([tensor, tensor.new_zeros((extra,) + tuple(tensor.shape[1:]))])


def to_hf_state_dict(canonical: Dict[str, torch.Tensor], cfg) -> Dict[str, torch.Tensor]:
    """A whole canonical state dict -> HF's (tied weights once, as ``save_pretrained``)."""
    out: Dict[str, torch.Tensor] = {}
    for entry in entries(cfg.family, cfg.num_layers):
        for name, tensor in zip(entry.hf, canonical_to_hf(entry, canonical[entry.ours], cfg)):
            out[name] = tensor
    return out


def markdown_table() -> str:
    """The map as a markdown table (docs/convert.md): ``{base}`` is ``bert``/``roberta``."""
    split = {None: "replicated", 0: "dim 0", 1: "dim 1"}
    rows = ["| ours (canonical) | Hugging Face | transform | TP split |", "|---|---|---|---|"]
    for p in PARAMS:
        names = {family: [_fill(t, family, "{i}").replace(f"{family}.", "{base}.", 1)
                          for t in p.hf] for family in FAMILY_NAMES}
        if names["bert"] == names["roberta"]:
            hf = ", ".join(f"`{n}`" for n in names["bert"])
        else:
            hf = "; ".join(f"{family}: " + ", ".join(f"`{n}`" for n in names[family])
                           for family in FAMILY_NAMES)
        rows.append(f"| `{p.ours}` | {hf} | {p.transform} | {split[p.split]} |")
    return "\n".join(rows)
