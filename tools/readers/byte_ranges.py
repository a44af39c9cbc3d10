"""Line-aligned byte ranges: several workers sharing one large line-based file.

A file of S bytes is cut at byte offsets into ranges [start, end). The range
that owns a line is the one in which the line STARTS: a worker skips to the
first line start at or after `start` (a line starts at 0 or right after a
`\\n`) and reads every line that starts before `end`, even when the line runs
past `end`. Every line therefore belongs to exactly one range whatever the
cut points are, and the ranges' documents, concatenated in range order, are
the file's documents in file order.

Only uncompressed files are cut here: plain gzip, bz2, xz and single-frame
zstd streams cannot be entered in the middle without decoding everything
before it. BGZF and multi-frame zstd files are cut at the boundaries of
their independent members instead, with the same sizing and the same
ownership rule on the decompressed text (compressed_members.py).

Line numbers for messages are absolute: a range numbers its lines from 1
and, only when a message is written (damaged input is rare), counts the
newlines before its first line once (`LineBase`).
"""
import math

CHUNK_BYTES = 1 << 20
MIN_RANGE_BYTES = 1 << 18  # the last ranges: ~0.15 s of tokenizing, so workers end together
MAX_RANGE_BYTES = 1 << 28  # resume granularity and per-range index memory for huge files
SHARE_PER_RANGE = 2  # with N workers, a range takes 1 / (2 N) of the bytes still uncut


def plan_ranges(size: int, workers: int):
    """[(start, end)] byte ranges covering [0, size) for `workers` workers.

    One worker: near-equal ranges of at most MAX_RANGE_BYTES (resume units).
    Several: guided sizes, each range 1 / (2 N) of what is left (within
    [MIN_RANGE_BYTES, MAX_RANGE_BYTES]): large ranges first, few of them, and
    small ones last, so that the workers run out of work within a small range
    of each other (equal ranges leave one worker idle for up to a whole range).
    """
    if workers <= 1:
        return cut_points(size, max(1, math.ceil(size / MAX_RANGE_BYTES)))
    bounds, pos = [0], 0
    while pos < size:
        step = min(MAX_RANGE_BYTES, max(MIN_RANGE_BYTES, (size - pos) // (SHARE_PER_RANGE * workers)))
        pos = size if size - pos < step + MIN_RANGE_BYTES else pos + step  # no sliver at the end
        bounds.append(pos)
    return list(zip(bounds, bounds[1:]))


def cut_points(size: int, pieces: int):
    """[(start, end)] of `pieces` near-equal byte ranges covering [0, size)."""
    bounds = [size * i // pieces for i in range(pieces + 1)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]


def _first_line_start(f, start: int) -> int:
    """Offset of the first line that starts at or after `start`."""
    if start == 0:
        return 0
    f.seek(start - 1)
    pos = start - 1
    while True:
        chunk = f.read(CHUNK_BYTES)
        if not chunk:
            return pos  # no further line: end of file
        newline = chunk.find(b"\n")
        if newline >= 0:
            return pos + newline + 1
        pos += len(chunk)


def iter_range_lines(path: str, start: int, end: int, chunk_bytes: int = CHUNK_BYTES):
    """(relative_line_number, line_bytes_without_newline) of the lines starting in
    [start, end); the first such line is number 1. A last line without a
    newline is yielded like the others."""
    with open(path, "rb") as f:
        pos = _first_line_start(f, start)  # offset of the next line's start
        if pos >= end:
            return
        f.seek(pos)
        lineno, pending = 0, b""
        while True:
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            for line in lines:
                lineno += 1
                yield lineno, line
                pos += len(line) + 1
                if pos >= end:
                    return
        if pending:
            yield lineno + 1, pending


class LineBase:
    """Absolute line number of a range's first line, counted on first use."""

    def __init__(self, path: str, start: int):
        self.path = path
        self.start = start
        self._lines_before = None

    def lines_before(self) -> int:
        if self._lines_before is None:
            with open(self.path, "rb") as f:
                first = _first_line_start(f, self.start)
                f.seek(0)
                count, left = 0, first
                while left > 0:
                    chunk = f.read(min(CHUNK_BYTES, left))
                    if not chunk:
                        break
                    count += chunk.count(b"\n")
                    left -= len(chunk)
            self._lines_before = count
        return self._lines_before


class RangeLine:
    """`path:line` of a line in a range, the absolute number computed when printed."""

    __slots__ = ("base", "line")

    def __init__(self, base: LineBase, line: int):
        self.base = base
        self.line = line

    def __str__(self) -> str:
        return f"{self.base.path}:{self.base.lines_before() + self.line}"

    __repr__ = __str__

    def __format__(self, spec) -> str:
        return format(str(self), spec)
