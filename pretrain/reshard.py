"""Resuming a run at another parallel layout, optimizer state included (docs/multinode.md).

A checkpoint saved at one TP x PP x DP layout under ZeRO-1/2 holds each data-parallel
rank's slice of the flat fp32 masters and Adam moments, and each tensor-parallel rank's
shard of the split parameters. DeepSpeed refuses to load it at another DP size
("Automatic adjustment of ZeRO's optimizer state partitioning with a new world size is
not currently supported"). Its *universal checkpoint* is the way across: its converter
(``deepspeed.checkpoint.ds_to_universal``) gathers every parameter's fp32 master, moments
and step from all ZeRO slices and merges the TP shards (concatenated along the
dimension the checkpoint's ``universal_checkpoint_info`` names for it); an engine built
with ``"checkpoint": {"load_universal": true}`` then takes its own slice of its own
shard of each. The LR schedule, the loop's client state (step, consumed samples,
skipped-ALUM count) come from the model-states file as in any resume; ALUM's curriculum
is a function of the step.

What is supported, and what is refused before any work (``LayoutChangeError``, one line
naming both layouts and the reason):

- DP, TP and PP changes (together too), ZeRO stage 1 or 2 on both sides. Under PP each
  stage names its layers from ``layers.0``, and the converter keys parameters by name:
  the files it reads are rewritten with global layer names (the last stage's copy of the
  tied word embedding left out: it equals the first stage's weight and Adam state), and
  each stage of the new layout loads through a view of links under its own local names;
- refused: the interleaved schedule (virtual pipeline size > 1) on either side, ZeRO
  stage 0 or 3 on either side, a TP change across which Megatron's vocabulary padding
  differs (the decoder bias's padding is one-dimensional, which the converter's
  vocabulary stripping does not handle), a TP change of a checkpoint that does not
  record its TP slicing.

The conversion runs on global rank 0 into ``<checkpoints>/universal/<tag>`` (written
under a temporary name and renamed when complete; reused if already there), every rank
loads from it, and it is removed once loaded. The source checkpoint is never changed.
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import io
import logging
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch.distributed as dist

from alum.checkpoint_tags import read_marker

logger = logging.getLogger("alum.pretrain")

UNIVERSAL_INFO_KEY = "universal_checkpoint_info"
"""DeepSpeed's key (``deepspeed.checkpoint.constants.UNIVERSAL_CHECKPOINT_INFO``) for the
TP slicing metadata in the client state, which its converter reads from the
model-states file."""

UNIVERSAL_DIR = "universal"
"""Sub-directory of ``checkpoints/`` that holds a converted tag while it is loaded."""


class LayoutChangeError(ValueError):
    """A checkpoint's layout cannot be resumed at this run's layout (the message says why)."""


@dataclass(frozen=True)
class Layout:
    """A run's parallel layout as far as its checkpoints are concerned."""

    tensor_parallel_size: int
    pipeline_parallel_size: int
    virtual_pipeline_size: int
    data_parallel_size: int
    zero_stage: int

    def describe(self) -> str:
        vp = (f" (virtual {self.virtual_pipeline_size})"
              if self.virtual_pipeline_size > 1 else "")
        return (f"TP={self.tensor_parallel_size} x PP={self.pipeline_parallel_size}{vp} x "
                f"DP={self.data_parallel_size}, ZeRO-{self.zero_stage}")


@dataclass(frozen=True)
class LayoutChange:
    """A resume that crosses layouts: which tag, from which layout to which."""

    load_dir: str
    tag: str
    saved: Layout
    current: Layout
    num_layers: int = 0
    """The model's layers (stage-local layer names <-> global ones under PP)."""

    @property
    def universal_root(self) -> str:
        return os.path.join(self.load_dir, UNIVERSAL_DIR)

    def describe(self) -> str:
        return (f"{os.path.join(self.load_dir, self.tag)} ({self.saved.describe()}) resumed at "
                f"{self.current.describe()}")

    def load_tag(self, stage: int) -> str:
        """The tag pipeline stage ``stage`` loads from ``universal_root``: the universal
        checkpoint itself at PP=1, else the stage's view of it (its local names)."""
        return self.tag if self.current.pipeline_parallel_size == 1 else f"{self.tag}.stage{stage}"


def universal_checkpoint_info(module) -> Dict[str, Any]:
    """DeepSpeed's TP slicing metadata for ``module``'s parameters, by exact name: the
    tensor-parallel ones split on dim 1 (row-parallel weights) and the replicated ones;
    every other parameter is split on dim 0 (column-parallel, vocabulary-parallel)."""
    from deepspeed.checkpoint.constants import (PARAMETER_WITH_ROW_PARALLELISM_PATTERNS,
                                                TP_REPLICATED_PARAMETER_PATTERNS,
                                                UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                                UNIVERSAL_CHECKPOINT_VERSION_VALUE)

    row, replicated = [], []
    for name, p in module.named_parameters():
        pattern = "^" + re.escape(name) + "$"
        if not getattr(p, "tensor_model_parallel", False):
            replicated.append(pattern)
        elif int(p.partition_dim) == 1:
            row.append(pattern)
    return {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE,
            TP_REPLICATED_PARAMETER_PATTERNS: replicated,
            PARAMETER_WITH_ROW_PARALLELISM_PATTERNS: row}


def saved_layout(load_dir: str, tag: str) -> Layout:
    """The layout that wrote ``tag``: TP/PP from its marker's identity, DP and the ZeRO
    stage from DeepSpeed's file names (one optimizer file per DP rank of model-parallel
    rank 0 under ZeRO-1/2; per-rank model files under ZeRO-3; none under stage 0)."""
    tag_dir = os.path.join(load_dir, tag)
    identity = (read_marker(load_dir, tag) or {}).get("identity") or {}
    optim = glob.glob(os.path.join(tag_dir, "*zero_pp_rank_*_mp_rank_00_optim_states.pt"))
    zero3_models = glob.glob(os.path.join(tag_dir, "zero_pp_rank_*_mp_rank_00_model_states.pt"))
    stage = 3 if zero3_models else (1 if optim else 0)
    return Layout(int(identity.get("tensor_parallel_size", 1)),
                  int(identity.get("pipeline_parallel_size", 1)),
                  int(identity.get("virtual_pipeline_size", 1)),
                  max(len(optim), 1), stage)


def refusal(saved: Layout, current: Layout, model_config: Optional[dict]) -> Optional[str]:
    """Why ``saved`` cannot be resumed at ``current`` (None when it can)."""
    if saved.virtual_pipeline_size > 1 or current.virtual_pipeline_size > 1:
        return ("the interleaved schedule (virtual pipeline size > 1) is not supported: its "
                "ranks hold several model chunks under chunks.<v>. names; reshape the weights "
                "with alum-convert reshape and start with --init-from")
    if max(saved.pipeline_parallel_size, current.pipeline_parallel_size) > 1 \
            and model_config is None:
        return "pipeline parallelism needs the megatron model"
    for side, layout in (("saved", saved), ("current", current)):
        if layout.zero_stage not in (1, 2):
            return (f"a layout change needs ZeRO stage 1 or 2 on both sides (the {side} "
                    f"run's is {layout.zero_stage}): DeepSpeed's universal checkpoint is "
                    f"converted from, and loaded into, ZeRO-1/2 optimizer slices here")
    if saved.tensor_parallel_size != current.tensor_parallel_size:
        if model_config is None:
            return "changing the tensor-parallel size needs the megatron model"
        from alum.models import ModelConfig

        mc = ModelConfig.from_dict(model_config)
        before = mc.padded_vocab_size(saved.tensor_parallel_size)
        after = mc.padded_vocab_size(current.tensor_parallel_size)
        if before != after:
            return (f"the padded vocabulary differs between the layouts ({before} rows at "
                    f"TP={saved.tensor_parallel_size}, {after} at "
                    f"TP={current.tensor_parallel_size}; vocab_size {mc.vocab_size}, "
                    f"make_vocab_size_divisible_by {mc.make_vocab_size_divisible_by})")
    return None


def plan_layout_change(load_dir: Optional[str], tag: Optional[str], current: Layout,
                       model_config: Optional[dict]) -> Optional[LayoutChange]:
    """The layout change a resume from ``load_dir``/``tag`` needs (None: same layout or
    nothing to resume); raises ``LayoutChangeError`` for a change that is not supported."""
    if load_dir is None or tag is None:
        return None
    saved = saved_layout(load_dir, tag)
    same = (saved.tensor_parallel_size, saved.pipeline_parallel_size,
            saved.virtual_pipeline_size, saved.data_parallel_size) == (
        current.tensor_parallel_size, current.pipeline_parallel_size,
        current.virtual_pipeline_size, current.data_parallel_size)
    if same:
        return None
    from .checkpoint import SHAPE_FIELDS, identity_mismatch

    saved_shape = ((read_marker(load_dir, tag) or {}).get("identity") or {}).get("model")
    shape = {k: v for k, v in (model_config or {}).items() if k in SHAPE_FIELDS} or None
    if saved_shape and shape and identity_mismatch(saved_shape, shape):
        return None  # another model: refused by the checkpoint's identity check, unconverted
    change = LayoutChange(load_dir, tag, saved, current,
                          int((model_config or {}).get("num_layers", 0)))
    why = refusal(saved, current, model_config)
    if why is None and saved.tensor_parallel_size != current.tensor_parallel_size \
            and not _records_tp_slicing(os.path.join(load_dir, tag)):
        why = ("the checkpoint does not record how its parameters are split across TP "
               "ranks (written before that was recorded); it can change DP only")
    if why:
        raise LayoutChangeError(f"cannot resume {change.describe()}: {why}")
    return change


def convert_to_universal(change: LayoutChange, model=None) -> str:
    """``ds_to_universal`` of the tag (global rank 0; the others wait); its directory.
    Under PP the first rank of each stage then links the stage's view (``model``: this
    rank's module)."""
    out = os.path.join(change.universal_root, change.tag)
    if _rank() == 0 and not os.path.isdir(out):
        from alum.parallel.internals import internal, require

        ds_to_universal = require(internal("deepspeed.checkpoint.ds_to_universal", "main"))

        os.makedirs(change.universal_root, exist_ok=True)
        tmp, source = out + ".converting", out + ".source"
        for stale in (tmp, source):
            shutil.rmtree(stale, ignore_errors=True)
        _converter_input(os.path.join(change.load_dir, change.tag), source, change.saved,
                         change.num_layers)
        args = argparse.Namespace(input_folder=source, output_folder=tmp,
                                  num_extract_workers=1, num_merge_workers=1,
                                  keep_temp_folder=False, strict=True,
                                  inject_missing_state=True)
        # The converter narrates every step and draws progress bars: kept out of the log.
        with contextlib.redirect_stdout(io.StringIO()), \
                contextlib.redirect_stderr(io.StringIO()):
            ds_to_universal(args)
        shutil.rmtree(source)
        os.replace(tmp, out)
    _barrier()
    if change.current.pipeline_parallel_size > 1:
        from megatron.core import parallel_state as ps

        if ps.get_tensor_model_parallel_rank() == 0 and ps.get_data_parallel_rank() == 0:
            _stage_view(change, ps.get_pipeline_model_parallel_rank(),
                        [name for name, _ in model.named_parameters()])
        _barrier()
    return out


def this_stage() -> int:
    """This rank's pipeline stage (for ``LayoutChange.load_tag``)."""
    from megatron.core import parallel_state as ps

    return ps.get_pipeline_model_parallel_rank()


def _records_tp_slicing(tag_dir: str) -> bool:
    import torch

    state = torch.load(os.path.join(tag_dir, "mp_rank_00_model_states.pt"), mmap=True,
                       map_location="cpu", weights_only=False)
    return bool(state.get(UNIVERSAL_INFO_KEY))


OUTPUT_COPY = "output_word_embeddings.embedding.weight"
"""The last stage's copy of the tied word embedding (PP > 1): equal to the first stage's
weight and Adam state (its gradient is summed over the embedding group), so it is left
out of the universal checkpoint and loaded from the word embedding's entry."""

WORD_EMBEDDING = "embeddings.word_embeddings.embedding.weight"


def global_name(name: str, stage: int, pp: int, num_layers: int) -> str:
    """A stage's parameter name with its layer index made global (``layers.<i>.``)."""
    from alum.parallel import chunk_layer_range

    match = re.match(r"layers\.(\d+)\.", name)
    if pp == 1 or match is None:
        return name
    start, _ = chunk_layer_range(num_layers, stage, pp)
    return f"layers.{int(match.group(1)) + start}." + name[match.end():]


def _converter_input(tag_dir: str, source: str, saved: Layout, num_layers: int) -> None:
    """What the converter reads: the tag's files as links, except the model-states files,
    rewritten without megatron's ``_extra_state`` entries (None, which the converter
    would save as fp32 weights), and, under PP, every name made global (each stage names
    its layers from 0, and the converter keys parameters by name) in the model-states
    and optimizer files, the last stage's embedding copy left out. A checkpoint written
    before the TP slicing metadata was recorded gets DeepSpeed's empty default
    (``inject_missing_state``: every parameter counts as split on dim 0, right at TP=1
    only: such a checkpoint may change DP only)."""
    from collections import OrderedDict

    import torch
    from deepspeed.checkpoint.constants import (OPTIMIZER_STATE_DICT, PARAM_SHAPES,
                                                PARAM_SLICE_MAPPINGS)

    pp, tp = saved.pipeline_parallel_size, saved.tensor_parallel_size

    def renamed(mapping, stage):
        return OrderedDict((global_name(k, stage, pp, num_layers), v)
                           for k, v in mapping.items() if k != OUTPUT_COPY)

    os.makedirs(source)
    for name in os.listdir(tag_dir):
        path = os.path.join(tag_dir, name)
        model = re.fullmatch(r"mp_rank_(\d+)_model_states\.pt", name)
        optim = re.fullmatch(r".*zero_pp_rank_\d+_mp_rank_(\d+)_optim_states\.pt", name)
        if model:
            state = torch.load(path, map_location="cpu", weights_only=False)
            stage = int(model.group(1)) // tp
            state["module"] = renamed({k: v for k, v in state["module"].items()
                                       if v is not None}, stage)
            if pp > 1:
                state[PARAM_SHAPES] = [renamed(group, stage) for group in state[PARAM_SHAPES]]
            torch.save(state, os.path.join(source, name))
        elif optim and pp > 1:
            state = torch.load(path, map_location="cpu", weights_only=False)
            stage = int(optim.group(1)) // tp
            optimizer = state[OPTIMIZER_STATE_DICT]
            optimizer[PARAM_SLICE_MAPPINGS] = [renamed(group, stage)
                                               for group in optimizer[PARAM_SLICE_MAPPINGS]]
            torch.save(state, os.path.join(source, name))
        else:
            os.symlink(os.path.abspath(path), os.path.join(source, name))


def _stage_view(change: LayoutChange, stage: int, local_names) -> None:
    """``<universal>/<tag>.stage<r>``: the universal checkpoint under stage ``r``'s local
    names (links), which is what the engine of that stage looks its parameters up by."""
    universal = os.path.abspath(os.path.join(change.universal_root, change.tag))
    view = os.path.join(change.universal_root, change.load_tag(stage))
    shutil.rmtree(view, ignore_errors=True)
    os.makedirs(os.path.join(view, "zero"))
    for name in os.listdir(universal):
        if name != "zero":
            os.symlink(os.path.join(universal, name), os.path.join(view, name))
    os.symlink(os.path.join(universal, "zero", "optimizer_state.pt"),
               os.path.join(view, "zero", "optimizer_state.pt"))
    pp = change.current.pipeline_parallel_size
    for local in local_names:
        target = WORD_EMBEDDING if local == OUTPUT_COPY else global_name(
            local, stage, pp, change.num_layers)
        os.symlink(os.path.join(universal, "zero", target), os.path.join(view, "zero", local))


def remove_universal(change: LayoutChange) -> None:
    """Drop the converted copy once every rank has loaded it."""
    _barrier()
    if _rank() == 0:
        for stage in range(change.current.pipeline_parallel_size):
            view = os.path.join(change.universal_root, change.load_tag(stage))
            shutil.rmtree(view, ignore_errors=True)
        shutil.rmtree(os.path.join(change.universal_root, change.tag), ignore_errors=True)
        with contextlib.suppress(OSError):  # the converter's own "latest" record
            os.remove(os.path.join(change.universal_root, "latest_universal"))
        with contextlib.suppress(OSError):
            os.rmdir(change.universal_root)


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def prepare_layout_change(cfg, ds_config: Dict[str, Any], data_parallel_size: int,
                          model) -> Optional[LayoutChange]:
    """Before DeepSpeed builds the engine: if this run will resume from a checkpoint of
    another layout, refuse it (``LayoutChangeError``) or convert it to a universal
    checkpoint and ask the engine to load that (``ds_config["checkpoint"]``)."""
    from .checkpoint import resume_choice
    from .ds_json import zero_stage
    from .model_builder import model_config_of

    ck, tc = cfg.checkpoint, cfg.train
    if ck.resume == "never":
        return None
    load_dir = os.path.join(ck.output_dir, "checkpoints") if ck.resume == "auto" else ck.resume
    if not os.path.isdir(load_dir):
        return None
    tag, _ = resume_choice(load_dir)
    current = Layout(tc.tensor_parallel_size, tc.pipeline_parallel_size,
                     tc.virtual_pipeline_size, data_parallel_size, zero_stage(ds_config))
    change = plan_layout_change(load_dir, tag, current, model_config_of(model))
    if change is not None:
        convert_to_universal(change, model)
        ds_config.setdefault("checkpoint", {})["load_universal"] = True
    return change
