"""The shipped sample corpus: present, small, and the same documents in each format."""
import io
import json
import lzma
import os
import tarfile

from alum.data.sample import FORMATS, sample_corpus_path


def test_paths_exist_and_size_is_small():
    for fmt in FORMATS:
        assert os.path.exists(sample_corpus_path(fmt))
    total = sum(os.path.getsize(os.path.join(root, f))
                for root, _, files in os.walk(os.path.dirname(sample_corpus_path("text"))) for f in files)
    assert 100_000 < total < 1_000_000


def test_openwebtext_tar_holds_the_wiki_documents(sample_texts):
    docs = []
    with tarfile.open(sample_corpus_path("openwebtext")) as outer:
        members = outer.getmembers()
        assert all(m.name.endswith(".xz") for m in members) and len(members) == 2
        for member in members:
            inner_bytes = lzma.decompress(outer.extractfile(member).read())
            with tarfile.open(fileobj=io.BytesIO(inner_bytes)) as inner:
                docs += [inner.extractfile(m).read().decode() for m in inner.getmembers()]
    assert docs == sample_texts and len(docs) > 50


def test_wiki_json_records_look_like_wikiextractor():
    with open(os.path.join(sample_corpus_path("wiki"), "AA", "wiki_00"), encoding="utf-8") as f:
        record = json.loads(f.readline())
    assert set(record) >= {"id", "url", "title", "text"} and record["text"]
