"""Shared fixtures: a small tokenizer trained on the sample corpus, the
sample documents parsed independently of alum's readers, and helpers that
read an indexed dataset back through megatron-core."""
import json
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from alum.data.sample import sample_corpus_path  # noqa: E402


@pytest.fixture(scope="session")
def sample_docs():
    """(title, text) of the sample corpus, parsed with json only."""
    root = sample_corpus_path("wiki")
    docs = []
    for sub in sorted(os.listdir(root)):
        for name in sorted(os.listdir(os.path.join(root, sub))):
            with open(os.path.join(root, sub, name), encoding="utf-8") as f:
                docs += [(r["title"], r["text"]) for r in map(json.loads, f)]
    return docs


@pytest.fixture(scope="session")
def sample_texts(sample_docs):
    return [text for _, text in sample_docs]


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory):
    from alum.tools.train_tokenizer import main

    out = tmp_path_factory.mktemp("tok") / "wordpiece"
    assert main(["--input", sample_corpus_path("wiki"), "--type", "wordpiece",
                 "--vocab-size", "800", "--output", str(out)]) == 0
    return str(out)


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)
