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
import lzma
import os
import zlib

CHUNK_BYTES = 1 << 16  # compressed bytes per read; output may be larger

# Longest magic first is not needed: the prefixes are distinct.
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
)
# A zstd file may open with a skippable frame (magic 0x184D2A50-5F, little endian):
# pzstd writes one before each data frame, holding that frame's size.
_ZSTD_SKIPPABLE_TAIL = b"\x2a\x4d\x18"


class TruncatedInputError(Exception):
    """A compressed stream ended early or is corrupt."""


def compression_of_bytes(head: bytes):
    """Name of the compression whose magic starts `head`, or None."""
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    if len(head) >= 4 and head[0] & 0xF0 == 0x50 and head[1:4] == _ZSTD_SKIPPABLE_TAIL:
        return "zstd"
    return None


def compression_of(path: str):
    with open(path, "rb") as f:
        return compression_of_bytes(f.read(6))


def _decompressor_factory(compression):
    if compression == "gzip":
        return lambda: zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    if compression == "bz2":
        return bz2.BZ2Decompressor
    if compression == "xz":
        return lzma.LZMADecompressor
    if compression == "zstd":
        import zstandard

        return zstandard.ZstdDecompressor().decompressobj
    raise ValueError(f"unknown compression {compression!r}")


def _decompressed_chunks(raw, compression, chunk_bytes):
    # Incremental decompressor objects rather than GzipFile & co.: those
    # discard everything of a read() call that hits the end of a truncated
    # file, while a decompressor returns all it could decode, and its `eof`
    # says whether the stream really ended. (zstandard's stream_reader even
    # returns a short read without any error.) Files may hold several
    # concatenated streams (pigz, pbzip2, multi-frame zstd).
    new = _decompressor_factory(compression)
    dobj, fed = new(), False
    while True:
        data = raw.read(chunk_bytes)
        if not data:
            break
        while data:
            if not fed and not data.strip(b"\0"):
                break  # zero padding after the last stream, as gzip tolerates
            fed = True
            out = dobj.decompress(data)
            if out:
                yield out
            if dobj.eof:
                data, dobj, fed = dobj.unused_data, new(), False
            else:
                data = b""
    if fed and not dobj.eof:
        raise TruncatedInputError(f"{compression} data ends before the end of its stream")


def iter_fileobj_chunks(raw, compression, chunk_bytes=CHUNK_BYTES):
    """Decompressed chunks of the binary file object `raw`.

    Raises TruncatedInputError when the compressed data ends early or is
    corrupt; chunks yielded before that are intact.
    """
    if compression is None:
        while True:
            data = raw.read(chunk_bytes)
            if not data:
                return
            yield data
    try:
        yield from _decompressed_chunks(raw, compression, chunk_bytes)
    except TruncatedInputError:
        raise
    except (EOFError, OSError, lzma.LZMAError, zlib.error) as e:
        raise TruncatedInputError(f"{compression} data is corrupt ({e})") from e
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
