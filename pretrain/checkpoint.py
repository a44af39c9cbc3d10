"""Crash-safe DeepSpeed checkpoints with the training loop's state, and keep-last-N.

DeepSpeed's ``save_checkpoint`` writes the ``latest`` file after its own files
but before the closing barrier, with a plain ``open(..., "w")``: with several
data-parallel ranks, ``latest`` can name a tag whose other shards are still
being written, and a crash during that write leaves an empty ``latest``. So we
save with ``save_latest=False`` and, after every rank has finished (barrier),
rank 0 declares the tag complete (``alum.checkpoint_tags.mark_complete``: a
marker with every file's size, then ``latest``, both written atomically).

On resume every file of the chosen tag is checked against the checksum its
marker recorded. ``latest`` naming a missing, incomplete or damaged tag (a crash
between the two writes, a truncated file, bytes overwritten in place, a
half-deleted directory) is answered with a warning naming the fault and the newest
complete tag. When checkpoints exist and none is usable the run refuses
(``DamagedCheckpointsError``, listing each tag and its fault) unless told to start
fresh (``on_damaged="start-fresh"``), which first moves them to
``checkpoints/damaged/``. Damaged tags are never deleted or overwritten: a save at
the step of one, or pruning, moves it to ``damaged/`` instead; only unfinished
saves (no marker) are removed as debris.

A checkpoint written by another model shape or parallel layout (the marker records
the writer's ``identity``) is refused in one line naming the difference; a failed
save (a full disk above all) is one line naming the path, the space needed and the
space free, and leaves the previous checkpoint and ``latest`` as they were.

Per-rank RNG states (python, numpy, torch CPU/CUDA, megatron's tracker) go into
``<tag>/rng_state_rank<k>.pt``; the loop's own state (step, consumed samples,
config, tokenizer) goes into DeepSpeed's ``client_state``.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist

from alum.checkpoint_tags import (LATEST, MARKER, all_tags, complete_tags, incomplete_reason,
                                  mark_complete, read_marker, set_aside, step_of_tag,
                                  tag_for_step)
from alum.output_errors import OutputError, describe_output_error

logger = logging.getLogger("alum.pretrain")


def _rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


# -- RNG -----------------------------------------------------------------------
def capture_rng_state() -> Dict[str, Any]:
    """Every generator the loop draws from (dropout, ALUM's random start, data helpers)."""
    state: Dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                             "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    tracker = _megatron_tracker()
    if tracker is not None:
        state["megatron_tracker"] = _copy_states(tracker.get_states())
    return state


def _copy_states(states: Dict[str, Any]) -> Dict[str, Any]:
    """Megatron's tracker hands out, and keeps, its own dict of states and rewrites it at
    every fork: a saved state must hold copies, and so must the dict it is given back."""
    return {name: value.clone() for name, value in states.items()}


def restore_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    tracker = _megatron_tracker()
    if tracker is not None and "megatron_tracker" in state:
        tracker.set_states(_copy_states(state["megatron_tracker"]))


def _megatron_tracker():
    try:
        from megatron.core.tensor_parallel.random import get_cuda_rng_tracker
    except ImportError:  # pragma: no cover
        return None
    tracker = get_cuda_rng_tracker()
    return tracker if tracker.is_initialized() else None


# -- resume ----------------------------------------------------------------------
ON_DAMAGED = ("refuse", "start-fresh")


class DamagedCheckpointsError(ValueError):
    """Checkpoints exist and none is usable; the message lists each one and its fault."""


class CheckpointMismatchError(ValueError):
    """The checkpoint was written by another model shape or parallel layout."""


def any_checkpoint(save_dir: str) -> bool:
    """Whether ``save_dir`` holds checkpoint directories or a ``latest`` file."""
    if not os.path.isdir(save_dir):
        return False
    return os.path.exists(os.path.join(save_dir, LATEST)) or any(
        step_of_tag(n) is not None for n in os.listdir(save_dir))


def _read_latest(save_dir: str) -> Tuple[bool, Optional[str]]:
    """(whether a ``latest`` file exists, the tag it names or None when empty)."""
    path = os.path.join(save_dir, LATEST)
    if not os.path.isfile(path):
        return False, None
    with open(path) as f:
        return True, f.read().strip() or None


def resume_choice(save_dir: str) -> Tuple[Optional[str], List[Tuple[str, str]]]:
    """(tag to resume from or None, [(tag, fault)] of the unusable tags examined).

    ``latest`` first, then the other tags newest first, each verified in full
    (checksums) until one passes; the faults of those that failed are returned.
    """
    has_latest, latest = _read_latest(save_dir)
    faults: List[Tuple[str, str]] = []
    if has_latest and latest is None:
        faults.append((LATEST, "the file is empty"))
    candidates = [t for _, t in reversed(all_tags(save_dir))]
    if latest is not None:
        candidates = [latest] + [t for t in candidates if t != latest]
    for tag in candidates:
        reason = incomplete_reason(save_dir, tag)
        if reason is None:
            return tag, faults
        faults.append((tag, reason))
    return None, faults


def resumable_tag(save_dir: str) -> Optional[str]:
    """The tag to resume from: ``latest`` if complete and intact, else the newest one
    that is (warned, with the fault of each tag passed over); None if none is."""
    tag, faults = resume_choice(save_dir)
    if faults and tag is not None:
        _warn_fallback(save_dir, tag, faults)
    return tag


def _warn_fallback(save_dir: str, tag: str, faults: List[Tuple[str, str]]) -> None:
    logger.warning("%s", "; ".join(f"checkpoint {t!r} in {save_dir} is not usable: {why}"
                                   for t, why in faults)
                   + f"; resuming from the previous complete checkpoint {tag!r}")


def holds_work(save_dir: str) -> bool:
    """Whether a checkpoint was ever completed here: a ``latest`` file (written only after
    a marker) or a tag with a marker. Unfinished saves alone hold no work."""
    return os.path.isfile(os.path.join(save_dir, LATEST)) or any(
        os.path.isfile(os.path.join(save_dir, tag, MARKER)) for _, tag in all_tags(save_dir))


def describe_faults(faults: List[Tuple[str, str]]) -> str:
    return "; ".join(f"{tag}: {why}" for tag, why in faults)


SHAPE_FIELDS = ("family", "vocab_size", "hidden_size", "num_layers", "num_attention_heads",
                "ffn_hidden_size", "max_position_embeddings", "type_vocab_size",
                "make_vocab_size_divisible_by")
"""The model-config fields that decide the checkpoint's tensors (dropout, init do not)."""


def checkpoint_identity(model_config: Optional[Dict[str, Any]], tensor_parallel_size: int,
                        pipeline_parallel_size: int,
                        virtual_pipeline_size: int) -> Dict[str, Any]:
    """What a checkpoint's tensors depend on: the model's shape and the parallel layout."""
    shape = {k: v for k, v in (model_config or {}).items() if k in SHAPE_FIELDS}
    return {"model": shape or None, "tensor_parallel_size": tensor_parallel_size,
            "pipeline_parallel_size": pipeline_parallel_size,
            "virtual_pipeline_size": virtual_pipeline_size}


def identity_mismatch(saved: Dict[str, Any], current: Dict[str, Any]) -> Optional[str]:
    """The first fields on which two checkpoint identities differ (None if none does)."""
    diffs = []
    for key in sorted(set(saved) | set(current)):
        a, b = saved.get(key), current.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            sub = identity_mismatch(a, b)
            if sub:
                diffs.append(sub)
        elif a != b and a is not None and b is not None:
            diffs.append(f"{key} {a} there, {b} here")
    return ", ".join(diffs[:4]) or None


# -- save / load ---------------------------------------------------------------
class CheckpointManager:
    """Saves and loads a DeepSpeed engine with the loop's state (see the module docstring).

    Args:
        save_dir: directory of the ``global_step<N>`` tags and ``latest``.
        keep_last: complete checkpoints to keep (0: all).
        on_damaged: when checkpoints exist and none is usable: ``refuse`` (raise
            ``DamagedCheckpointsError``) or ``start-fresh`` (move them to
            ``damaged/`` and start from step 0).
        identity: what this run's checkpoints are (model shape, parallel layout);
            recorded in every marker and compared with a loaded one's.
        layout_change: an ``alum.pretrain.reshard.LayoutChange`` when the checkpoint to
            resume was written at another parallel layout: its tag is loaded from the
            universal checkpoint converted from it (the model shape is still compared).
    """

    def __init__(self, save_dir: str, keep_last: int = 2, on_damaged: str = "refuse",
                 identity: Optional[Dict[str, Any]] = None, layout_change=None):
        if on_damaged not in ON_DAMAGED:
            raise ValueError(f"on_damaged={on_damaged!r}: must be one of {ON_DAMAGED}")
        self.save_dir = save_dir
        self.keep_last = keep_last
        self.on_damaged = on_damaged
        self.identity = identity
        self.layout_change = layout_change

    def _bytes_needed(self, engine) -> int:
        """What a save will write, about: the newest complete checkpoint's size, else
        16 bytes per parameter (fp32 weights and Adam's master copy and two moments)."""
        complete = complete_tags(self.save_dir)
        if complete:
            marker = read_marker(self.save_dir, complete[-1][1]) or {}
            total = sum(marker.get("files", {}).values())
            if total:
                return int(total)
        return 16 * sum(p.numel() for p in engine.module.parameters())

    def save(self, engine, step: int, client_state: Dict[str, Any]) -> str:
        tag = tag_for_step(step)
        tag_dir = os.path.join(self.save_dir, tag)
        needed = self._bytes_needed(engine) if _rank() == 0 else None
        if _rank() == 0:
            os.makedirs(self.save_dir, exist_ok=True)
            if os.path.isdir(tag_dir):
                self._clear(tag)
        _barrier()
        try:
            engine.save_checkpoint(self.save_dir, tag=tag, client_state=client_state,
                                   save_latest=False)
            torch.save(capture_rng_state(),
                       os.path.join(tag_dir, f"rng_state_rank{_rank()}.pt"))
        except (OSError, RuntimeError) as err:
            message = describe_output_error(err, "checkpoint", tag_dir, needed)
            # Unfinished (no marker): removed, so that it neither fills the disk nor
            # looks like a checkpoint; the previous one and ``latest`` are untouched.
            shutil.rmtree(tag_dir, ignore_errors=True)
            raise OutputError(message) from err
        _barrier()
        if _rank() == 0:
            try:
                mark_complete(self.save_dir, tag, step, identity=self.identity)
            except OSError as err:
                message = describe_output_error(err, "checkpoint", tag_dir, needed)
                if not os.path.isfile(os.path.join(tag_dir, MARKER)):
                    shutil.rmtree(tag_dir, ignore_errors=True)
                raise OutputError(message) from err
            self._prune(step)
        _barrier()
        return tag

    def _clear(self, tag: str) -> None:
        """Make room for a save at ``tag``: an unfinished save there is debris and
        removed; a marked one (a checkpoint found damaged, resumed past) is set aside."""
        tag_dir = os.path.join(self.save_dir, tag)
        if os.path.isfile(os.path.join(tag_dir, MARKER)):
            moved = set_aside(self.save_dir, tag)
            logger.warning("checkpoint %s is rewritten by this run: the existing one was "
                           "moved to %s", tag_dir, moved)
        else:
            shutil.rmtree(tag_dir)

    def _prune(self, newest_step: int) -> None:
        """Delete complete checkpoints beyond ``keep_last`` and older unfinished saves;
        older damaged ones (marked, but a file missing or resized) are set aside."""
        complete = [(s, t) for s, t in complete_tags(self.save_dir) if s <= newest_step]
        doomed = complete[:-self.keep_last] if self.keep_last else []
        for _, tag in doomed:
            shutil.rmtree(os.path.join(self.save_dir, tag), ignore_errors=True)
        kept = {t for _, t in complete}
        for step, name in all_tags(self.save_dir):
            if step < newest_step and name not in kept:
                if os.path.isfile(os.path.join(self.save_dir, name, MARKER)):
                    set_aside(self.save_dir, name)
                else:
                    shutil.rmtree(os.path.join(self.save_dir, name), ignore_errors=True)

    def _start_fresh(self, load_dir: str, faults: List[Tuple[str, str]]) -> None:
        """``on_damaged="start-fresh"``: every tag (and ``latest``) moved to ``damaged/``."""
        if _rank() == 0:
            for _, tag in all_tags(load_dir):
                set_aside(load_dir, tag)
            latest = os.path.join(load_dir, LATEST)
            if os.path.lexists(latest):
                os.replace(latest, os.path.join(load_dir, "damaged", LATEST))
        _barrier()
        logger.warning("no usable checkpoint in %s (%s): starting fresh from step 0 as "
                       "asked; the damaged checkpoints were moved to %s", load_dir,
                       describe_faults(faults), os.path.join(load_dir, "damaged"))

    def load(self, engine, load_dir: Optional[str] = None,
             tag: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Load the resumable tag of ``load_dir`` (default ``save_dir``); None if there is none.

        Returns DeepSpeed's ``client_state`` with ``"tag"`` added. RNG states are
        restored when this rank's file exists (a different world size reseeds instead,
        with a warning). Checkpoints that exist but are all unusable raise
        ``DamagedCheckpointsError`` (or, with ``on_damaged="start-fresh"``, are set
        aside and None is returned).
        """
        load_dir = load_dir or self.save_dir
        if tag is None:
            tag, faults = resume_choice(load_dir)
            if tag is None and faults and not holds_work(load_dir):
                # Only saves that never finished (killed in the first save): no work
                # to lose; they are debris, removed when their step is saved again.
                logger.warning("%s holds only unfinished saves (%s): starting from step 0",
                               load_dir, describe_faults(faults))
                return None
            if tag is None and faults:
                if self.on_damaged == "refuse":
                    raise DamagedCheckpointsError(
                        f"{load_dir} holds checkpoints but none is usable ("
                        f"{describe_faults(faults)}); nothing was changed: repair or move "
                        f"them, or pass --resume-damaged start-fresh to move them to "
                        f"{os.path.join(load_dir, 'damaged')} and train from step 0")
                self._start_fresh(load_dir, faults)
                return None
            if tag is not None and faults:
                _warn_fallback(load_dir, tag, faults)
        else:
            reason = incomplete_reason(load_dir, tag)
            if reason is not None:
                raise ValueError(f"checkpoint {os.path.join(load_dir, tag)} is incomplete: "
                                 f"{reason}")
        if tag is None:
            return None
        change = self.layout_change
        if change is not None and (change.load_dir, change.tag) != (load_dir, tag):
            raise RuntimeError(f"the layout change was planned for {change.load_dir}/"
                               f"{change.tag}, but {load_dir}/{tag} is to be loaded")
        self._check_identity(load_dir, tag, layout=change is None)
        try:
            if change is None:
                path, client_state = engine.load_checkpoint(load_dir, tag=tag)
            else:
                from .reshard import this_stage

                path, client_state = engine.load_checkpoint(
                    change.universal_root, tag=change.load_tag(this_stage()))
        except (RuntimeError, KeyError, AssertionError) as err:
            first = (str(err).strip().splitlines() or [type(err).__name__])
            detail = next((line.strip() for line in first if "size mismatch" in line),
                          first[0].strip())
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(load_dir, tag)} does not fit this model (another "
                f"model shape or parallel layout?): {detail}") from err
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {os.path.join(load_dir, tag)}")
        rng_path = os.path.join(load_dir, tag, f"rng_state_rank{_rank()}.pt")
        if change is not None:
            from .reshard import remove_universal

            remove_universal(change)
            # Another layout gives this rank another role (its TP rank, its data slice):
            # the saved streams belong to the old roles. ALUM's random start is seeded
            # per sample, so it does not depend on them.
            logger.warning("resumed %s: RNG streams reseeded (dropout draws new masks)",
                           change.describe())
        elif os.path.isfile(rng_path):
            restore_rng_state(torch.load(rng_path, weights_only=False))
        else:
            logger.warning("%s has no RNG state for rank %d (saved with another world "
                           "size?): dropout and ALUM noise will not continue the saved "
                           "streams", tag, _rank())
        client_state = dict(client_state or {})
        client_state["tag"] = tag
        return client_state

    def _check_identity(self, load_dir: str, tag: str, layout: bool = True) -> None:
        """The saved identity against this run's: model shape and (with ``layout``)
        the parallel layout."""
        saved = (read_marker(load_dir, tag) or {}).get("identity")
        if not saved or not self.identity:
            return
        current = self.identity
        if not layout:
            saved, current = ({"model": saved.get("model")},
                              {"model": self.identity.get("model")})
        diff = identity_mismatch(saved, current)
        if diff:
            raise CheckpointMismatchError(
                f"checkpoint {os.path.join(load_dir, tag)} was written by another model "
                f"shape or parallel layout: {diff}")
