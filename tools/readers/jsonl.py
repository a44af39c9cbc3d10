"""JSON lines (plain, .gz, .bz2, .xz, .zst): one document per line under a key.

A whole file is read through the decompressing line reader; a byte range of
an uncompressed file (byte_ranges.py) through the range reader; a BGZF or
multi-frame zstd file, whole or a range of its members, through the member
reader (compressed_members.py), whose damage rule then holds for any number
of workers. All parse lines the same way here.
"""
import json
import os

from .bad_input import SkipLog, decode_utf8
from .byte_ranges import LineBase, RangeLine, iter_range_lines
from .compressed_members import MemberLineBase, is_splittable, iter_member_range_lines
from .compression import TruncatedInputError, iter_file_chunks, iter_lines


def _documents(numbered_lines, where_of, json_key: str, log: SkipLog):
    loads, key = json.loads, json_key
    for lineno, raw in numbered_lines:
        if not raw.strip():
            continue  # blank separator lines are not documents
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            decode_utf8(raw, log, where_of(lineno))  # logs it with the byte offset
            continue
        try:
            record = loads(line)
        except json.JSONDecodeError as e:
            log.skip("malformed", where_of(lineno), f"invalid JSON ({e.msg} at column {e.colno})")
            continue
        if not isinstance(record, dict) or key not in record:
            log.skip("missing_key", where_of(lineno), f"no key {key!r}")
            continue
        text = record[key]
        if not isinstance(text, str):
            log.skip("missing_key", where_of(lineno), f"{key!r} holds {type(text).__name__}, not a string")
            continue
        yield where_of(lineno), text


def iter_json_lines(path: str, json_key: str, log: SkipLog):
    """(where, text) for each line of `path` whose `json_key` holds a string."""
    if is_splittable(path):
        yield from iter_json_member_range(path, 0, os.path.getsize(path), json_key, log)
        return
    try:
        yield from _documents(iter_lines(iter_file_chunks(path)), lambda n: f"{path}:{n}", json_key, log)
    except TruncatedInputError as e:
        log.skip("truncated", f"{path}:{e.line}", str(e))


def iter_json_line_range(path: str, start: int, end: int, json_key: str, log: SkipLog):
    """(where, text) for the lines of uncompressed `path` that start in [start, end).

    `where` prints as `path:line` with the absolute line number.
    """
    base = LineBase(path, start)
    yield from _documents(iter_range_lines(path, start, end), lambda n: RangeLine(base, n), json_key, log)


def iter_json_member_range(path: str, start: int, stop: int, json_key: str, log: SkipLog,
                           previous=None):
    """(where, text) for the lines that start in the decoded members in [start, stop)
    of a BGZF or multi-frame zstd `path` (compressed byte offsets at member boundaries;
    `previous`: the last data member before `start`, as the planner found it).

    A damaged member is logged as "truncated" at the absolute line holding the damage.
    """
    base = MemberLineBase(path, start)

    def lines():
        for lineno, line, damage in iter_member_range_lines(path, start, stop, previous):
            if damage is None:
                yield lineno, line
            else:
                log.skip("truncated", RangeLine(base, lineno), str(damage))

    yield from _documents(lines(), lambda n: RangeLine(base, n), json_key, log)
