"""Workers sharing one BGZF or multi-frame zstd file: ranges of its members.

Files are written here member by member (BGZF with zlib, zstd frames with
`zstandard`), so the true member offsets are known. The reference for a
file's lines is the whole file decompressed by `gzip`/`zstandard` and split
at b"\\n"; for damaged files it is the whole-file reader that plain gzip
uses (`iter_lines(iter_file_chunks(...))`), or the damage rule of
compressed_members.py applied to each member decoded alone by the
compression library. Ranges are made small (monkeypatched MIN_RANGE_BYTES,
read in the parent, which cuts the file) so that a few kB are cut into
several ranges.
"""
import bz2
import gzip
import json
import lzma
import random
import struct
import zlib

import pytest

from alum.tools.readers import byte_ranges, plan_shards, split_for_workers
from alum.tools.readers import compressed_members as cm
from alum.tools.readers.compression import (CHUNK_BYTES, TruncatedInputError, compression_of, iter_file_chunks,
                                             iter_lines)

from .helpers import expected_ids, read_documents, run_preprocess

FORMATS = ("bgzf", "zstd")


def _zstandard():
    return pytest.importorskip("zstandard", reason="zstandard is not installed: no zstd files to test")


def _bgzf_member(data: bytes, other_subfield: bool = False) -> bytes:
    """One BGZF member: gzip with FEXTRA holding BC (and optionally another subfield before it)."""
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = deflate.compress(data) + deflate.flush()
    extra = (b"AB" + struct.pack("<H", 3) + b"xyz") if other_subfield else b""
    xlen = len(extra) + 6
    bsize = 12 + xlen + len(body) + 8 - 1
    header = b"\x1f\x8b\x08\x04" + b"\0\0\0\0" + b"\0\xff" + struct.pack("<H", xlen)
    header += extra + b"BC" + struct.pack("<HH", 2, bsize)
    return header + body + struct.pack("<II", zlib.crc32(data), len(data) & 0xFFFFFFFF)


def _zstd_members(chunks):
    """zstd frames with and without content size and checksum, and a skippable frame."""
    zstandard = _zstandard()
    compressors = [zstandard.ZstdCompressor(),
                   zstandard.ZstdCompressor(write_checksum=True, write_content_size=False),
                   zstandard.ZstdCompressor(level=1, write_checksum=True)]
    members = [compressors[i % 3].compress(c) for i, c in enumerate(chunks)]
    if len(members) > 2:
        members.insert(2, struct.pack("<II", 0x184D2A5E, 5) + b"skip!")
    return members


def _members(fmt, chunks):
    """The compressed members of `chunks`, one per chunk (plus format extras)."""
    if fmt == "bgzf":
        members = [_bgzf_member(c, other_subfield=i % 5 == 1) for i, c in enumerate(chunks)]
        return members + [_bgzf_member(b"")]  # bgzip ends with an empty member
    return _zstd_members(chunks)


def _offsets(members):
    out, pos = [], 0
    for m in members:
        out.append((pos, len(m)))
        pos += len(m)
    return out


def _whole(fmt, data: bytes) -> bytes:
    """The same content as one plain gzip member / one zstd frame (not splittable)."""
    return gzip.compress(data) if fmt == "bgzf" else _zstandard().ZstdCompressor().compress(data)


def _decompress(fmt, blob: bytes) -> bytes:
    if fmt == "bgzf":
        return gzip.decompress(blob)
    zstandard, out = _zstandard(), []
    while blob:  # frame by frame: a decompressor object stops at the end of a frame
        d = zstandard.ZstdDecompressor().decompressobj()
        out.append(d.decompress(blob))
        blob = d.unused_data
    return b"".join(out)


def _reference_lines(data: bytes):
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # a final newline ends the last line, it does not start one
    return list(enumerate(lines, start=1))


def _random_chunks(rng, data: bytes, longest: int):
    """`data` cut into member contents: empty ones, some ending right at a line end,
    most shorter than a line."""
    chunks, pos = [], 0
    while pos < len(data):
        roll = rng.random()
        if roll < 0.1:
            chunks.append(b"")
            continue
        newline = data.find(b"\n", pos)
        end = newline + 1 if roll < 0.3 and newline >= 0 else pos + rng.randint(1, longest)
        chunks.append(data[pos:end])
        pos = end
    return chunks


def _messy_text(rng, n_lines, trailing_newline):
    lines = []
    for _ in range(n_lines):
        roll = rng.random()
        if roll < 0.15:
            lines.append(b"")
        elif roll < 0.25:
            lines.append(b"L" * rng.randint(150, 400))  # longer than several members
        else:
            lines.append(bytes(rng.choice(b"abc \t{}\r") for _ in range(rng.randint(1, 40))))
    data = b"\n".join(lines)
    return data + b"\n" if trailing_newline else data


def _read_range(path, start, stop, previous):
    return [(n, line, None if damage is None else str(damage))
            for n, line, damage in cm.iter_member_range_lines(str(path), start, stop, previous)]


def _read_ranges(path, bounds):
    """Absolute-numbered lines and damage reports of the ranges `bounds`, in order.
    Each range is read twice: with the predecessor member the planner hands it, and
    without (walking the headers from byte 0); both must give the same."""
    lines, reports = [], []
    for start, stop, previous in cm.ranges_at(str(path), [tuple(b[:2]) for b in bounds]):
        base = cm.lines_before(str(path), start)
        read = _read_range(path, start, stop, previous)
        assert read == _read_range(path, start, stop, None), (start, stop, previous)
        for n, line, damage in read:
            if damage is None:
                lines.append((base + n, line))
            else:
                reports.append((base + n, damage))
    return lines, reports


def _cut_sets(rng, boundaries, size, random_sets=150):
    """Every two-range cut at a member boundary, then random three- and four-range cuts."""
    inner = [b for b in boundaries if 0 < b < size]
    for cut in inner:
        yield [(0, cut), (cut, size)]
    for _ in range(random_sets):
        cuts = sorted(set(rng.sample(inner, min(len(inner), rng.choice((2, 3))))))
        starts = [0] + cuts
        yield list(zip(starts, starts[1:] + [size]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_listing_gives_the_written_member_boundaries(tmp_path, fmt):
    rng = random.Random(11)
    chunks = _random_chunks(rng, _messy_text(rng, 80, True), 60)
    if fmt == "zstd":  # frames of several blocks (raw, RLE or compressed), so blocks are walked too
        chunks += [rng.randbytes(300_000), b"a" * 200_000 + b"\n"]
    members = _members(fmt, chunks)
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(b"".join(members))
    assert cm.list_members(str(path)) == _offsets(members)
    assert cm.is_splittable(str(path))


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("trailing_newline", [True, False])
def test_every_cut_set_gives_each_line_once_in_order(tmp_path, fmt, trailing_newline):
    rng = random.Random(5 + trailing_newline)
    data = _messy_text(rng, 60, trailing_newline)
    members = _members(fmt, _random_chunks(rng, data, 50))
    blob = b"".join(members)
    path = tmp_path / f"f.{fmt}"
    path.write_bytes(blob)
    assert _decompress(fmt, blob) == data
    expected = (_reference_lines(data), [])
    boundaries = [offset for offset, _ in _offsets(members)]
    for bounds in _cut_sets(rng, boundaries, len(blob)):
        assert _read_ranges(path, bounds) == expected, bounds
    for workers in (1, 2, 3, 8):
        assert _read_ranges(path, cm.member_ranges(str(path), workers)) == expected


def _whole_file_reading(path):
    """Lines and damage report of the reader that plain gzip goes through."""
    lines = []
    try:
        for n, line in iter_lines(iter_file_chunks(str(path))):
            lines.append((n, line))
    except TruncatedInputError as e:
        return lines, [(e.line, str(e))]
    return lines, []


def _member_output(fmt, member: bytes):
    """What the compression library decodes from one member alone, and whether it fails."""
    assert len(member) <= CHUNK_BYTES  # decoded in one call, as the reader reads it
    if fmt == "bgzf":
        d = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
        errors = (zlib.error,)
    else:
        zstandard = _zstandard()
        d, errors = zstandard.ZstdDecompressor().decompressobj(), (zstandard.ZstdError,)
    try:
        out = d.decompress(member)
    except errors:
        return b"", True
    return out, not d.eof


def _damage_rule(outputs):
    """The module's damage rule, stated directly: lines holding a damage point are
    dropped; each damage is reported at the line holding it."""
    text, points = b"", []
    for out, damaged in outputs:
        text += out
        if damaged:
            points.append(len(text))
    spans, start = [], 0
    while start < len(text):
        end = text.find(b"\n", start)
        end = len(text) if end < 0 else end
        spans.append((start, end))
        start = end + 1
    lines = [(n, text[s:e]) for n, (s, e) in enumerate(spans, start=1)
             if not any(s <= d <= e for d in points)]
    return lines, [text[:d].count(b"\n") + 1 for d in points]


def _corrupt_data(fmt, member: bytes) -> bytes:
    """The member with its compressed data broken and its header intact."""
    if fmt == "bgzf":
        xlen = int.from_bytes(member[10:12], "little")
        return member[:12 + xlen] + b"\xff" + member[13 + xlen:]  # BTYPE 3: an invalid deflate block
    return member[:-1] + bytes([member[-1] ^ 0xFF])  # a frame written with a checksum: it fails


def _damaged_file(fmt, case, rng):
    data = _messy_text(rng, 50, True)
    chunks = _random_chunks(rng, data, 50)
    members = _members(fmt, chunks)
    if fmt == "bgzf":
        members.pop()  # no empty last member: the last one holds data, to be cut
    if case == "truncated last member":
        members[-1] = members[-1][:len(members[-1]) // 2]
    elif case == "corrupt members":
        candidates = list(range(1, len(members)))
        rng.shuffle(candidates)
        broken = 0
        for i in candidates:  # three whose corruption the library notices (zstd: checksummed frames)
            corrupt = _corrupt_data(fmt, members[i])
            if broken < 3 and _member_output(fmt, corrupt)[1]:
                members[i], broken = corrupt, broken + 1
    elif case == "bad header mid-file":
        i = len(members) // 2
        members[i] = b"\0garbage" + members[i][8:]
    return members


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", ["truncated last member", "corrupt members", "bad header mid-file"])
def test_damage_gives_the_same_lines_and_reports_for_any_cuts(tmp_path, fmt, case):
    rng = random.Random(f"{fmt} {case}")
    members = _damaged_file(fmt, case, rng)
    blob = b"".join(members)
    path = tmp_path / f"d.{fmt}"
    path.write_bytes(blob)
    whole = _read_ranges(path, [(0, len(blob))])
    assert whole[1], "the damage is reported"
    if case == "corrupt members":
        lines, report_lines = _damage_rule([_member_output(fmt, m) for m in members])
        assert whole[0] == lines and [n for n, _ in whole[1]] == report_lines
        assert len(report_lines) == 3
    else:  # what the whole-file reader gives, message included
        assert whole == _whole_file_reading(path)
    boundaries = [offset for offset, _ in cm.list_members(str(path))]
    for bounds in _cut_sets(rng, boundaries, len(blob), random_sets=60):
        assert _read_ranges(path, bounds) == whole, bounds


def test_valid_gzip_member_without_bc_mid_file_is_read_on(tmp_path):
    """A listing that stops at a plain gzip member reads the rest of the file as one member."""
    rng = random.Random(3)
    data = _messy_text(rng, 40, False)
    chunks = _random_chunks(rng, data, 50)
    i = len(chunks) // 2
    members = [_bgzf_member(c) for c in chunks[:i]] + [gzip.compress(b"".join(chunks[i:]))]
    blob = b"".join(members)
    path = tmp_path / "mixed.gz"
    path.write_bytes(blob)
    assert cm.list_members(str(path)) == _offsets(members)
    expected = (_reference_lines(gzip.decompress(blob)), [])
    for bounds in _cut_sets(rng, [o for o, _ in _offsets(members)], len(blob), random_sets=30):
        assert _read_ranges(path, bounds) == expected


def _jsonl(texts):
    """JSON lines with CRLF endings, blank lines, and no final newline."""
    out = []
    for i, t in enumerate(texts):
        out.append(json.dumps({"text": t}).encode() + (b"\r\n" if i % 3 == 0 else b"\n"))
        if i % 4 == 1:
            out.append(b"\n" if i % 8 == 1 else b"  \r\n")
    return b"".join(out).rstrip(b"\r\n")


def _short_texts(sample_texts, n=100):
    return [t[:150 + i % 100] for i, t in enumerate((sample_texts * 2)[:n])]


@pytest.fixture
def small_ranges(monkeypatch):
    monkeypatch.setattr(byte_ranges, "MIN_RANGE_BYTES", 256)


def _outputs(prefix):
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def test_only_bgzf_and_multi_frame_zstd_are_split(tmp_path, small_ranges):
    rng = random.Random(2)
    lines = _messy_text(rng, 400, True).split(b"\n")
    data = b"".join(json.dumps({"text": line.decode()}).encode() + b"\n" for line in lines)
    chunks = _random_chunks(rng, data, 300)
    files = {"plain.gz": gzip.compress(data),
             "members.gz": gzip.compress(data[:999]) + gzip.compress(data[999:]),  # as pigz writes
             "a.bz2": bz2.compress(data), "a.xz": lzma.compress(data),
             "bgzf.gz": b"".join(_members("bgzf", chunks))}
    try:
        import zstandard
        skippable = struct.pack("<II", 0x184D2A50, 3) + b"abc"
        files["single.zst"] = zstandard.ZstdCompressor().compress(data) + skippable
        files["frames.zst"] = b"".join(_members("zstd", chunks))
    except ImportError:
        pass
    for name, blob in files.items():
        path = tmp_path / name
        path.write_bytes(blob)
        pieces = split_for_workers(plan_shards([str(path)]), 3)
        if name in ("bgzf.gz", "frames.zst"):
            assert len(pieces) == len(cm.member_ranges(str(path), 3)) > 4
            assert {p.kind for _, p in pieces} == {"jsonl-members"}
            assert pieces[0][1].describe() == f"{path}[members at bytes 0:{pieces[0][1].stop}]"
            one = split_for_workers(plan_shards([str(path)]), 1)  # always member by member
            assert [(p.kind, p.start, p.stop) for _, p in one] == [("jsonl-members", 0, len(blob))]
        else:
            assert cm.list_members(str(path)) is None and not cm.is_splittable(str(path))
            assert [p.kind for _, p in pieces] == ["jsonl"], name


def _member_file(fmt, data, rng):
    return b"".join(_members(fmt, _random_chunks(rng, data, 400)))


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_two_three_workers_write_the_unsplit_bytes(tmp_path, tokenizer_dir, tokenizer, sample_texts,
                                                       small_ranges, fmt):
    rng = random.Random(9)
    texts = _short_texts(sample_texts)
    data = _jsonl(texts)
    path = tmp_path / f"one.jsonl.{fmt}"
    path.write_bytes(_member_file(fmt, data, rng))
    reference = tmp_path / f"whole.jsonl.{fmt}"
    reference.write_bytes(_whole(fmt, data))
    code, summary = run_preprocess("--input", reference, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "ref")
    assert code == 0 and summary["pieces"] == 1
    pieces = {}
    for workers in (1, 2, 3):
        code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                       "--output-prefix", tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0 and summary["skipped"]["truncated"] == 0
        pieces[workers] = summary["pieces"]
        assert _outputs(tmp_path / f"w{workers}") == _outputs(tmp_path / "ref"), workers
    assert pieces == {w: len(cm.member_ranges(str(path), w)) for w in (1, 2, 3)}
    assert pieces[1] == 1 and pieces[3] > pieces[2] > 4
    assert read_documents(tmp_path / "ref") == [[expected_ids(tokenizer, t)] for t in texts]


def _expected_documents(tokenizer, lines):
    texts = [json.loads(line)["text"] for _, line in lines if line.strip()]
    return [[expected_ids(tokenizer, t)] for t in texts]


@pytest.mark.parametrize("fmt", FORMATS)
def test_truncated_last_member_same_output_and_report_for_any_workers(
        tmp_path, tokenizer_dir, tokenizer, sample_texts, small_ranges, fmt):
    rng = random.Random(4)
    data = _jsonl(_short_texts(sample_texts))
    members = _members(fmt, _random_chunks(rng, data, 400))
    if fmt == "bgzf":
        members.pop()  # the empty last member: cut one holding lines
    members[-1] = members[-1][:len(members[-1]) // 2]
    path = tmp_path / f"cut.jsonl.{fmt}"
    path.write_bytes(b"".join(members))
    lines, [(line, message)] = _whole_file_reading(path)
    for workers in (1, 2, 3):
        code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                       "--output-prefix", tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0 and (workers == 1 or summary["pieces"] > 1)
        assert summary["skipped"]["truncated"] == 1
        assert summary["skipped_examples"] == [f"{path}:{line}: truncated: {message}"], workers
        assert read_documents(tmp_path / f"w{workers}") == _expected_documents(tokenizer, lines)


def test_corrupt_bgzf_members_mid_file_same_output_and_report_for_any_workers(
        tmp_path, tokenizer_dir, tokenizer, sample_texts, small_ranges, capsys):
    rng = random.Random(8)
    data = _jsonl(_short_texts(sample_texts))
    members = _members("bgzf", _random_chunks(rng, data, 400))
    damaged = sorted(rng.sample(range(5, len(members) - 5), 2))
    for i in damaged:
        members[i] = _corrupt_data("bgzf", members[i])
    path = tmp_path / "bad.jsonl.gz"
    path.write_bytes(b"".join(members))
    lines, report_lines = _damage_rule([_member_output("bgzf", m) for m in members])
    assert len(report_lines) == 2
    outputs = {}
    for workers in (1, 2, 3):
        code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                       "--output-prefix", tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0 and summary["skipped"]["truncated"] == 2
        assert [e.split(": truncated:")[0] for e in summary["skipped_examples"]] == \
            [f"{path}:{n}" for n in report_lines]
        outputs[workers] = _outputs(tmp_path / f"w{workers}")
    assert outputs[1] == outputs[2] == outputs[3]
    assert read_documents(tmp_path / "w3") == _expected_documents(tokenizer, lines)
    code, _ = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                             "--output-prefix", tmp_path / "strict", "--workers", 2, "--strict")
    err = capsys.readouterr().err  # the first piece to fail stops the run: either damage
    assert code == 1 and any(f"{path}:{n}: truncated" in err for n in report_lines)


def test_whole_file_reading_follows_the_same_damage_rule(tmp_path):
    """Readers of whole files (tokenizer training) read a splittable file member by member too."""
    from alum.tools.readers import SkipLog, iter_texts

    rng = random.Random(6)
    texts = [f"document {i} " + "w" * rng.randint(0, 300) for i in range(60)]
    members = [_bgzf_member(c) for c in _random_chunks(rng, _jsonl(texts), 200)]
    members[len(members) // 2] = _corrupt_data("bgzf", members[len(members) // 2])
    path = tmp_path / "t.jsonl.gz"
    path.write_bytes(b"".join(members))
    lines, [report_line] = _damage_rule([_member_output("bgzf", m) for m in members])
    log = SkipLog()
    expected = [json.loads(line)["text"] for _, line in lines if line.strip()]
    assert list(iter_texts([str(path)], log=log)) == expected
    assert log.examples[0].startswith(f"{path}:{report_line}: truncated")


def test_zstd_file_opening_with_a_skippable_frame_is_read_and_split(tmp_path, small_ranges):
    """pzstd's layout: a skippable frame holding the size of each data frame before it."""
    zstandard = _zstandard()
    rng = random.Random(4)
    lines = _messy_text(rng, 300, True).split(b"\n")
    data = b"".join(json.dumps({"text": line.decode()}).encode() + b"\n" for line in lines)
    members = []
    for chunk in _random_chunks(rng, data, 20):
        frame = zstandard.ZstdCompressor().compress(chunk)
        members += [struct.pack("<III", 0x184D2A50, 4, len(frame)), frame]
    path = tmp_path / "pzstd-like.zst"
    path.write_bytes(b"".join(members))
    assert compression_of(str(path)) == "zstd"
    assert b"".join(iter_file_chunks(str(path))) == data
    assert cm.list_members(str(path)) == _offsets(members)
    pieces = split_for_workers(plan_shards([str(path)]), 2)
    assert len(pieces) > 2 and {p.kind for _, p in pieces} == {"jsonl-members"}
    got = [line for _, piece in pieces
           for _, line, _ in cm.iter_member_range_lines(str(path), piece.start, piece.stop,
                                                        piece.items[0] if piece.items else None)]
    assert got == data.split(b"\n")[:-1]
    # each piece's predecessor is the data frame before it, never a skippable frame
    frames = {o: l for o, l in _offsets(members)[1::2]}
    assert all(frames.get(piece.items[0][0]) == piece.items[0][1] for _, piece in pieces[1:])


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_range_with_its_predecessor_does_not_walk_from_the_start(tmp_path, monkeypatch, fmt,
                                                                   small_ranges):
    """The planner lists every member once; a range it planned decodes the member before
    it directly instead of walking the headers from byte 0 again (which would make the
    ranges' total work quadratic in the members). Only an empty predecessor walks."""
    rng = random.Random(8)
    data = _messy_text(rng, 80, True)
    chunks = [c for c in _random_chunks(rng, data, 50) if c]  # no empty member
    members = _members(fmt, chunks)
    path = tmp_path / f"p.{fmt}"
    path.write_bytes(b"".join(members))
    ranges = cm.member_ranges(str(path), 3)
    assert len(ranges) > 2 and ranges[0].previous is None
    assert all(r.previous in _offsets(members) and sum(r.previous) == r.start for r in ranges[1:])
    expected = data.split(b"\n")[:-1]

    def walked(*args):
        raise AssertionError("walked the headers from byte 0")

    monkeypatch.setattr(cm, "_members_before", walked)
    got = [line for r in ranges for _, line, _ in cm.iter_member_range_lines(str(path), *r)]
    assert got == expected
    with pytest.raises(AssertionError, match="walked"):  # without the hint it does walk
        list(cm.iter_member_range_lines(str(path), ranges[1].start, ranges[1].stop))
