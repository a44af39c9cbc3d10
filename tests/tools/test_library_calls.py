"""The tools as library calls (what alum.pretrain.data prepares the sample corpus with):
``train_tokenizer`` and ``build_indexed_dataset`` write what the commands write for the
same options, and bad input raises instead of returning an exit code."""
import filecmp
import json
import os

import pytest

from alum.tools.preprocess import build_indexed_dataset
from alum.tools.preprocess import main as preprocess_main
from alum.tools.readers import BadInputError
from alum.tools.train_tokenizer import main as tokenizer_main
from alum.tools.train_tokenizer import train_tokenizer

DOCS = ["The first document. It has two sentences.", "A second one, shorter.",
        "Third: numbers 1 2 3 and words again, the first words."] * 20


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS))
    return str(path)


def test_library_calls_write_what_the_commands_write(corpus, tmp_path):
    cmd, lib = tmp_path / "cmd", tmp_path / "lib"
    assert tokenizer_main(["--input", corpus, "--type", "wordpiece", "--vocab-size", "120",
                           "--lowercase", "--min-frequency", "1",
                           "--output", str(cmd / "tok")]) == 0
    assert train_tokenizer([corpus], "wordpiece", 120, str(lib / "tok"), lowercase=True,
                           min_frequency=1) == str(lib / "tok")
    assert filecmp.cmp(cmd / "tok" / "tokenizer.json", lib / "tok" / "tokenizer.json",
                       shallow=False)
    assert preprocess_main(["--input", corpus, "--tokenizer", str(cmd / "tok"),
                            "--output-prefix", str(cmd / "data" / "x"), "--split-sentences",
                            "--no-progress"]) == 0
    build_indexed_dataset([corpus], str(lib / "tok"), str(lib / "data" / "x"),
                          split_sentences=True, no_progress=True)
    for ext in (".bin", ".idx"):
        assert filecmp.cmp(cmd / "data" / f"x{ext}", lib / "data" / f"x{ext}", shallow=False)
    assert os.path.getsize(lib / "data" / "x.bin") > 0


def test_library_calls_raise_on_bad_input_and_unknown_options(corpus, tmp_path):
    with pytest.raises(TypeError, match="no_such_option"):
        train_tokenizer([corpus], "wordpiece", 120, str(tmp_path / "t"), no_such_option=1)
    with pytest.raises(TypeError, match="workerz"):
        build_indexed_dataset([corpus], str(tmp_path / "t"), str(tmp_path / "x"), workerz=2)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": broken\n')
    assert tokenizer_main(["--input", corpus, "--type", "wordpiece", "--vocab-size", "120",
                           "--output", str(tmp_path / "tok")]) == 0
    with pytest.raises(BadInputError, match="bad.jsonl"):
        build_indexed_dataset([str(bad)], str(tmp_path / "tok"), str(tmp_path / "x"),
                              strict=True, no_progress=True)
    assert not os.path.exists(tmp_path / "x.bin")
