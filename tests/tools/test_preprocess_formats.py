"""Round trip for every input format: each document's tokens in the .bin
equal what the tokenizer gives for that document's text.

Inputs are written here with the standard library, `datasets` and pyarrow
(not with alum's readers), from the sample corpus parsed with json.
"""
import bz2
import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile

import numpy as np
import pytest

from alum.data.sample import sample_corpus_path
from alum.tools.sentence_split import split_sentences

from .helpers import expected_ids, read_documents, run_preprocess


def _jsonl(texts, key="text"):
    return "".join(json.dumps({key: t, "id": i}) + "\n" for i, t in enumerate(texts)).encode()


def _compress(data, kind):
    if kind == "gz":
        return gzip.compress(data)
    if kind == "bz2":
        return bz2.compress(data)
    if kind == "xz":
        return lzma.compress(data)
    if kind == "zst":
        import zstandard
        return zstandard.ZstdCompressor().compress(data)
    return data


def _tar_bytes(files, mode="w"):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _owt_name(i, text):
    return f"{i:07d}-{hashlib.md5(text.encode()).hexdigest()}.txt"


def _check(tokenizer, prefix, texts, summary):
    docs = read_documents(prefix)
    assert len(docs) == len(texts)
    for doc, text in zip(docs, texts):
        assert doc == [expected_ids(tokenizer, text)]
    assert summary["documents"] == len(texts)
    assert summary["tokens"] == sum(len(expected_ids(tokenizer, t)) for t in texts)


@pytest.mark.parametrize("compression", ["", "gz", "bz2", "xz", "zst"])
def test_jsonl_plain_and_compressed(tmp_path, tokenizer_dir, tokenizer, sample_texts, compression):
    texts = sample_texts[:20]
    path = tmp_path / ("docs.jsonl" + (f".{compression}" if compression else ""))
    path.write_bytes(_compress(_jsonl(texts, key="body"), compression))
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "out", "--json-key", "body")
    assert code == 0
    _check(tokenizer, tmp_path / "out", texts, summary)


def test_wikiextractor_json_dir(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    code, summary = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "wiki")
    assert code == 0
    _check(tokenizer, tmp_path / "wiki", sample_texts, summary)
    assert summary["shards"] == 2  # one per wiki_NN file


def test_wikiextractor_text_mode_dir_with_bz2(tmp_path, tokenizer_dir, tokenizer, sample_docs):
    # WikiExtractor's default output: <doc ...>, the title line, a blank line, the text, </doc>;
    # with --compress the files are wiki_NN.bz2.
    root = tmp_path / "extracted"
    for sub, chunk, compress in (("AA", sample_docs[:30], False), ("AB", sample_docs[30:45], True)):
        (root / sub).mkdir(parents=True)
        body = "".join(f'<doc id="{i}" url="https://x/?curid={i}" title="{title}">\n{title}\n\n{text}\n</doc>\n'
                       for i, (title, text) in enumerate(chunk)).encode()
        name = "wiki_00.bz2" if compress else "wiki_00"
        (root / sub / name).write_bytes(bz2.compress(body) if compress else body)
    code, summary = run_preprocess("--input", root, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "wikitext")
    assert code == 0
    _check(tokenizer, tmp_path / "wikitext", [t for _, t in sample_docs[:45]], summary)


def test_openwebtext_sample_tar(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    code, summary = run_preprocess("--input", sample_corpus_path("openwebtext"), "--tokenizer",
                                   tokenizer_dir, "--output-prefix", tmp_path / "owt")
    assert code == 0
    _check(tokenizer, tmp_path / "owt", sample_texts, summary)


def test_openwebtext_subset_dir_and_extracted_txt(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    texts = sample_texts[:24]
    subsets = tmp_path / "openwebtext"  # the outer tar extracted: .xz subset archives
    subsets.mkdir()
    for s in range(2):
        part = list(enumerate(texts))[s * 8:(s + 1) * 8]
        data = _tar_bytes([(_owt_name(i, t), t.encode()) for i, t in part], mode="w:xz")
        (subsets / f"urlsf_subset00-{s}_data.xz").write_bytes(data)
    extracted = tmp_path / "urlsf_subset00-9_data"  # a subset extracted: one .txt per document
    extracted.mkdir()
    for i, text in enumerate(texts[16:], start=16):
        (extracted / _owt_name(i, text)).write_text(text, encoding="utf-8")
    code, summary = run_preprocess("--input", subsets, extracted, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "owt")
    assert code == 0
    _check(tokenizer, tmp_path / "owt", texts, summary)


def test_plain_text_blank_line_separated(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    texts = sample_texts[:15]
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n\n".join(texts) + "\n", encoding="utf-8")
    code, summary = run_preprocess("--input", path, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "txt")
    assert code == 0
    _check(tokenizer, tmp_path / "txt", texts, summary)


def test_shipped_plain_text_sample(tmp_path, tokenizer_dir, tokenizer, sample_docs):
    ruth = [text for title, text in sample_docs if title.startswith("Ruth ")]
    code, summary = run_preprocess("--input", sample_corpus_path("text"), "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "ruth")
    assert code == 0
    _check(tokenizer, tmp_path / "ruth", ruth, summary)


def test_datasets_save_to_disk(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    import datasets

    texts = sample_texts[:30]
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": texts[:20]}),
                               "validation": datasets.Dataset.from_dict({"text": texts[20:]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    datasets.Dataset.from_dict({"content": texts[:7]}).save_to_disk(str(tmp_path / "single"))
    code, summary = run_preprocess("--input", tmp_path / "dd", "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "all")
    assert code == 0
    _check(tokenizer, tmp_path / "all", texts, summary)
    code, summary = run_preprocess("--input", tmp_path / "dd", "--hf-split", "validation", "--tokenizer",
                                   tokenizer_dir, "--output-prefix", tmp_path / "valid")
    _check(tokenizer, tmp_path / "valid", texts[20:], summary)
    code, summary = run_preprocess("--input", tmp_path / "single", "--json-key", "content", "--tokenizer",
                                   tokenizer_dir, "--output-prefix", tmp_path / "single_out")
    _check(tokenizer, tmp_path / "single_out", texts[:7], summary)


def test_parquet_with_several_row_groups(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = sample_texts[:25]
    pq.write_table(pa.table({"text": texts, "n": list(range(25))}), str(tmp_path / "a.parquet"),
                   row_group_size=10)
    code, summary = run_preprocess("--input", tmp_path / "a.parquet", "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "pq")
    assert code == 0
    assert summary["shards"] == 3
    _check(tokenizer, tmp_path / "pq", texts, summary)


def test_split_sentences_keeps_document_boundaries(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    texts = sample_texts[:10]
    code, summary = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "sent", "--split-sentences")
    assert code == 0
    docs = read_documents(tmp_path / "sent")
    assert len(docs) == len(sample_texts)
    for doc, text in zip(docs, texts):
        sentences = split_sentences(text)
        assert len(sentences) > 1
        assert doc == [expected_ids(tokenizer, s) for s in sentences]
        # nothing lost: the sentences' tokens are the document's tokens
        assert sum(doc, []) == expected_ids(tokenizer, text)
    assert summary["sequences"] == sum(len(d) for d in docs)


def test_megatron_reads_output_with_smallest_dtype(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir,
                   "--output-prefix", tmp_path / "m")
    ds = IndexedDataset(str(tmp_path / "m"))
    assert len(tokenizer) == 800
    assert ds.index.dtype == np.uint16  # 256 < 800 ids <= 65536
    assert len(ds) == len(sample_texts) and len(ds.document_indices) == len(sample_texts) + 1
    assert ds.sequence_lengths.tolist() == [len(expected_ids(tokenizer, t)) for t in sample_texts]
    assert os.path.getsize(tmp_path / "m.bin") == 2 * int(ds.sequence_lengths.sum())
    # get() with an offset reads inside a sequence, as megatron's datasets do
    assert ds.get(3, offset=2, length=4).tolist() == expected_ids(tokenizer, sample_texts[3])[2:6]


def test_tokenizer_saved_with_truncation_and_padding_keeps_whole_documents(
        tmp_path, tokenizer_dir, tokenizer, sample_texts):
    """sentence-transformers ship tokenizer.json with truncation and fixed padding (e.g. 128):
    documents must still come out whole, with no [PAD] ids appended."""
    import shutil

    capped = tmp_path / "capped_tokenizer"
    shutil.copytree(tokenizer_dir, capped)
    with open(capped / "tokenizer.json") as f:
        spec = json.load(f)
    spec["truncation"] = {"max_length": 16, "strategy": "LongestFirst", "stride": 0,
                          "direction": "Right"}
    spec["padding"] = {"strategy": {"Fixed": 16}, "direction": "Right",
                       "pad_to_multiple_of": None, "pad_id": 0, "pad_type_id": 0,
                       "pad_token": "[PAD]"}
    with open(capped / "tokenizer.json", "w") as f:
        json.dump(spec, f)
    texts = [t for t in sample_texts if len(expected_ids(tokenizer, t)) > 40][:5] + ["Amen ."]
    path = tmp_path / "docs.jsonl"
    path.write_bytes(_jsonl(texts))
    code, summary = run_preprocess("--input", path, "--tokenizer", capped,
                                   "--output-prefix", tmp_path / "out")
    assert code == 0
    # Expected ids from the original (uncapped) tokenizer.
    _check(tokenizer, tmp_path / "out", texts, summary)
