"""Workers sharing one large file: line-aligned byte ranges.

The reference for which lines a file holds is `bytes.split(b"\\n")` on the
whole file; expected token ids come from the tokenizer itself. Ranges are
made small (monkeypatched MIN_RANGE_BYTES) so that a few kB are cut into
several ranges, most of them mid-line.
"""
import json
import os
import random
import subprocess
import sys

import pytest

from alum.tools.readers import byte_ranges
from alum.tools.readers.byte_ranges import LineBase, cut_points, iter_range_lines

from .helpers import expected_ids, has_dataset_pair, read_documents, run_preprocess


def _reference_lines(data: bytes):
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # a final newline ends the last line, it does not start one
    return list(enumerate(lines, start=1))


def _lines_over_ranges(path, bounds):
    out = []
    for start, end in bounds:
        base = LineBase(str(path), start)
        out += [(base.lines_before() + n, line) for n, line in iter_range_lines(str(path), start, end)]
    return out


def _messy_bytes(rng, n_lines, trailing_newline):
    parts = []
    for _ in range(n_lines):
        kind = rng.random()
        if kind < 0.15:
            parts.append(b"")  # empty line
        elif kind < 0.3:
            parts.append(b"x" * rng.randint(1, 40) + b"\r")  # CRLF
        else:
            parts.append(bytes(rng.choice(b"abc \t{}") for _ in range(rng.randint(1, 30))))
    data = b"\n".join(parts)
    return data + b"\n" if trailing_newline else data


@pytest.mark.parametrize("trailing_newline", [True, False])
def test_every_cut_point_gives_each_line_once_in_order(tmp_path, trailing_newline):
    rng = random.Random(7 + trailing_newline)
    data = _messy_bytes(rng, 40, trailing_newline)
    path = tmp_path / "f.txt"
    path.write_bytes(data)
    expected = _reference_lines(data)
    for cut in range(len(data) + 1):  # two ranges, cut at every byte (in a line, at its start, at a newline)
        assert _lines_over_ranges(path, [(0, cut), (cut, len(data))]) == expected, cut
    for _ in range(200):  # three ranges at random cut points
        a, b = sorted(rng.randint(0, len(data)) for _ in range(2))
        assert _lines_over_ranges(path, [(0, a), (a, b), (b, len(data))]) == expected, (a, b)
    for pieces in (1, 2, 3, 7):
        assert _lines_over_ranges(path, cut_points(len(data), pieces)) == expected


def test_long_lines_cross_read_chunks(tmp_path):
    rng = random.Random(3)
    lines = [bytes(rng.choice(b"xyz") for _ in range(rng.randint(0, 300))) for _ in range(50)]
    data = b"\n".join(lines)
    path = tmp_path / "long.txt"
    path.write_bytes(data)
    bounds = cut_points(len(data), 5)
    got = []
    for start, end in bounds:
        base = LineBase(str(path), start)
        got += [(base.lines_before() + n, line)
                for n, line in iter_range_lines(str(path), start, end, chunk_bytes=7)]
    assert got == _reference_lines(data)


@pytest.mark.parametrize("workers", [1, 2, 3, 16])
@pytest.mark.parametrize("size_mb", [0.5, 1.5, 3, 20, 100, 700])
def test_plan_ranges_cover_the_file_with_guided_sizes(size_mb, workers):
    mb = 1 << 20
    size = int(size_mb * mb)
    ranges = byte_ranges.plan_ranges(size, workers)
    assert ranges[0][0] == 0 and ranges[-1][1] == size
    assert all(a < b for a, b in ranges) and all(b == c for (_, b), (c, _) in zip(ranges, ranges[1:]))
    sizes = [b - a for a, b in ranges]
    assert max(sizes) <= byte_ranges.MAX_RANGE_BYTES or len(ranges) == 1
    if workers == 1:  # near-equal resume units, cut only above MAX_RANGE_BYTES
        assert len(ranges) == -(-size // byte_ranges.MAX_RANGE_BYTES) and max(sizes) - min(sizes) <= 1
        return
    if size < 2 * byte_ranges.MIN_RANGE_BYTES:
        assert ranges == [(0, size)]  # too small to be worth cutting
        return
    assert min(sizes) >= byte_ranges.MIN_RANGE_BYTES and len(ranges) >= 2
    # Guided: each range at most 1 / (2 N) of what was left before it (or MIN_RANGE_BYTES,
    # or the last range taking a remainder under twice that), so they shrink towards the end.
    for (a, b), last in zip(ranges, [False] * (len(ranges) - 1) + [True]):
        share = max(byte_ranges.MIN_RANGE_BYTES, (size - a) // (byte_ranges.SHARE_PER_RANGE * workers))
        assert b - a <= share or (last and b - a < share + byte_ranges.MIN_RANGE_BYTES)
    assert sizes[-1] < 2 * byte_ranges.MIN_RANGE_BYTES or sizes[-1] <= size // (2 * workers)


@pytest.fixture
def small_ranges(monkeypatch):
    monkeypatch.setattr(byte_ranges, "MIN_RANGE_BYTES", 256)


def _jsonl_lines(texts):
    return [json.dumps({"text": t}).encode() for t in texts]


def _messy_jsonl(texts):
    """JSON lines with CRLF endings, blank lines, and no final newline."""
    out = []
    for i, line in enumerate(_jsonl_lines(texts)):
        out.append(line + (b"\r\n" if i % 3 == 0 else b"\n"))
        if i % 4 == 1:
            out.append(b"\n" if i % 8 == 1 else b"  \r\n")
    return b"".join(out).rstrip(b"\r\n")


def _bytes(prefix):
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def test_one_two_three_workers_on_one_file_write_identical_bytes(
        tmp_path, tokenizer_dir, tokenizer, sample_texts, small_ranges):
    texts = sample_texts[:40]
    data = _messy_jsonl(texts)
    path = tmp_path / "one.jsonl"
    path.write_bytes(data)
    pieces = {}
    for workers in (1, 2, 3):
        code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                       "--output-prefix", tmp_path / f"w{workers}", "--workers", workers)
        assert code == 0 and summary["shards"] == 1 and summary["skipped"]["empty"] == 0
        pieces[workers] = summary["pieces"]
    assert pieces == {w: len(byte_ranges.plan_ranges(len(data), w)) for w in (1, 2, 3)}
    assert pieces[1] == 1 and pieces[3] > pieces[2] >= 8
    cuts = byte_ranges.plan_ranges(len(data), 3)
    assert sum(data[a - 1:a] != b"\n" for a, _ in cuts[1:]) >= 6  # most cuts fall inside a line
    assert _bytes(tmp_path / "w1") == _bytes(tmp_path / "w2") == _bytes(tmp_path / "w3")
    assert read_documents(tmp_path / "w3") == [[expected_ids(tokenizer, t)] for t in texts]


def _with_bad_lines(texts, bad):
    lines = _jsonl_lines(texts)
    for lineno, raw in bad.items():
        lines[lineno - 1] = raw
    return b"\n".join(lines) + b"\n"


def _short_texts(sample_texts, n=100):
    return [t[:150 + i % 100] for i, t in enumerate((sample_texts * 2)[:n])]


BAD = {23: b'{"text": "no closing brace"', 61: b'{"body": "wrong key"}', 89: b'{"text": "caf\xe9"}'}


def test_bad_lines_inside_ranges_report_absolute_lines(tmp_path, tokenizer_dir, tokenizer, sample_texts,
                                                        small_ranges):
    texts = _short_texts(sample_texts)
    path = tmp_path / "bad.jsonl"
    data = _with_bad_lines(texts, BAD)
    path.write_bytes(data)
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out", "--workers", 3)
    ranges = byte_ranges.plan_ranges(len(data), 3)
    assert code == 0 and summary["pieces"] == len(ranges) > 4
    cuts = [a for a, _ in ranges]
    line_starts = [0] + [i + 1 for i, c in enumerate(data) if c == 10]
    for lineno in BAD:  # no bad line is the first line of its range: its range counts lines before it
        own = line_starts[lineno - 1]
        cut = max(c for c in cuts if c <= own)
        assert any(cut <= s < own for s in line_starts), lineno
    examples = "\n".join(summary["skipped_examples"])
    assert f"{path}:23: malformed" in examples
    assert f"{path}:61: missing_key" in examples
    assert f"{path}:89: invalid_utf8" in examples
    good = [t for i, t in enumerate(texts, start=1) if i not in BAD]
    assert read_documents(tmp_path / "out") == [[expected_ids(tokenizer, t)] for t in good]


@pytest.mark.parametrize("lineno, reason", [(61, "missing_key"), (89, "invalid_utf8")])
def test_strict_error_in_a_range_names_the_line_and_leaves_no_output(
        tmp_path, tokenizer_dir, sample_texts, capsys, small_ranges, lineno, reason):
    texts = _short_texts(sample_texts)
    path = tmp_path / "bad.jsonl"
    path.write_bytes(_with_bad_lines(texts, {lineno: BAD[lineno]}))
    code, _ = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                             "--output-prefix", tmp_path / "out", "--workers", 2, "--strict")
    assert code == 1
    assert f"{path}:{lineno}: {reason}" in capsys.readouterr().err
    assert not has_dataset_pair(tmp_path / "out")
    assert not [n for n in os.listdir(tmp_path) if n.startswith("out.") and ".tmp" in n]


def test_interrupted_run_resumes_finished_ranges(tmp_path, tokenizer_dir, sample_texts, small_ranges,
                                                 monkeypatch):
    from alum.tools import preprocess_shard

    monkeypatch.setattr(byte_ranges, "MAX_RANGE_BYTES", 4096)  # one worker cuts it too
    texts = _short_texts(sample_texts)
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"\n".join(_jsonl_lines(texts)) + b"\n")
    calls, encode = [], preprocess_shard.encode_batch

    def interrupted(tokenizer, batch):
        calls.append(1)
        if len(calls) == 4:  # one batch per range here: three ranges finish
            raise KeyboardInterrupt
        return encode(tokenizer, batch)

    prefix = tmp_path / "out"
    monkeypatch.setattr(preprocess_shard, "encode_batch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess("--input", path, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    assert not has_dataset_pair(prefix)
    assert len([n for n in os.listdir(f"{prefix}.work") if n.endswith(".done.json")]) == 3
    monkeypatch.setattr(preprocess_shard, "encode_batch", encode)
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    assert summary["pieces"] == len(byte_ranges.plan_ranges(os.path.getsize(path), 1)) >= 5
    assert code == 0 and summary["resumed_pieces"] == 3
    code, fresh = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                 "--output-prefix", tmp_path / "fresh", "--no-resume")
    assert fresh["resumed_pieces"] == 0 and _bytes(prefix) == _bytes(tmp_path / "fresh")


def test_no_torch_before_tokenizing(tmp_path, tokenizer_dir, sample_texts):
    """The command line parses, plans, tokenizes and merges without importing torch (the
    merge writes megatron-core's index format with numpy)."""
    path = tmp_path / "a.jsonl"
    path.write_bytes(b"\n".join(_jsonl_lines(sample_texts[:5])) + b"\n")
    script = f"""
import sys
from alum.tools import preprocess, preprocess_shard
seen = []
encode = preprocess_shard.encode_batch
def spy(tokenizer, texts):
    seen.append("torch" in sys.modules)
    return encode(tokenizer, texts)
preprocess_shard.encode_batch = spy
code = preprocess.main(["--input", {str(path)!r}, "--tokenizer", {tokenizer_dir!r},
                        "--output-prefix", {str(tmp_path / "out")!r}, "--no-progress"])
print("exit", code, "torch-before-tokenizing", seen[0], "torch-at-end", "torch" in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "exit 0 torch-before-tokenizing False torch-at-end False" in out.stdout
