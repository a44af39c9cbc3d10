"""Reading our checkpoints: the directories alum-pretrain, from-hf and reshape write.

The one reader of them: alum-convert's commands, ``--init-from`` and
``alum.pretrain.consolidate`` (one fp32 state dict of the whole model) all use it.

Accepted paths: a run directory (``OUTPUT/``, its ``checkpoints/latest`` is
used, or the newest complete tag when ``latest`` is unusable), its
``checkpoints/`` folder, or one tag directory (``.../global_stepN/``). The
tag holds DeepSpeed's files, one per model-parallel rank (``mp_rank_XX``, see
``sharding.mp_rank``):

* ZeRO 0/1/2: ``mp_rank_XX_model_states.pt`` (the module's weights, in the
  training dtype) and, for each data-parallel rank ``d``,
  ``[bf16_]zero_pp_rank_d_mp_rank_XX_optim_states.pt`` (a slice of the fp32
  master weights and the Adam moments);
* ZeRO-3: ``zero_pp_rank_d_mp_rank_XX_model_states.pt`` (the module with empty
  placeholders) and the optimizer files, which hold the only copy of the
  weights: the fp32 partitions.

Weights (``weights=``): ``module`` reads the module's tensors (mmapped, one
tensor paged in at a time); ``masters`` reconstructs the fp32 master weights
with DeepSpeed's own ``deepspeed.utils.zero_to_fp32`` over this rank's files
only (its lazy mode); ``auto`` takes the module when it holds full fp32
tensors (exact) and the masters otherwise (ZeRO-3, or bf16/fp16 training).

The architecture (``ModelConfig``) is read from the run's ``config.json``
(``model_config``, written by alum-pretrain and alum-convert) or, for runs
older than that record, rebuilt from the run's config and its tokenizer copy as
alum-pretrain builds it. The tensor/pipeline sizes come from DeepSpeed's
``checkpoint_parallel_dimensions`` in the model file, checked against the run
config; any disagreement, a missing file or a tensor of the wrong shape is a
``ConvertError`` naming the file.
"""
from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Dict, List, Optional, Tuple

import torch

from alum.checkpoint_tags import LATEST, MARKER, complete_tags, incomplete_reason

from .errors import ConvertError
from .hf_model import note
from .sharding import (canonical_from_ranks, check_layout, check_shard_shape, mp_rank,
                       output_embedding_name, rank_names)

WEIGHTS = ("auto", "module", "masters")
_OPTIM = re.compile(r"^(?:bf16_|fp16_)?zero_pp_rank_(\d+)_mp_rank_(\d+)_optim_states\.pt$")
_ZERO3_MODEL = re.compile(r"^zero_pp_rank_(\d+)_mp_rank_(\d+)_model_states\.pt$")
_PLAIN_MODEL = re.compile(r"^mp_rank_(\d+)_model_states\.pt$")


def _torch_load(path: str) -> Dict[str, Any]:
    """A DeepSpeed file, mmapped (tensors are read when touched); DeepSpeed pickles
    configs and enums, so ``weights_only`` cannot be used: read only trusted files."""
    try:
        return torch.load(path, map_location="cpu", mmap=True, weights_only=False)
    except Exception as err:  # a truncated or foreign file
        raise ConvertError(f"{path}: cannot be read as a checkpoint file ({err})") from None


def find_tag_dir(path: str, tag: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(tag directory, run directory or None) for a run, checkpoints or tag path."""
    path = os.path.abspath(path)
    if not os.path.isdir(path):
        raise ConvertError(f"{path}: no such checkpoint directory")
    if glob.glob(os.path.join(path, "*_model_states.pt")):
        if tag is not None:
            raise ConvertError(f"{path} is already a tag directory; drop --tag {tag}")
        parent = os.path.dirname(path)
        run = os.path.dirname(parent)
        reason = incomplete_reason(parent, os.path.basename(path)) \
            if os.path.isfile(os.path.join(path, MARKER)) else None
        if reason is not None:
            raise ConvertError(f"{path} is incomplete: {reason}")
        return path, run if os.path.isfile(os.path.join(run, "config.json")) else None
    run = None
    save_dir = path
    if os.path.isdir(os.path.join(path, "checkpoints")):
        run, save_dir = path, os.path.join(path, "checkpoints")
    elif os.path.isfile(os.path.join(os.path.dirname(path), "config.json")):
        run = os.path.dirname(path)
    if tag is None:
        tag = _latest_complete_tag(save_dir)
    tag_dir = os.path.join(save_dir, tag)
    if not os.path.isdir(tag_dir):
        raise ConvertError(f"{tag_dir}: no such checkpoint tag")
    if os.path.isfile(os.path.join(tag_dir, MARKER)):
        reason = incomplete_reason(save_dir, tag)
        if reason is not None:
            raise ConvertError(f"{tag_dir} is incomplete: {reason}")
    return tag_dir, run


def _latest_complete_tag(save_dir: str) -> str:
    """The tag ``latest`` names if complete, else the newest complete one (said on stderr)."""
    latest = os.path.join(save_dir, LATEST)
    named = open(latest).read().strip() if os.path.isfile(latest) else ""
    reason = incomplete_reason(save_dir, named) if named else "there is no 'latest' file"
    if reason is None:
        return named
    complete = complete_tags(save_dir)
    if not complete:
        where = os.path.join(save_dir, named) if named else save_dir
        raise ConvertError(f"{where}: no complete checkpoint ({reason})")
    note(f"{latest}: {reason}; using the newest complete checkpoint {complete[-1][1]}")
    return complete[-1][1]


def _read_json(path: str) -> Dict[str, Any]:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConvertError(f"{path}: unreadable ({err})") from None


def _model_config_from_run(record: Dict[str, Any], tokenizer_dir: Optional[str], where: str):
    """ModelConfig of a run that did not record it: rebuilt as alum-pretrain builds it."""
    from alum.models.run_config import megatron_model_config

    pretrain = record.get("pretrain") or record.get("config")
    if not pretrain:
        raise ConvertError(f"{where}: no model_config and no pre-training config to rebuild "
                           f"the architecture from")
    if pretrain["model"].get("model_kind", "megatron") != "megatron":
        raise ConvertError(f"{where}: model_kind={pretrain['model']['model_kind']!r}; that run "
                           f"trained a Hugging Face model (its --export-hf output is already "
                           f"in HF format)")
    if tokenizer_dir is None:
        raise ConvertError(f"{where}: the vocabulary size is needed from the run's tokenizer "
                           f"copy (OUTPUT/tokenizer), which is missing")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    try:
        return megatron_model_config(SimpleNamespace(**pretrain["model"]), len(tok),
                                     tok.pad_token_id, int(pretrain["data"]["seq_length"]))
    except (AttributeError, KeyError, TypeError, ValueError) as err:
        raise ConvertError(f"{where}: the run's model choice cannot be rebuilt "
                           f"({type(err).__name__}: {err})") from None


@dataclass
class OurCheckpoint:
    """One tag of one of our checkpoints (``OurCheckpoint.open``)."""

    tag_dir: str
    run_dir: Optional[str]
    model_config: Any
    """alum.models.ModelConfig of the checkpointed model."""
    tp: int
    pp: int
    zero_stage: int
    dp: int
    """Data-parallel size the optimizer files were written with."""
    tokenizer_dir: Optional[str]
    step: Optional[int]
    virtual: int = 1
    """Model chunks per pipeline rank (interleaved schedule: ``chunks.<v>.`` names)."""
    weights_only: bool = False
    """Written by alum-convert (no DeepSpeed engine, no optimizer state)."""

    # -- opening -----------------------------------------------------------------
    @classmethod
    def open(cls, path: str, tag: Optional[str] = None) -> "OurCheckpoint":
        from alum.models import ModelConfig

        tag_dir, run_dir = find_tag_dir(path, tag)
        names = os.listdir(tag_dir)
        zero3 = sorted(n for n in names if _ZERO3_MODEL.match(n))
        plain = sorted(n for n in names if _PLAIN_MODEL.match(n))
        if not zero3 and not plain:
            raise ConvertError(f"{tag_dir}: no *_model_states.pt file")
        first = os.path.join(tag_dir, zero3[0] if zero3 else plain[0])
        head = _torch_load(first)
        record = {}
        if run_dir is not None and os.path.isfile(os.path.join(run_dir, "config.json")):
            record = _read_json(os.path.join(run_dir, "config.json"))
        tokenizer_dir = None
        for candidate in ([os.path.join(run_dir, "tokenizer")] if run_dir else []) + \
                [head.get("tokenizer_copy"), head.get("tokenizer")]:
            if candidate and os.path.isdir(candidate):
                tokenizer_dir = candidate
                break
        where = os.path.join(run_dir, "config.json") if record else first
        if record.get("model_config"):
            try:
                model_config = ModelConfig.from_dict(record["model_config"])
            except (TypeError, ValueError) as err:
                raise ConvertError(f"{where}: model_config: {err}") from None
        else:
            model_config = _model_config_from_run(record or head, tokenizer_dir, where)
        tp, pp = cls._layout(head, record, first)
        stage = 3 if zero3 else int(((head.get("ds_config") or {}).get("zero_optimization")
                                     or {}).get("stage", 0))
        dp = int(head.get("dp_world_size") or 1)
        step = head.get("step", head.get("global_steps"))
        train = (record.get("pretrain") or head.get("config") or {}).get("train") or {}
        virtual = int(train.get("virtual_pipeline_size") or 1)
        check_layout(model_config, tp, pp * virtual)
        ckpt = cls(tag_dir, run_dir, model_config, tp, pp, stage, dp, tokenizer_dir,
                   None if step is None else int(step), virtual, "ds_config" not in head)
        ckpt._check_files(names)
        return ckpt

    @staticmethod
    def _layout(head: Dict[str, Any], record: Dict[str, Any], first: str) -> Tuple[int, int]:
        dims = head.get("checkpoint_parallel_dimensions") or {}
        from_file = (dims.get("tp_degree"), dims.get("pp_degree"))
        train = (record.get("pretrain") or {}).get("train") or record.get("parallel") or {}
        from_record = (train.get("tensor_parallel_size"), train.get("pipeline_parallel_size"))
        for i, field in enumerate(("tensor_parallel_size", "pipeline_parallel_size")):
            if None not in (from_file[i], from_record[i]) and from_file[i] != from_record[i]:
                raise ConvertError(
                    f"mismatched {field}: the run's config.json says {from_record[i]} but "
                    f"{first} was written at {from_file[i]} "
                    f"(checkpoint_parallel_dimensions)")
        tp = from_file[0] or from_record[0] or 1
        pp = from_file[1] or from_record[1] or 1
        mp = head.get("mp_world_size")
        if mp is not None and int(mp) != tp * pp:
            raise ConvertError(f"{first}: mp_world_size={mp} but tensor_parallel_size={tp} x "
                               f"pipeline_parallel_size={pp} = {tp * pp}")
        return int(tp), int(pp)

    def _check_files(self, names: List[str]) -> None:
        """Every model-parallel rank's model file (and ZeRO-3's optimizer files) exists."""
        present = set(names)
        for mp in range(self.tp * self.pp):
            for path in self.model_files(mp):
                if os.path.basename(path) not in present:
                    raise ConvertError(f"missing shard {path} (a tensor_parallel_size="
                                       f"{self.tp} x pipeline_parallel_size={self.pp} "
                                       f"checkpoint has {self.tp * self.pp} model-parallel ranks)")
            if self.zero_stage == 3:
                self.optim_files(mp)
        extra = sorted(n for n in names if (_PLAIN_MODEL.match(n) or _ZERO3_MODEL.match(n))
                       and int((_PLAIN_MODEL.match(n) or _ZERO3_MODEL.match(n)).groups()[-1])
                       >= self.tp * self.pp)
        if extra:
            raise ConvertError(f"mismatched tensor_parallel_size: {self.tag_dir} holds "
                               f"{extra[0]}, beyond the {self.tp * self.pp} model-parallel ranks "
                               f"of tp={self.tp} x pp={self.pp}")

    # -- files -------------------------------------------------------------------
    def model_files(self, mp: int) -> List[str]:
        if self.zero_stage == 3:
            return [os.path.join(self.tag_dir, f"zero_pp_rank_{d}_mp_rank_{mp:02d}_model_states.pt")
                    for d in range(self.dp)]
        return [os.path.join(self.tag_dir, f"mp_rank_{mp:02d}_model_states.pt")]

    def optim_files(self, mp: int) -> List[str]:
        """This model-parallel rank's optimizer files, one per data-parallel rank."""
        found: Dict[int, str] = {}
        for name in os.listdir(self.tag_dir):
            match = _OPTIM.match(name)
            if match and int(match.group(2)) == mp:
                found[int(match.group(1))] = os.path.join(self.tag_dir, name)
        missing = [d for d in range(self.dp) if d not in found]
        if missing:
            raise ConvertError(f"missing shard {self.tag_dir}/zero_pp_rank_{missing[0]}_mp_rank_"
                               f"{mp:02d}_optim_states.pt (the fp32 master weights; the run had "
                               f"{self.dp} data-parallel ranks)")
        return [found[d] for d in range(self.dp)]

    # -- weights -----------------------------------------------------------------
    def rank_state(self, tp_rank: int, pp_rank: int, weights: str = "auto") -> Dict[str, Any]:
        """The (tp_rank, pp_rank) shard's parameters, checked; values may be lazy.

        Values are tensors or zero_to_fp32's gathered tensors: call ``.contiguous()``.
        """
        if weights not in WEIGHTS:
            raise ConvertError(f"weights={weights!r}: choose one of {WEIGHTS}")
        mp = mp_rank(tp_rank, pp_rank, self.tp)
        model_file = self.model_files(mp)[0]
        partitioned = self.zero_stage > 0 or any(
            (m := _OPTIM.match(n)) and int(m.group(2)) == mp for n in os.listdir(self.tag_dir))
        if weights == "auto":
            weights = "module" if (self._module_is_full_fp32(model_file)
                                   or not partitioned) else "masters"
            if not partitioned and not self._module_is_full_fp32(model_file):
                note(f"{model_file}: ZeRO stage 0 keeps no named fp32 master copy (DeepSpeed "
                     f"stores it as unnamed groups in the model file); reading the module's "
                     f"16-bit weights")
        if weights == "masters" and not partitioned:
            raise ConvertError(f"{model_file}: no fp32 master weights to read (ZeRO stage 0 "
                               f"stores them unnamed in optimizer.fp32_groups, or the "
                               f"checkpoint has no optimizer); use --weights module")
        if weights == "module":
            state = self._module_state(model_file)
            where = model_file
        else:
            state = self._master_state(mp)
            where = f"the fp32 master weights of {os.path.basename(model_file)}"
        self._check_state(state, pp_rank, where)
        return state

    def stage_states(self, pp_rank: int, weights: str = "auto") -> List[Dict[str, Any]]:
        return [self.rank_state(t, pp_rank, weights) for t in range(self.tp)]

    def canonical(self, weights: str = "auto", keep_vocab_padding: bool = False):
        """(entry, canonical tensor) for every parameter, one pipeline stage read at a time.

        ``keep_vocab_padding``: the vocabulary tensors keep the padding rows of this
        checkpoint's TP size (``sharding.unshard``), as ``alum.pretrain.consolidate``
        returns them."""
        return canonical_from_ranks(self.model_config, self.pp,
                                    lambda rank: self.stage_states(rank, weights), self.virtual,
                                    keep_vocab_padding)

    def _module_is_full_fp32(self, model_file: str) -> bool:
        if self.zero_stage == 3:
            return False
        module = _torch_load(model_file).get("module") or {}
        tensors = [v for v in module.values() if torch.is_tensor(v) and v.is_floating_point()]
        return bool(tensors) and all(t.dtype == torch.float32 and t.numel() > 0 for t in tensors)

    def _module_state(self, model_file: str) -> Dict[str, Any]:
        module = _torch_load(model_file).get("module")
        if not isinstance(module, dict):
            raise ConvertError(f"{model_file}: no 'module' state dict")
        state = {k: v for k, v in module.items() if torch.is_tensor(v)}
        if any(v.numel() == 0 for v in state.values()):
            raise ConvertError(f"{model_file}: the module's tensors are ZeRO-3 placeholders; "
                               f"read the fp32 master weights instead (--weights masters)")
        return state

    def _master_state(self, mp: int) -> Dict[str, Any]:
        """zero_to_fp32 (lazy mode) over this model-parallel rank's files only.

        DeepSpeed's reader globs every ``*_model_states.pt``/``*_optim_states.pt`` of a
        tag and expects one model-parallel rank: give it a folder of links to this
        rank's files. Its progress messages go to stderr.
        """
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        files = self.model_files(mp) + self.optim_files(mp)
        for path in files:
            if not os.path.isfile(path):
                raise ConvertError(f"missing shard {path}")
        scratch = tempfile.mkdtemp(prefix="alum_convert_")
        try:
            os.makedirs(os.path.join(scratch, "tag"))
            for path in files:
                os.symlink(path, os.path.join(scratch, "tag", os.path.basename(path)))
            with contextlib.redirect_stdout(sys.stderr):
                try:
                    state = get_fp32_state_dict_from_zero_checkpoint(scratch, tag="tag",
                                                                     lazy_mode=True)
                except (ValueError, KeyError, FileNotFoundError) as err:
                    raise ConvertError(f"{self.tag_dir} (model-parallel rank {mp}): DeepSpeed's "
                                       f"zero_to_fp32 cannot rebuild the fp32 weights: "
                                       f"{err}") from None
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return dict(state)

    def _check_state(self, state: Dict[str, Any], pp_rank: int, where: str) -> None:
        cfg = self.model_config
        for entry, name in rank_names(cfg, self.pp, pp_rank, self.virtual):
            if name not in state:
                raise ConvertError(f"{where}: no tensor {name!r} (expected on pipeline stage "
                                   f"{pp_rank} of {self.pp})")
            check_shard_shape(entry, state[name], cfg, self.tp, where)
        copy = output_embedding_name(self.pp, self.virtual)
        if copy and pp_rank == self.pp - 1 and copy not in state:
            raise ConvertError(f"{where}: no {copy} on the last pipeline stage")

    def describe(self) -> str:
        cfg = self.model_config
        return (f"{self.tag_dir}: {cfg.family}, hidden {cfg.hidden_size}, {cfg.num_layers} "
                f"layers, {cfg.num_attention_heads} heads, vocab {cfg.vocab_size}, "
                f"TP={self.tp} x PP={self.pp}"
                + (f" (interleaved, {self.virtual} chunks per stage)" if self.virtual > 1 else "")
                + ", "
                + ("model weights only" if self.weights_only else f"ZeRO stage {self.zero_stage}")
                + (f", step {self.step}" if self.step is not None else ""))


def materialize(state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Lazy values -> plain tensors (for ``load_state_dict``)."""
    return {k: v.contiguous() for k, v in state.items()}
