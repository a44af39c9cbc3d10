"""OpenWebText: a `.tar` of `.xz` subset archives, each a tar.xz of `.txt`
documents (one document per file).

The outer tar is listed once when shards are planned; each shard records the
byte offset and size of its members, so a worker reads its subset archives
directly instead of re-scanning the outer tar (20k+ members in the real one).
"""
import io
import lzma
import tarfile
import zlib

from .bad_input import SkipLog
from .compression import TruncatedInputError, compression_of_bytes, iter_fileobj_chunks
from .plaintext import whole_document

# tarfile stream modes by compression name
_STREAM_MODE = {"xz": "r|xz", "gzip": "r|gz", "bz2": "r|bz2", None: "r|"}
_READ_ERRORS = (tarfile.TarError, EOFError, OSError, lzma.LZMAError, zlib.error)


def list_tar_members(path: str):
    """([(name, data_offset, size)] of .xz/.txt members in order, error or "")."""
    members, error = [], ""
    try:
        with tarfile.open(path, "r:") as tar:
            for info in tar:
                if info.isfile() and info.name.endswith((".xz", ".txt")):
                    members.append((info.name, info.offset_data, info.size))
    except _READ_ERRORS as e:
        error = f"tar listing stopped after {len(members)} members: {e}"
    return members, error


def iter_subset_documents(data: bytes, where: str, log: SkipLog):
    """(where, text) for every .txt inside one compressed subset archive."""
    compression = compression_of_bytes(data[:6])
    if compression == "zstd":  # tarfile has no zstd mode before Python 3.14
        try:
            data = b"".join(iter_fileobj_chunks(io.BytesIO(data), "zstd"))
        except TruncatedInputError as e:
            log.skip("truncated", where, str(e))
            return
        compression = None
    member = "?"
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode=_STREAM_MODE[compression]) as tar:
            for info in tar:
                member = info.name
                if not (info.isfile() and info.name.endswith(".txt")):
                    continue
                raw = tar.extractfile(info).read()
                doc = whole_document(raw, f"{where}[{info.name}]", log)
                if doc is not None:
                    yield doc
    except _READ_ERRORS as e:
        log.skip("truncated", f"{where} after member {member}", f"archive ends early or is corrupt ({e})")


def iter_tar_member_documents(path: str, members, log: SkipLog):
    """Documents of the listed outer-tar members: subset archives or .txt files."""
    with open(path, "rb") as f:
        for name, offset, size in members:
            f.seek(offset)
            data = f.read(size)
            where = f"{path}[{name}]"
            if len(data) < size:
                log.skip("truncated", where, f"member has {len(data)} of {size} bytes")
                return
            if name.endswith(".xz"):
                yield from iter_subset_documents(data, where, log)
            else:
                doc = whole_document(data, where, log)
                if doc is not None:
                    yield doc


def iter_subset_file_documents(path: str, log: SkipLog):
    """Documents of one subset archive on disk (an extracted outer tar)."""
    with open(path, "rb") as f:
        data = f.read()
    yield from iter_subset_documents(data, path, log)
