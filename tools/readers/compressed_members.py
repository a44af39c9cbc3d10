"""Compressed files made of independent members: listing the members from
their headers, and reading a run of them as lines.

Two compressed formats can be entered in the middle, because where each
independent member ends is written in headers, so the members are listed
without decompressing anything:

- BGZF (bgzip, htslib): gzip members whose FEXTRA field holds a "BC"
  subfield with BSIZE = the member's size - 1. Plain gzip headers hold no
  sizes: the end of a member is found only by inflating it, so plain gzip
  is read whole (compression.py), as are bz2 and xz.
- zstd with several frames (pzstd, the seekable format, `cat a.zst b.zst`):
  a frame's size follows from its header and its blocks' 3-byte headers
  (RFC 8878); skippable frames hold no data. A single-frame file has
  nothing to cut at and is read whole.

The listing reads one small header per BGZF member (per zstd block). It
stops at the first header that is not a valid member or that runs past the
end of the file; the bytes from there to the end are listed as one last
member, decoded as a whole (a truncated file, a plain gzip member appended,
zero padding), so exactly one range reads and reports them.

A range [start, stop) of compressed bytes, both member boundaries, owns the
lines that START in the decompressed text of its members: the rule of
byte_ranges.py, applied to the decompressed stream. Its reader decodes the
last non-empty member before `start` (only that one) to learn whether a
line starts at its first byte, and if not, drops its text through the
first newline. The planner, which lists every member anyway, hands each
range the last data member before it (`MemberRange.previous`), so that a
range does not walk the headers from byte 0 to find it; only when that
member decodes to nothing (an empty member) does the range walk back
further. It finishes its last line by decoding the members after `stop`
only until a newline appears. The ranges' lines, concatenated in
order, are therefore the file's lines, for any cut points.

Damage. A member that fails to decode (corrupt data, a bad checksum, the end
of a truncated file) gives what it decoded before failing (always decoded
alone, from its first byte, in the same reads, so that part does not depend
on which range decodes it); where it stops is a damage point in the
decompressed stream. The rule, the same for every range and any cut points:

- the line that contains a damage point is dropped (its start may lie in
  an earlier member, its end in a later one: the partial lines on both
  sides of the damage); lines ending before it are kept, and reading
  resumes with the first line that starts after it;
- the damage is reported once, as "truncated" at that line's absolute
  number, by the range that owns the damaged member.

For the usual damage, a truncated last member, that is exactly what the
whole-file reader does. For damage in the middle of a file the members
after it are still read, where the whole-file reader stops; so that the
outcome never depends on --workers, a BGZF or multi-frame zstd file is
always read through this module (as one range or several).

Line numbers for messages are absolute: like byte_ranges.py, a range counts
the newlines before it (decoding the members before it) only when it has a
message to write.
"""
import itertools
import os
from bisect import bisect_left, bisect_right
from typing import NamedTuple, Optional, Tuple

from .byte_ranges import LineBase, plan_ranges
from .compression import TruncatedInputError, compression_of, iter_fileobj_chunks

_BGZF_READ = 64  # one read holds a BGZF header (18 bytes when the BC subfield is alone)
_ZSTD_MAGIC = 0xFD2FB528
_ZSTD_SKIPPABLE = range(0x184D2A50, 0x184D2A60)

DATA, SKIPPABLE, REST = "data", "skippable", "rest"  # kinds of listed members


def _bgzf_member(fd: int, offset: int, size: int):
    """(length, DATA) of the BGZF member at `offset`, or None if it is not one."""
    head = os.pread(fd, _BGZF_READ, offset)
    if len(head) < 12 or head[:3] != b"\x1f\x8b\x08" or not head[3] & 0x04:
        return None  # not gzip, or no FEXTRA
    xlen = int.from_bytes(head[10:12], "little")
    if 12 + xlen > len(head):  # several extra subfields: one more read
        head += os.pread(fd, 12 + xlen - len(head), offset + len(head))
        if len(head) < 12 + xlen:
            return None
    extra, pos = head[12:12 + xlen], 0
    while pos + 4 <= xlen:
        slen = int.from_bytes(extra[pos + 2:pos + 4], "little")
        if extra[pos:pos + 2] == b"BC" and slen == 2 and pos + 6 <= xlen:
            length = int.from_bytes(extra[pos + 4:pos + 6], "little") + 1
            if length < 12 + xlen + 8 or offset + length > size:  # no room for a trailer, or cut off
                return None
            return length, DATA
        pos += 4 + slen
    return None  # plain gzip: its size is not written anywhere


def _zstd_frame(fd: int, offset: int, size: int):
    """(length, DATA or SKIPPABLE) of the zstd frame at `offset`, or None if it is not one."""
    head = os.pread(fd, 8, offset)
    if len(head) < 5:
        return None
    magic = int.from_bytes(head[:4], "little")
    if magic in _ZSTD_SKIPPABLE:
        if len(head) < 8:
            return None
        length = 8 + int.from_bytes(head[4:8], "little")
        return (length, SKIPPABLE) if offset + length <= size else None
    descriptor = head[4]
    if magic != _ZSTD_MAGIC or descriptor & 0x08:  # reserved bit must be zero
        return None
    single_segment = descriptor >> 5 & 1
    content_size_bytes = (0, 2, 4, 8)[descriptor >> 6] or single_segment
    dict_id_bytes = (0, 1, 2, 4)[descriptor & 0x03]
    pos = offset + 5 + (1 - single_segment) + dict_id_bytes + content_size_bytes
    while True:
        block = os.pread(fd, 3, pos)
        if len(block) < 3:
            return None
        header = int.from_bytes(block, "little")
        block_type = header >> 1 & 0x03
        if block_type == 3:  # reserved
            return None
        pos += 3 + (1 if block_type == 1 else header >> 3)  # RLE blocks store one byte
        if pos > size:
            return None
        if header & 1:  # last block
            break
    if descriptor & 0x04:  # content checksum
        pos += 4
    return (pos - offset, DATA) if pos <= size else None


def _walk(fd: int, compression: str, offset: int, size: int):
    """(offset, length, kind) of the members from `offset` (a member boundary)
    to the end of the file; from the first invalid header on, one REST member."""
    member = _bgzf_member if compression == "gzip" else _zstd_frame
    while offset < size:
        found = member(fd, offset, size)
        if found is None:
            yield offset, size - offset, REST
            return
        length, kind = found
        yield offset, length, kind
        offset += length


def _compression_and_size(path: str):
    """(compression, size) of a BGZF or zstd candidate, else None."""
    compression = compression_of(path)
    if compression not in ("gzip", "zstd"):
        return None
    return compression, os.path.getsize(path)


def _listing(path: str):
    """[(offset, length, kind)] of every member of a BGZF or multi-frame zstd file,
    or None when it cannot be split (not BGZF or zstd, or fewer than two data members)."""
    found = _compression_and_size(path)
    if found is None:
        return None
    compression, size = found
    with open(path, "rb") as f:
        members = list(_walk(f.fileno(), compression, 0, size))
    if sum(kind == DATA for _, _, kind in members) < 2:
        return None
    return members


def list_members(path: str):
    """[(offset, length)] of the independent members of a BGZF or multi-frame
    zstd file, covering the whole file; None when it cannot be split (not
    BGZF or zstd, or fewer than two members with data)."""
    members = _listing(path)
    return None if members is None else [(offset, length) for offset, length, _ in members]


def is_splittable(path: str) -> bool:
    """Whether `path` is BGZF or multi-frame zstd (reads headers up to its second data member)."""
    found = _compression_and_size(path)
    if found is None:
        return False
    compression, size = found
    data_members = 0
    with open(path, "rb") as f:
        for _, _, kind in _walk(f.fileno(), compression, 0, size):
            data_members += kind == DATA
            if data_members == 2:
                return True
    return False


class MemberRange(NamedTuple):
    """Compressed bytes [start, stop) at member boundaries, and `previous`: the
    (offset, length) of the last data member before `start` (None if none), which
    the range decodes to learn whether a line starts at its first byte."""

    start: int
    stop: int
    previous: Optional[Tuple[int, int]] = None


def _with_previous(members, bounds):
    """MemberRange for each (start, stop) in `bounds`, given the file's listing."""
    data = [(offset, length) for offset, length, kind in members if kind == DATA]
    ends = [offset + length for offset, length in data]
    out = []
    for start, stop in bounds:
        before = bisect_right(ends, start)  # data members that end at or before start
        out.append(MemberRange(start, stop, data[before - 1] if start > 0 and before else None))
    return out


def ranges_at(path: str, bounds):
    """MemberRange for each (start, stop) member-boundary range in `bounds` of a
    splittable file (the predecessors found from one listing of its headers)."""
    members = _listing(path)
    if members is None:
        raise ValueError(f"{path}: not a BGZF or multi-frame zstd file")
    return _with_previous(members, bounds)


def member_ranges(path: str, workers: int):
    """[MemberRange] at member boundaries for `workers` workers (the sizing of
    byte_ranges.py, each cut moved to the next member boundary), or None when
    the file cannot be split. A splittable file gets ranges even when that is a
    single one: it is always read member by member."""
    members = _listing(path)
    if not members:
        return None
    size = members[-1][0] + members[-1][1]
    bounds = [offset for offset, _, _ in members] + [size]
    starts = sorted({bounds[bisect_left(bounds, a)] for a, _ in plan_ranges(size, workers)})
    return _with_previous(members, [(a, b) for a, b in zip(starts, starts[1:] + [size]) if b > a])


class _Window:
    """The bytes [offset, offset + length) of an open file, as a readable file object."""

    def __init__(self, fd: int, offset: int, length: int):
        self.fd, self.pos, self.left = fd, offset, length

    def read(self, n: int) -> bytes:
        data = os.pread(self.fd, min(n, self.left), self.pos) if self.left > 0 else b""
        self.pos += len(data)
        self.left -= len(data)
        return data


def _member_chunks(fd: int, compression: str, offset: int, length: int):
    """Decoded chunks of one member, read from its first byte in fixed-size reads
    (so what a damaged member gives before its TruncatedInputError does not
    depend on the range decoding it)."""
    return iter_fileobj_chunks(_Window(fd, offset, length), compression)


def _members_before(path: str, fd: int, compression: str, start: int, size: int):
    before = []
    for offset, length, _ in _walk(fd, compression, 0, size):
        if offset >= start:
            break
        before.append((offset, length))
    end = before[-1][0] + before[-1][1] if before else 0
    if end != start:
        raise ValueError(f"{path}: byte {start} is not a member boundary (members end at {end})")
    return before


def _last_decoded_byte(fd: int, compression: str, offset: int, length: int):
    """The member's last decoded byte (b"" when it decodes to nothing), or None when
    it is damaged (its damage point is then the last thing before what follows it)."""
    last = b""
    try:
        for chunk in _member_chunks(fd, compression, offset, length):
            last = chunk[-1:] or last
    except TruncatedInputError:
        return None
    return last


def _line_starts_at(path: str, fd: int, compression: str, start: int, size: int,
                    previous=None) -> bool:
    """Whether a line starts at the first decoded byte of the member at `start`:
    the last byte decoded before it is a newline (or none is), and no damage
    point lies right there (a damage point right before the range: its first
    line is dropped). Decodes members backwards to the first non-empty one,
    from `previous` (the last data member before `start`) when given; only if
    that one decodes to nothing are the headers walked from byte 0, to the
    members before it."""
    if previous is not None:
        last = _last_decoded_byte(fd, compression, *previous)
        if last != b"":
            return last == b"\n"
        start = previous[0]  # it, and the non-data members after it, decode to nothing
    for offset, length in reversed(_members_before(path, fd, compression, start, size)):
        last = _last_decoded_byte(fd, compression, offset, length)
        if last != b"":
            return last == b"\n"
    return True


def lines_before(path: str, start: int) -> int:
    """Newlines in the decoded text of the members before byte `start`
    (damaged members count with what they decode)."""
    compression = compression_of(path)
    count = 0
    with open(path, "rb") as f:
        fd = f.fileno()
        for offset, length in _members_before(path, fd, compression, start, os.fstat(fd).st_size):
            try:
                for chunk in _member_chunks(fd, compression, offset, length):
                    count += chunk.count(b"\n")
            except TruncatedInputError:
                pass
    return count


class MemberLineBase(LineBase):
    """Absolute line number base of a member range: newlines decoded before it, counted on first use."""

    def lines_before(self) -> int:
        if self._lines_before is None:
            self._lines_before = lines_before(self.path, self.start)
        return self._lines_before


def _finish_line(fd: int, compression: str, members, parts):
    """The rest of a line that runs past the range: decodes the following members until a
    newline. None when a damage point comes first (the line is dropped; the range owning
    the damaged member reports it)."""
    for offset, length, _ in members:
        try:
            for chunk in _member_chunks(fd, compression, offset, length):
                newline = chunk.find(b"\n")
                if newline >= 0:
                    parts.append(chunk[:newline])
                    return b"".join(parts)
                parts.append(chunk)
        except TruncatedInputError:
            return None
    return b"".join(parts)  # the file's last line, without a newline


def iter_member_range_lines(path: str, start: int, stop: int, previous=None):
    """(relative_line, line_bytes, None) for each line that starts in the decoded
    text of the members in [start, stop), in order, and (relative_line, None,
    TruncatedInputError) where a member of the range is damaged, naming the line
    that holds the damage point. Relative line 1 is the line holding the range's
    first decoded byte; add `lines_before(path, start)` for absolute numbers.
    `previous`: the (offset, length) of the last data member before `start`
    (MemberRange.previous), if known; without it the headers before `start` are walked."""
    compression = compression_of(path)
    with open(path, "rb") as f:
        fd = f.fileno()
        size = os.fstat(fd).st_size
        dropping = start > 0 and not _line_starts_at(path, fd, compression, start, size, previous)
        newlines, pending = 0, b""
        walk = _walk(fd, compression, start, size)
        following = []
        for offset, length, kind in walk:
            if offset >= stop:
                following.append((offset, length, kind))
                break
            try:
                for chunk in _member_chunks(fd, compression, offset, length):
                    if dropping:  # inside a line that is not this range's, or a damaged one
                        newline = chunk.find(b"\n")
                        if newline < 0:
                            continue
                        newlines += 1
                        dropping, chunk = False, chunk[newline + 1:]
                    lines = (pending + chunk).split(b"\n")
                    pending = lines.pop()
                    for line in lines:
                        newlines += 1
                        yield newlines, line, None
            except TruncatedInputError as e:
                yield newlines + 1, None, e
                dropping, pending = True, b""
        if dropping or not pending:
            return  # an unfinished line with nothing decoded in this range starts in the next one
        line = _finish_line(fd, compression, itertools.chain(following, walk), [pending])
        if line is not None:
            yield newlines + 1, line, None
