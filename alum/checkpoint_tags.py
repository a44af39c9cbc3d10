"""Checkpoint tags and their completeness marker: which ``global_step<N>`` directories are whole.

A checkpoint directory (DeepSpeed's ``save_dir``) holds one directory per tag,
``global_step<N>`` (DeepSpeed's own naming), and a ``latest`` file naming one of
them. A tag is declared complete, once every file of it is written, by
``mark_complete``: every file is flushed to disk (fsync), then
``<tag>/alum_complete.json`` records the step, every file's size and its CRC-32
(``zlib.crc32``: 1.2 GB/s reading a file back and hashing it on one core of the
development VM, about 0.9 s per GB of checkpoint; ``benchmarks/checksum_cost.py``
and docs/pretrain.md, "Checkpoints"), and optionally what wrote it (the
model's shape and parallel layout), then ``latest`` is pointed at the tag, both
through an atomic write (``alum.atomic_write``). A tag is *complete* when its
marker exists and every listed file has its recorded size and, when verified, its
recorded checksum, so a crash during a save, a truncated file, bytes overwritten
in place or a half-deleted directory are told apart from a usable checkpoint.
Markers written before checksums were recorded are checked by size only (with one
warning). ``latest`` keeps DeepSpeed's format, so ``deepspeed.utils.zero_to_fp32``
reads these directories as its own.

Writers: alum-pretrain's ``CheckpointManager`` and alum-convert; readers: the
resume logic and alum-convert's checkpoint reader.
"""
from __future__ import annotations

import json
import logging
import os
import re
import zlib
from typing import Any, Dict, List, Optional, Tuple

from .atomic_write import atomic_write_text, fsync_dir

MARKER = "alum_complete.json"
LATEST = "latest"
DAMAGED = "damaged"
"""Sub-directory of a checkpoint directory where damaged tags are moved (never deleted)."""
TAG_PATTERN = re.compile(r"^global_step(\d+)$")
CHECKSUM = "crc32"
_CHUNK = 8 << 20

logger = logging.getLogger("alum.checkpoint")
_warned_unchecked = set()


def tag_for_step(step: int) -> str:
    """DeepSpeed's own tag naming (``global_step<N>``)."""
    return f"global_step{step}"


def step_of_tag(tag: str) -> Optional[int]:
    match = TAG_PATTERN.match(tag)
    return int(match.group(1)) if match else None


def file_checksum(path: str) -> str:
    """CRC-32 of a file's bytes, as 8 hex digits (read in 8 MiB chunks)."""
    crc = 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_CHUNK)
            if not chunk:
                break
            crc = zlib.crc32(chunk, crc)
    return f"{crc:08x}"


def _fsync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tag_files(tag_dir: str) -> List[str]:
    names = []
    for root, _, files in os.walk(tag_dir):
        for name in files:
            if name == MARKER or ".tmp." in name:
                continue
            names.append(os.path.relpath(os.path.join(root, name), tag_dir))
    return sorted(names)


def read_marker(save_dir: str, tag: str) -> Optional[Dict[str, Any]]:
    """The tag's marker as written, or None if it is missing or unreadable."""
    try:
        with open(os.path.join(save_dir, tag, MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def incomplete_reason(save_dir: str, tag: str, verify: bool = True) -> Optional[str]:
    """None when ``tag`` is a complete checkpoint, else why not.

    ``verify``: also compare every file's checksum with the recorded one (reads the
    whole tag); without it only presence and sizes are checked.
    """
    tag_dir = os.path.join(save_dir, tag)
    marker = os.path.join(tag_dir, MARKER)
    if not os.path.isdir(tag_dir):
        return "its directory does not exist"
    if not os.path.isfile(marker):
        return f"it has no {MARKER} (the save did not finish)"
    try:
        with open(marker) as f:
            record = json.load(f)
        recorded = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"its {MARKER} is unreadable ({err})"
    for name, size in recorded.items():
        path = os.path.join(tag_dir, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, {size} were written"
    if not verify:
        return None
    checksums = record.get("checksums")
    if not checksums:
        if tag_dir not in _warned_unchecked:
            _warned_unchecked.add(tag_dir)
            logger.warning("%s was written before checkpoints recorded checksums: its files "
                           "are checked by size only", tag_dir)
        return None
    for name in sorted(recorded):
        want = checksums.get(name)
        if want is None:
            return f"{name} has no recorded checksum"
        got = file_checksum(os.path.join(tag_dir, name))
        if got != want:
            return f"{name} does not match its checksum ({CHECKSUM} {got}, {want} was written)"
    return None


def mark_complete(save_dir: str, tag: str, step: int,
                  identity: Optional[Dict[str, Any]] = None, point_latest: bool = True) -> None:
    """Declare a written tag complete: every file flushed to disk, then its marker (sizes
    and checksums, and ``identity``: what wrote it), then ``latest`` (unless
    ``point_latest`` is False: checkpoints that are found by name, not by ``latest``)."""
    tag_dir = os.path.join(save_dir, tag)
    names = _tag_files(tag_dir)
    for name in names:    # the data must be on disk before a marker vouches for it
        _fsync_file(os.path.join(tag_dir, name))
    for root, _, _ in os.walk(tag_dir):
        fsync_dir(root)
    marker: Dict[str, Any] = {
        "step": step,
        "files": {n: os.path.getsize(os.path.join(tag_dir, n)) for n in names},
        "checksum": CHECKSUM,
        "checksums": {n: file_checksum(os.path.join(tag_dir, n)) for n in names}}
    if identity is not None:
        marker["identity"] = identity
    atomic_write_text(os.path.join(tag_dir, MARKER), json.dumps(marker, indent=1))
    if point_latest:
        atomic_write_text(os.path.join(save_dir, LATEST), tag)


def all_tags(save_dir: str) -> List[Tuple[int, str]]:
    """(step, tag) of every ``global_step<N>`` directory, complete or not, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    return sorted((step_of_tag(n), n) for n in os.listdir(save_dir)
                  if step_of_tag(n) is not None and os.path.isdir(os.path.join(save_dir, n)))


def complete_tags(save_dir: str, verify: bool = False) -> List[Tuple[int, str]]:
    """(step, tag) of every complete ``global_step<N>`` checkpoint, oldest first
    (``verify``: checksums too, which reads every tag in full)."""
    return [(step, tag) for step, tag in all_tags(save_dir)
            if incomplete_reason(save_dir, tag, verify=verify) is None]


def set_aside(save_dir: str, tag: str) -> str:
    """Move a damaged tag to ``<save_dir>/damaged/<tag>`` (a numbered name if taken), where
    nothing reads, prunes or overwrites it; returns its new path."""
    root = os.path.join(save_dir, DAMAGED)
    os.makedirs(root, exist_ok=True)
    target = os.path.join(root, tag)
    n = 1
    while os.path.lexists(target):
        target = os.path.join(root, f"{tag}.{n}")
        n += 1
    os.replace(os.path.join(save_dir, tag), target)
    fsync_dir(save_dir)
    return target
