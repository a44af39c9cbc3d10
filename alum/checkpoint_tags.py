"""Checkpoint tags and their completeness marker: which ``global_step<N>`` directories are whole.

A checkpoint directory (DeepSpeed's ``save_dir``) holds one directory per tag,
``global_step<N>`` (DeepSpeed's own naming), and a ``latest`` file naming one of
them. A tag is declared complete, once every file of it is written, by
``mark_complete``: ``<tag>/alum_complete.json`` records the step and every
file's size, then ``latest`` is pointed at the tag, both through an atomic
write (``alum.atomic_write``). A tag is *complete* when its marker exists and
every listed file has its recorded size, so a crash during a save, a truncated
file or a half-deleted directory is told apart from a usable checkpoint.
``latest`` keeps DeepSpeed's format, so ``deepspeed.utils.zero_to_fp32`` reads
these directories as its own.

Writers: alum-pretrain's ``CheckpointManager`` and alum-convert; readers: the
resume logic and alum-convert's checkpoint reader.
"""
from __future__ import annotations

import json
import os
import re
from typing import Dict, List, Optional, Tuple

from .atomic_write import atomic_write_text

MARKER = "alum_complete.json"
LATEST = "latest"
TAG_PATTERN = re.compile(r"^global_step(\d+)$")


def tag_for_step(step: int) -> str:
    """DeepSpeed's own tag naming (``global_step<N>``)."""
    return f"global_step{step}"


def step_of_tag(tag: str) -> Optional[int]:
    match = TAG_PATTERN.match(tag)
    return int(match.group(1)) if match else None


def _file_sizes(tag_dir: str) -> Dict[str, int]:
    sizes = {}
    for root, _, files in os.walk(tag_dir):
        for name in files:
            if name == MARKER or ".tmp." in name:
                continue
            path = os.path.join(root, name)
            sizes[os.path.relpath(path, tag_dir)] = os.path.getsize(path)
    return sizes


def incomplete_reason(save_dir: str, tag: str) -> Optional[str]:
    """None when ``tag`` is a complete checkpoint, else why not."""
    tag_dir = os.path.join(save_dir, tag)
    marker = os.path.join(tag_dir, MARKER)
    if not os.path.isdir(tag_dir):
        return "its directory does not exist"
    if not os.path.isfile(marker):
        return f"it has no {MARKER} (the save did not finish)"
    try:
        with open(marker) as f:
            recorded = json.load(f)["files"]
    except (OSError, ValueError, KeyError) as err:
        return f"its {MARKER} is unreadable ({err})"
    for name, size in recorded.items():
        path = os.path.join(tag_dir, name)
        if not os.path.isfile(path):
            return f"{name} is missing"
        if os.path.getsize(path) != size:
            return f"{name} has {os.path.getsize(path)} bytes, {size} were written"
    return None


def mark_complete(save_dir: str, tag: str, step: int) -> None:
    """Declare a written tag complete: its marker (every file's size), then ``latest``."""
    tag_dir = os.path.join(save_dir, tag)
    marker = {"step": step, "files": _file_sizes(tag_dir)}
    atomic_write_text(os.path.join(tag_dir, MARKER), json.dumps(marker, indent=1))
    atomic_write_text(os.path.join(save_dir, LATEST), tag)


def complete_tags(save_dir: str) -> List[Tuple[int, str]]:
    """(step, tag) of every complete ``global_step<N>`` checkpoint, oldest first."""
    if not os.path.isdir(save_dir):
        return []
    found = []
    for name in os.listdir(save_dir):
        step = step_of_tag(name)
        if step is not None and incomplete_reason(save_dir, name) is None:
            found.append((step, name))
    return sorted(found)
