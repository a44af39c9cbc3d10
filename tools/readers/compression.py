"""Plain or compressed files as a stream of decompressed chunks and lines.

Compression is recognised by magic bytes, not by file name, so a `.jsonl`
that is really gzip, or a `wiki_00` compressed by WikiExtractor's
`--compress`, is read correctly.

The readers split lines themselves (instead of wrapping the stream in a text
reader) so that a truncated archive is noticed *before* its partial last
line is handed out as a document: the completed lines before the damage are
kept, the partial one is dropped.
"""
import bz2
import gzip
import lzma
import os
import zlib

CHUNK_BYTES = 1 << 20

# Longest magic first is not needed: the prefixes are distinct.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)


class TruncatedInputError(Exception):
    """A compressed stream ended early or is corrupt."""


def compression_of_bytes(head: bytes):
    """Name of the compression whose magic starts `head`, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    return None


def compression_of(path: str):
    with open(path, "rb") as f:
        return compression_of_bytes(f.read(6))


def _zstd_chunks(raw, chunk_bytes):
    # zstandard's stream_reader returns a short read without error on a
    # truncated frame; decompressobj exposes `eof`, so the end of each frame
    # can be checked. Files may hold several concatenated frames.
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj = dctx.decompressobj()
    fed = False
    while True:
        data = raw.read(chunk_bytes)
        if not data:
            break
        while data:
            fed = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:
                data = dobj.unused_data
                dobj = dctx.decompressobj()
                fed = False
            else:
                data = b""
    if fed and not dobj.eof:
        raise TruncatedInputError("zstd stream ended before the end of its frame")


def iter_fileobj_chunks(raw, compression, chunk_bytes=CHUNK_BYTES):
    """Decompressed chunks of the binary file object `raw`.

    Raises TruncatedInputError when the compressed data ends early or is
    corrupt; chunks yielded before that are intact.
    """
    try:
        if compression == "zstd":
            yield from _zstd_chunks(raw, chunk_bytes)
            return
        if compression is None:
            stream = raw
        elif compression == "gzip":
            stream = gzip.GzipFile(fileobj=raw, mode="rb")
        elif compression == "bz2":
            stream = bz2.BZ2File(raw, mode="rb")
        elif compression == "xz":
            stream = lzma.LZMAFile(raw, mode="rb")
        else:
            raise ValueError(f"unknown compression {compression!r}")
        while True:
            data = stream.read(chunk_bytes)
            if not data:
                return
            yield data
    except TruncatedInputError:
        raise
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        # EOFError: gzip/bz2/xz cut short; OSError covers BadGzipFile and
        # bz2's "Invalid data stream"; zstd raises ZstdError (an Exception).
        raise TruncatedInputError(f"{compression} data ends early or is corrupt ({e})") from e
    except Exception as e:  # zstandard.ZstdError is not an OSError
        if type(e).__name__ == "ZstdError":
            raise TruncatedInputError(f"zstd data is corrupt ({e})") from e
        raise


def iter_file_chunks(path, chunk_bytes=CHUNK_BYTES):
    compression = compression_of(path)
    with open(path, "rb") as raw:
        yield from iter_fileobj_chunks(raw, compression, chunk_bytes)


def iter_lines(chunks):
    """(line_number, line_bytes_without_newline) from a chunk iterator.

    Line numbers start at 1. A TruncatedInputError from the chunks is
    re-raised with `.line` set to the number of the partial line, which is
    dropped.
    """
    lineno = 0
    pending = b""
    try:
        for chunk in chunks:
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                lineno += 1
                yield lineno, line
    except TruncatedInputError as e:
        e.line = lineno + 1
        raise
    if pending:
        yield lineno + 1, pending


def read_head(path, n_bytes=4096):
    """First `n_bytes` of the decompressed content (for format sniffing)."""
    out = b""
    try:
        for chunk in iter_file_chunks(path, chunk_bytes=65536):
            out += chunk
            if len(out) >= n_bytes:
                break
    except TruncatedInputError:
        pass
    return out[:n_bytes]


def file_size(path):
    return os.path.getsize(path)
