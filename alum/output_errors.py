"""Output failures told as one line: a full disk, a read-only or unwritable directory.

Two things make these hard to read when they surface raw: torch's own writer
(``torch.save`` to a path) reports a failed write as ``RuntimeError: ... unexpected
pos`` or ``basic_ios::clear: iostream error``, losing the errno; and a traceback hides
the path. ``disk_is_full`` recognises the condition from the exception chain
(``ENOSPC``/``EDQUOT``) or, when the errno was lost, from the free space left on the
file system; ``describe_output_error`` gives the one line; ``check_writable_dir``
refuses an unusable output directory before any work is done.
"""
from __future__ import annotations

import errno
import os
import shutil
from typing import Optional

_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class OutputError(OSError):
    """An output could not be written; ``str()`` is the one line to show."""

    def __str__(self) -> str:
        return self.args[0] if self.args else "output error"


def _errnos(err: BaseException):
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno is not None:
            yield err.errno
        err = err.__cause__ or err.__context__


def free_bytes(path: str) -> Optional[int]:
    """Free bytes on the file system holding ``path`` (its nearest existing parent)."""
    path = os.path.abspath(path)
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def disk_is_full(err: BaseException, path: str, needed_bytes: Optional[int] = None) -> bool:
    """Whether ``err``, raised while writing under ``path``, means the disk is full: an
    ``ENOSPC``/``EDQUOT`` in its chain, or (torch's writer drops the errno) less free
    space left than ``needed_bytes`` (or under 1 MiB when that is not known)."""
    if any(e in _FULL_ERRNOS for e in _errnos(err)):
        return True
    free = free_bytes(path)
    return free is not None and free < max(needed_bytes or 0, 1 << 20)


def megabytes(n: Optional[int]) -> str:
    return "unknown" if n is None else f"{n / 1e6:,.1f} MB"


def no_space_message(what: str, path: str, needed_bytes: Optional[int]) -> str:
    free = megabytes(free_bytes(path))
    if needed_bytes is None:
        return (f"no space left on device: writing {what} {path} failed, {free} free on that "
                f"file system")
    return (f"no space left on device: {what} {path} needs about {megabytes(needed_bytes)}, "
            f"{free} free on that file system")


def describe_output_error(err: BaseException, what: str, path: str,
                          needed_bytes: Optional[int] = None) -> str:
    """One line for a failure to write ``what`` at ``path``."""
    if disk_is_full(err, path, needed_bytes):
        return no_space_message(what, path, needed_bytes)
    if any(e == errno.EROFS for e in _errnos(err)):
        return f"cannot write {what} {path}: read-only file system"
    if any(e in (errno.EACCES, errno.EPERM) for e in _errnos(err)):
        return f"cannot write {what} {path}: permission denied"
    if isinstance(err, OSError) and err.strerror:
        if err.filename and os.path.abspath(str(err.filename)) != os.path.abspath(path):
            return f"{err.filename}: {err.strerror}"   # not necessarily our output
        return f"cannot write {what} {path}: {err.strerror}"
    return f"cannot write {what} {path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}"


def check_writable_dir(path: str, what: str) -> None:
    """Create ``path`` if needed and prove a file can be written there (a probe file,
    removed at once); raises ``OutputError`` with one line otherwise. A real write, not
    ``os.access``: a superuser passes ``os.access`` on a read-only file system."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".alum_write_probe.{os.getpid()}")
        with open(probe, "wb") as f:
            f.write(b"\0")
            f.flush()
            os.fsync(f.fileno())
        os.remove(probe)
    except OSError as err:
        raise OutputError(describe_output_error(err, what, path)) from err
