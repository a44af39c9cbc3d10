"""Crash-safe DeepSpeed checkpoints with the training loop's state, and keep-last-N.

DeepSpeed's ``save_checkpoint`` writes the ``latest`` file after its own files
but before the closing barrier, with a plain ``open(..., "w")``: with several
data-parallel ranks, ``latest`` can name a tag whose other shards are still
being written, and a crash during that write leaves an empty ``latest``. So we
save with ``save_latest=False`` and, after every rank has finished (barrier),
rank 0 declares the tag complete (``alum.checkpoint_tags.mark_complete``: a
marker with every file's size, then ``latest``, both written atomically).

On resume, ``latest`` naming a missing or incomplete tag (a crash between the
two writes, a truncated file, a half-deleted directory) is answered with a
warning and the newest complete tag.

Per-rank RNG states (python, numpy, torch CPU/CUDA, megatron's tracker) go into
``<tag>/rng_state_rank<k>.pt``; the loop's own state (step, consumed samples,
config, tokenizer) goes into DeepSpeed's ``client_state``.
"""
from __future__ import annotations

import logging
import os
import random
import shutil
from typing import Any, Dict, Optional

import numpy as np
import torch
import torch.distributed as dist

from alum.checkpoint_tags import (LATEST, complete_tags, incomplete_reason, mark_complete,
                                  step_of_tag, tag_for_step)

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
def any_checkpoint(save_dir: str) -> bool:
    """Whether ``save_dir`` holds checkpoint directories or a ``latest`` file."""
    if not os.path.isdir(save_dir):
        return False
    return os.path.exists(os.path.join(save_dir, LATEST)) or any(
        step_of_tag(n) is not None for n in os.listdir(save_dir))


def resumable_tag(save_dir: str) -> Optional[str]:
    """The tag to resume from: ``latest`` if complete, else the newest complete one (warned)."""
    latest_path = os.path.join(save_dir, LATEST)
    latest = None
    if os.path.isfile(latest_path):
        with open(latest_path) as f:
            latest = f.read().strip() or None
    if latest is not None:
        reason = incomplete_reason(save_dir, latest)
        if reason is None:
            return latest
    complete = complete_tags(save_dir)
    fallback = complete[-1][1] if complete else None
    if latest is not None or os.path.isfile(latest_path):
        why = reason if latest is not None else "the file is empty"
        logger.warning("checkpoint %r named by %s is not usable: %s; %s",
                       latest, latest_path, why,
                       f"resuming from the previous complete checkpoint {fallback!r}"
                       if fallback else "no complete checkpoint remains: starting fresh")
    return fallback


# -- save / load ---------------------------------------------------------------
class CheckpointManager:
    """Saves and loads a DeepSpeed engine with the loop's state (see the module docstring).

    Args:
        save_dir: directory of the ``global_step<N>`` tags and ``latest``.
        keep_last: complete checkpoints to keep (0: all).
    """

    def __init__(self, save_dir: str, keep_last: int = 2):
        self.save_dir = save_dir
        self.keep_last = keep_last

    def save(self, engine, step: int, client_state: Dict[str, Any]) -> str:
        tag = tag_for_step(step)
        tag_dir = os.path.join(self.save_dir, tag)
        if _rank() == 0:
            os.makedirs(self.save_dir, exist_ok=True)
            if os.path.isdir(tag_dir):  # debris of an earlier, interrupted run
                shutil.rmtree(tag_dir)
        _barrier()
        engine.save_checkpoint(self.save_dir, tag=tag, client_state=client_state,
                               save_latest=False)
        torch.save(capture_rng_state(), os.path.join(tag_dir, f"rng_state_rank{_rank()}.pt"))
        _barrier()
        if _rank() == 0:
            mark_complete(self.save_dir, tag, step)
            self._prune(step)
        _barrier()
        return tag

    def _prune(self, newest_step: int) -> None:
        """Delete complete checkpoints beyond ``keep_last`` and older incomplete debris."""
        complete = complete_tags(self.save_dir)
        doomed = complete[:-self.keep_last] if self.keep_last else []
        for _, tag in doomed:
            shutil.rmtree(os.path.join(self.save_dir, tag), ignore_errors=True)
        kept = {t for _, t in complete}
        for name in os.listdir(self.save_dir):
            step = step_of_tag(name)
            if step is not None and step < newest_step and name not in kept:
                shutil.rmtree(os.path.join(self.save_dir, name), ignore_errors=True)

    def load(self, engine, load_dir: Optional[str] = None,
             tag: Optional[str] = None) -> Optional[Dict[str, Any]]:
        """Load the resumable tag of ``load_dir`` (default ``save_dir``); None if there is none.

        Returns DeepSpeed's ``client_state`` with ``"tag"`` added. RNG states are
        restored when this rank's file exists (a different world size reseeds instead,
        with a warning).
        """
        load_dir = load_dir or self.save_dir
        if tag is None:
            tag = resumable_tag(load_dir)
        else:
            reason = incomplete_reason(load_dir, tag)
            if reason is not None:
                raise ValueError(f"checkpoint {os.path.join(load_dir, tag)} is incomplete: "
                                 f"{reason}")
        if tag is None:
            return None
        path, client_state = engine.load_checkpoint(load_dir, tag=tag)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load {os.path.join(load_dir, tag)}")
        rng_path = os.path.join(load_dir, tag, f"rng_state_rank{_rank()}.pt")
        if os.path.isfile(rng_path):
            restore_rng_state(torch.load(rng_path, weights_only=False))
        else:
            logger.warning("%s has no RNG state for rank %d (saved with another world "
                           "size?): dropout and ALUM noise will not continue the saved "
                           "streams", tag, _rank())
        client_state = dict(client_state or {})
        client_state["tag"] = tag
        return client_state
