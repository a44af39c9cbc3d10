"""Turning --input paths into an ordered list of shards (units of parallel work).

Formats are recognised by content and name (`--format` overrides):

- a directory made by `datasets.save_to_disk`         -> hf-disk, row ranges
- `*.parquet`                                          -> one shard per row group
- `*.tar` (OpenWebText's outer archive)               -> one shard per subset member
- a compressed file whose content is a tar (an OWT subset `.xz`) -> one shard
- `wiki_NN` files, or content starting with `<doc `   -> WikiExtractor (either mode)
- content starting with `{`                            -> JSON lines
- `NNNNNNN-<hex>.txt` files in a directory (extracted OpenWebText) -> one
  document per file, grouped into shards
- anything else                                        -> plain text, blank-line-separated

`split_for_workers` then cuts large uncompressed JSON lines files into
line-aligned byte ranges (byte_ranges.py), and BGZF or multi-frame zstd
JSON lines files into runs of their independent members
(compressed_members.py), so that several workers share one file. Other
compressed files (plain gzip, bz2, xz, single-frame zstd) stay one shard:
their streams cannot be entered in the middle.

Directories are walked recursively in sorted order, so the document order of
the output never depends on the file system or on the number of workers.
"""
import os
import re
from dataclasses import dataclass

from . import arrow
from .byte_ranges import plan_ranges
from .compressed_members import member_ranges
from .compression import compression_of, read_head
from .openwebtext import list_tar_members

FORMATS = ("auto", "jsonl", "wikiextractor", "openwebtext", "text", "hf-disk", "parquet")
TXT_FILES_PER_SHARD = 512
TAR_MEMBERS_PER_SHARD = 1

_WIKI_NAME = re.compile(r"^wiki_\d+(\.bz2)?$")
_OWT_TXT_NAME = re.compile(r"^\d+-[0-9a-f]+\.txt$")


@dataclass(frozen=True)
class Shard:
    """One unit of work; `kind` selects the reader in readers/__init__.py."""

    # kind: jsonl | jsonl-range | jsonl-members | wiki | text | owt-subset | tar-members | txt-files
    #       | hf-disk | parquet | error
    kind: str
    path: str
    # tar-members: ((name, offset, size), ...); txt-files: (path, ...); jsonl-members:
    # ((offset, length),) of the last data member before `start`, when there is one
    items: tuple = ()
    split: object = None  # hf-disk split name
    start: int = 0  # hf-disk first row / parquet row group / jsonl-range, jsonl-members first byte
    stop: int = 0  # hf-disk end row / parquet first row number / jsonl-range, jsonl-members end byte
    error: str = ""  # kind == "error": a problem found while listing, reported when processed

    def describe(self) -> str:
        if self.kind == "tar-members":
            return f"{self.path}[{self.items[0][0]}..]"
        if self.kind == "txt-files":
            return f"{self.path} ({len(self.items)} files)"
        if self.kind == "hf-disk":
            return f"{self.path}[{self.split or ''}:{self.start}-{self.stop}]"
        if self.kind == "parquet":
            return f"{self.path} row group {self.start}"
        if self.kind == "jsonl-range":
            return f"{self.path}[bytes {self.start}:{self.stop}]"
        if self.kind == "jsonl-members":
            return f"{self.path}[members at bytes {self.start}:{self.stop}]"
        return self.path


def _is_tar_bytes(head: bytes) -> bool:
    return len(head) >= 262 and head[257:262] == b"ustar"


def _sniff_file(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(".tar"):
        return "tar"
    if _WIKI_NAME.match(name):
        return "wiki"
    head = read_head(path, 1024)
    if _is_tar_bytes(head):
        return "owt-subset"
    start = head.lstrip()
    if start.startswith(b"{"):
        return "jsonl"
    if start.startswith(b"<doc"):
        return "wiki"
    return "text"


def _forced_kind(path: str, fmt: str) -> str:
    if fmt == "jsonl":
        return "jsonl"
    if fmt == "wikiextractor":
        return "wiki"
    if fmt == "text":
        return "text"
    if fmt == "parquet":
        return "parquet"
    if fmt == "openwebtext":
        if path.endswith(".tar"):
            return "tar"
        if path.endswith(".txt"):
            return "owt-txt"
        return "owt-subset"
    return _sniff_file(path)


def _walk(directory: str):
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if not name.startswith("."):
                yield os.path.join(root, name)


def _file_shards(path: str, kind: str, json_key: str):
    if kind == "tar":
        members, error = list_tar_members(path)
        out = [Shard("tar-members", path, tuple(members[i:i + TAR_MEMBERS_PER_SHARD]))
               for i in range(0, len(members), TAR_MEMBERS_PER_SHARD)]
        if error:
            out.append(Shard("error", path, error=error))
        return out
    if kind == "parquet":
        return [Shard("parquet", path, start=g, stop=first)
                for g, first in arrow.list_parquet_row_groups(path, json_key)]
    return [Shard(kind, path)]


def plan_shards(paths, fmt: str = "auto", json_key: str = "text", hf_split=None):
    """Ordered shards for all `paths` (in the order given)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {FORMATS}")
    shards = []
    for path in paths:
        if not os.path.exists(path):
            raise FileNotFoundError(f"input not found: {path}")
        if os.path.isdir(path) and (fmt == "hf-disk" or (fmt == "auto" and arrow.is_hf_disk_dir(path))):
            shards += [Shard("hf-disk", path, split=s, start=a, stop=b)
                       for s, a, b in arrow.list_hf_shards(path, hf_split, json_key)]
            continue
        files = list(_walk(path)) if os.path.isdir(path) else [path]
        txt_docs = []  # consecutive one-document-per-file .txt files, grouped

        def flush():
            for i in range(0, len(txt_docs), TXT_FILES_PER_SHARD):
                shards.append(Shard("txt-files", os.path.dirname(txt_docs[i]),
                                    tuple(txt_docs[i:i + TXT_FILES_PER_SHARD])))
            txt_docs.clear()

        for file in files:
            name = os.path.basename(file)
            in_dir = os.path.isdir(path)
            if fmt == "auto":
                kind = "owt-txt" if in_dir and _OWT_TXT_NAME.match(name) else _sniff_file(file)
            else:
                kind = _forced_kind(file, fmt)
            if kind == "owt-txt":
                txt_docs.append(file)
                continue
            flush()
            shards += _file_shards(file, kind, json_key)
        flush()
    return shards


def split_for_workers(shards, workers: int):
    """[(shard index, piece)]: each shard, or the byte ranges of a large
    uncompressed JSON lines file, or the member ranges of a BGZF or
    multi-frame zstd JSON lines file (always, even a single range: such a
    file is always read member by member), in order. The pieces' documents
    in order are the shards' documents in order, for any `workers`."""
    pieces = []
    for index, shard in enumerate(shards):
        if shard.kind == "jsonl" and compression_of(shard.path) is None:
            ranges = plan_ranges(os.path.getsize(shard.path), workers)
            if len(ranges) > 1:
                pieces += [(index, Shard("jsonl-range", shard.path, start=a, stop=b)) for a, b in ranges]
                continue
        elif shard.kind == "jsonl":
            ranges = member_ranges(shard.path, workers)
            if ranges:
                pieces += [(index, Shard("jsonl-members", shard.path, start=r.start, stop=r.stop,
                                         items=(r.previous,) if r.previous else ()))
                           for r in ranges]
                continue
        pieces.append((index, shard))
    return pieces
