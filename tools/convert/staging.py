"""Write a destination directory all or nothing (``alum.atomic_write.atomic_path``).

A failed conversion (bad input found half-way, a crash, Ctrl-C) leaves no
directory at the destination; only a complete one is ever renamed into place.
An existing destination is refused unless ``overwrite`` (it is then moved aside,
replaced, and deleted).
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator

from alum.atomic_write import atomic_path

from .errors import ConvertError


@contextlib.contextmanager
def staging_dir(dst: str, overwrite: bool = False) -> Iterator[str]:
    """Yields a fresh temporary directory next to ``dst``; renames it to ``dst`` on success."""
    dst = os.path.abspath(dst)
    if os.path.lexists(dst) and not overwrite:
        raise ConvertError(f"{dst} exists; choose another destination or pass --overwrite")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    with atomic_path(dst) as tmp:
        os.makedirs(tmp)
        yield tmp
