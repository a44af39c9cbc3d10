"""Verified resume for alum-finetune: checksummed checkpoints, refusal over damaged ones.

The Hugging Face Trainer writes ``OUTPUT.work/checkpoint-<step>/`` in place and, asked
to resume, takes the newest such directory whatever its state. Here every finished
save is declared complete by ``alum.checkpoint_tags.mark_complete`` (each file flushed
to disk, then a marker with its size and CRC-32), from the Trainer's ``on_save`` hook,
which runs once the whole checkpoint is written. ``resume_point`` then picks the
newest checkpoint whose files all match their marker; the ones passed over are moved
to ``OUTPUT.work/damaged/`` (the Trainer would otherwise write into them again when it
reaches their step) and named in a warning. When checkpoints exist and none is usable,
resuming is refused with one line listing each and its fault, unless
``--resume-damaged start-fresh`` moves them all to ``damaged/`` and trains from step 0.

Checkpoints from before markers were written (no checkpoint of the directory has
one) are accepted when the Trainer finished them (``trainer_state.json``, its last
file, is there), with one warning that they are not verified.
"""
from __future__ import annotations

import logging
import os
import re
from typing import List, Optional, Tuple, Union

from transformers import TrainerCallback

from alum.checkpoint_tags import MARKER, incomplete_reason, mark_complete, set_aside

logger = logging.getLogger("alum.finetune")

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"   # the Trainer's last file of a checkpoint
ON_DAMAGED = ("refuse", "start-fresh")


class DamagedCheckpointsError(ValueError):
    """Checkpoints exist and none is usable; the message lists each and its fault."""


class MarkCompleteCheckpoints(TrainerCallback):
    """After each save (every rank done), rank 0 writes the checkpoint's marker."""

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.barrier()   # every rank's shard written
        if state.is_world_process_zero:
            name = f"checkpoint-{state.global_step}"
            if os.path.isdir(os.path.join(args.output_dir, name)):
                mark_complete(args.output_dir, name, state.global_step, point_latest=False)
        return control


def checkpoints(work_dir: str) -> List[Tuple[int, str]]:
    """(step, name) of every ``checkpoint-<step>`` directory, newest first."""
    if not os.path.isdir(work_dir):
        return []
    found = [(int(m.group(1)), n) for n in os.listdir(work_dir)
             for m in [CHECKPOINT.match(n)] if m and os.path.isdir(os.path.join(work_dir, n))]
    return sorted(found, reverse=True)


def _fault(work_dir: str, name: str, any_marked: bool) -> Optional[str]:
    if os.path.isfile(os.path.join(work_dir, name, MARKER)) or any_marked:
        return incomplete_reason(work_dir, name)
    if not os.path.isfile(os.path.join(work_dir, name, TRAINER_STATE)):
        return f"it has no {TRAINER_STATE} (the save did not finish)"
    return None


def resume_point(work_dir: str, on_damaged: str = "refuse",
                 move: bool = True) -> Union[str, bool, None]:
    """What to pass as ``Trainer.train(resume_from_checkpoint=...)`` for ``--resume``:
    the newest usable checkpoint's path; True when there is no checkpoint (the Trainer
    then says so); None after ``start-fresh`` set every (damaged) checkpoint aside.
    Raises ``DamagedCheckpointsError`` when all are damaged and ``on_damaged`` is
    ``refuse`` (nothing is changed then). ``move``: this process moves the damaged
    checkpoints (rank 0; the others wait for it)."""
    if on_damaged not in ON_DAMAGED:
        raise ValueError(f"--resume-damaged {on_damaged!r}: must be one of {ON_DAMAGED}")
    found = checkpoints(work_dir)
    if not found:
        return True
    any_marked = any(os.path.isfile(os.path.join(work_dir, n, MARKER)) for _, n in found)
    if not any_marked:
        logger.warning("the checkpoints in %s were written without checksums (an older "
                       "alum-finetune): they are not verified", work_dir)
    faults: List[Tuple[str, str]] = []
    for _, name in found:
        reason = _fault(work_dir, name, any_marked)
        if reason is None:
            for bad, why in faults:
                logger.warning("checkpoint %s is not usable (%s): moved to %s", bad, why,
                               os.path.join(work_dir, "damaged"))
            _set_aside(work_dir, [bad for bad, _ in faults], move)
            if faults:
                logger.warning("resuming from the previous complete checkpoint %s", name)
            return os.path.join(work_dir, name)
        faults.append((name, reason))
    listed = "; ".join(f"{n}: {why}" for n, why in faults)
    if not any(os.path.isfile(os.path.join(work_dir, n, f)) for _, n in found
               for f in (MARKER, TRAINER_STATE)):
        # Only saves that never finished (killed in the first save): no work to lose.
        logger.warning("%s holds only unfinished saves (%s): starting from step 0",
                       work_dir, listed)
        return None
    if on_damaged == "refuse":
        raise DamagedCheckpointsError(
            f"{work_dir} holds checkpoints but none is usable ({listed}); nothing was "
            f"changed: repair or move them, or pass --resume-damaged start-fresh to move "
            f"them to {os.path.join(work_dir, 'damaged')} and train from step 0")
    _set_aside(work_dir, [name for name, _ in faults], move)
    logger.warning("no usable checkpoint in %s (%s): starting fresh from step 0 as asked; "
                   "the damaged checkpoints were moved to %s", work_dir, listed,
                   os.path.join(work_dir, "damaged"))
    return None


def _set_aside(work_dir: str, names: List[str], move: bool) -> None:
    import torch.distributed as dist

    if move:
        for name in names:
            set_aside(work_dir, name)
    if names and dist.is_available() and dist.is_initialized():
        dist.barrier()
