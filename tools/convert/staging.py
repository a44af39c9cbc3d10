"""Write a destination directory all or nothing: a temporary sibling, renamed at the end.

A failed conversion (bad input found half-way, a crash, Ctrl-C) leaves no
directory at the destination; only a complete one is ever renamed into place.
An existing destination is refused unless ``overwrite`` (it is then moved aside,
replaced, and deleted).
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator

from .errors import ConvertError


@contextlib.contextmanager
def staging_dir(dst: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``dst``; renames it to ``dst`` on success."""
    dst = os.path.abspath(dst)
    if os.path.lexists(dst) and not overwrite:
        raise ConvertError(f"{dst} exists; choose another destination or pass --overwrite")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.tmp-{os.getpid()}"
    if os.path.lexists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if os.path.lexists(dst):
        old = f"{dst}.old-{os.getpid()}"
        os.replace(dst, old)
    os.replace(tmp, dst)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
