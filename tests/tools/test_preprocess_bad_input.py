"""Damaged input: skipped and counted by default, a located error with --strict.

Expected documents come from the clean lines written here, tokenized by the
tokenizer itself; locations are the line numbers this test wrote them at.
"""
import bz2
import gzip
import json
import lzma

import pytest

from .helpers import expected_ids, has_dataset_pair, read_documents, run_preprocess


def _line(text):
    return (json.dumps({"text": text}) + "\n").encode()


@pytest.fixture
def damaged_jsonl(tmp_path, sample_texts):
    """A jsonl whose lines 3, 5, 7, 9 and 11 are damaged in different ways."""
    lines, good = [], []
    for i, text in enumerate(sample_texts[:12], start=1):
        if i == 3:
            lines.append(b'{"text": "caf\xe9 au lait, latin-1 not UTF-8"}\n')
        elif i == 5:
            lines.append(b'{"text": "no closing brace"\n')
        elif i == 7:
            lines.append(_line(text).replace(b'"text"', b'"body"'))
        elif i == 9:
            lines.append(_line("   \n\t "))
        elif i == 11:
            lines.append(b'{"text": null}\n')
        else:
            lines.append(_line(text))
            good.append(text)
    path = tmp_path / "damaged.jsonl"
    path.write_bytes(b"".join(lines))
    return path, good


def test_damaged_lines_are_skipped_and_counted(tmp_path, tokenizer_dir, tokenizer, damaged_jsonl):
    path, good = damaged_jsonl
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out")
    assert code == 0
    assert read_documents(tmp_path / "out") == [[expected_ids(tokenizer, t)] for t in good]
    assert summary["skipped"] == {"truncated": 0, "invalid_utf8": 1, "malformed": 1,
                                  "missing_key": 2, "empty": 1}
    examples = "\n".join(summary["skipped_examples"])
    for lineno in (3, 5, 7, 9, 11):
        assert f"{path}:{lineno}:" in examples


@pytest.mark.parametrize("lineno, reason", [(3, "invalid_utf8"), (5, "malformed"), (7, "missing_key")])
def test_strict_names_file_and_line(tmp_path, tokenizer_dir, damaged_jsonl, capsys, lineno, reason):
    path, _ = damaged_jsonl
    lines = path.read_bytes().splitlines(keepends=True)
    # keep only the one damaged line under test (at its line number) plus good ones
    damaged = {3, 5, 7, 11} - {lineno}
    path.write_bytes(b"".join(b"\n" if i in damaged else line for i, line in enumerate(lines, start=1)))
    code, _ = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                             "--output-prefix", tmp_path / "out", "--strict")
    err = capsys.readouterr().err
    assert code == 1
    assert f"{path}:{lineno}: {reason}" in err
    assert not has_dataset_pair(tmp_path / "out")


def test_strict_still_skips_empty_documents(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    path = tmp_path / "e.jsonl"
    path.write_bytes(_line(sample_texts[0]) + _line("") + _line(" \n ") + _line(sample_texts[1]))
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out", "--strict")
    assert code == 0
    assert summary["skipped"]["empty"] == 2
    assert len(read_documents(tmp_path / "out")) == 2


def _zstd(data):
    import zstandard
    return zstandard.ZstdCompressor().compress(data)


def _bz2(data):
    return bz2.compress(data, 1)  # 100 kB blocks: bz2 can only give back whole blocks


@pytest.mark.parametrize("suffix, compress", [("gz", gzip.compress), ("bz2", _bz2),
                                              ("xz", lzma.compress), ("zst", _zstd)])
def test_truncated_compressed_file(tmp_path, tokenizer_dir, tokenizer, sample_texts, capsys, suffix, compress):
    texts = sample_texts  # 250 kB: several bz2 blocks
    whole = compress(b"".join(_line(t) for t in texts))
    path = tmp_path / f"cut.jsonl.{suffix}"
    path.write_bytes(whole[: len(whole) * 2 // 3])
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out")
    assert code == 0
    docs = read_documents(tmp_path / "out")
    # what survives is an intact prefix of the documents; the cut one is not half-kept
    assert len(docs) < len(texts)
    assert docs == [[expected_ids(tokenizer, t)] for t in texts[:len(docs)]]
    assert summary["skipped"]["truncated"] == 1
    assert str(path) in summary["skipped_examples"][0]
    code, _ = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                             "--output-prefix", tmp_path / "strict", "--strict")
    assert code == 1
    assert f"{path}:" in capsys.readouterr().err and not has_dataset_pair(tmp_path / "strict")


def test_invalid_utf8_in_text_and_wiki_markup(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    txt = tmp_path / "a.txt"
    txt.write_bytes(sample_texts[0].encode() + b"\n\nbad \xff\xfe bytes\nmore\n\n" + sample_texts[1].encode())
    wiki = tmp_path / "wiki" / "AA"
    wiki.mkdir(parents=True)
    (wiki / "wiki_00").write_bytes(
        b'<doc id="1" url="u" title="T1">\nT1\n\n' + sample_texts[2].encode() + b"\n</doc>\n"
        b'<doc id="2" url="u" title="T2">\nT2\n\nbroken \xc3\x28 utf8\n</doc>\n'
        b'<doc id="3" url="u" title="T3">\nT3\n\n' + sample_texts[3].encode() + b"\n")  # no </doc>
    code, summary = run_preprocess("--input", txt, tmp_path / "wiki", "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out")
    assert code == 0
    assert read_documents(tmp_path / "out") == [[expected_ids(tokenizer, t)] for t in sample_texts[:3]]
    assert summary["skipped"]["invalid_utf8"] == 2 and summary["skipped"]["truncated"] == 1
    bad_line = sample_texts[0].count("\n") + 3  # after the first document and a blank line
    assert any(f"{txt}:{bad_line}: invalid_utf8" in e for e in summary["skipped_examples"])


def test_truncated_openwebtext_tar(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    from alum.data.sample import sample_corpus_path

    data = open(sample_corpus_path("openwebtext"), "rb").read()
    cut = tmp_path / "cut.tar"
    cut.write_bytes(data[: len(data) * 3 // 4])  # inside the second subset archive
    code, summary = run_preprocess("--input", cut, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out")
    assert code == 0
    docs = read_documents(tmp_path / "out")
    assert len(sample_texts) // 2 <= len(docs) < len(sample_texts)
    assert docs == [[expected_ids(tokenizer, t)] for t in sample_texts[:len(docs)]]
    assert summary["skipped"]["truncated"] >= 1


def test_missing_column_is_a_clear_error(tmp_path, tokenizer_dir, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a b c"]}), str(tmp_path / "x.parquet"))
    code, _ = run_preprocess("--input", tmp_path / "x.parquet", "--tokenizer", tokenizer_dir,
                             "--output-prefix", tmp_path / "out")
    err = capsys.readouterr().err
    assert code == 1 and "x.parquet" in err and "'text' not found" in err and "body" in err
