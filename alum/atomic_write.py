"""All-or-nothing outputs: write under a temporary sibling name, rename into place when complete.

Readers of ``path`` see the old content or the new one, never a part of it: the
new file or directory is written at ``<path>.tmp.<pid>`` and ``os.replace``\\ d
onto ``path`` (atomic on POSIX within one file system, which a sibling name
guarantees). A failure while writing (an exception, Ctrl-C) removes the
temporary and leaves ``path`` as it was.

A directory replacing an existing directory cannot be swapped in one rename
(``os.replace`` refuses a non-empty target): the old one is first moved aside
to ``<path>.old.<pid>``, the new one renamed into place, then the old one
deleted; a crash between the two renames leaves the old tree under that name.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from typing import Iterator, Tuple


def temporary_name(path: str) -> str:
    """The sibling ``path`` is written under until it is complete."""
    return f"{path}.tmp.{os.getpid()}"


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def fsync_dir(path: str) -> None:
    """Flush a directory's entries (a rename inside it) to disk, where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yields the temporary name to write a file or create a directory at; on success
    it replaces ``path`` (see the module docstring), on failure it is removed."""
    tmp = temporary_name(path)
    _remove(tmp)    # debris of an earlier process with the same id
    try:
        yield tmp
    except BaseException:
        _remove(tmp)
        raise
    old = None
    if os.path.isdir(tmp) and os.path.lexists(path):
        old = f"{path}.old.{os.getpid()}"
        _remove(old)
        os.replace(path, old)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))
    if old is not None:
        _remove(old)


@contextlib.contextmanager
def atomic_pair(data: str, index: str) -> Iterator[Tuple[str, str]]:
    """Temporary names for a data file and its index, committed together on success: the
    old index is removed first, the data file moved in, the index last. A reader never
    pairs a new data file with an old index (a data file without its index is not a
    dataset, even if the process dies between the renames). On failure both temporaries
    are removed and both paths are left as they were."""
    with atomic_path(index) as tmp_index:
        with atomic_path(data) as tmp_data:
            yield tmp_data, tmp_index
            _remove(index)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old or the new content, never part."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
