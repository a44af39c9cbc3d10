"""alum-pretrain's bad inputs are one line naming the path and the cause: a missing or
empty dataset, a tokenizer that does not load."""
import os

import numpy as np
import pytest

from alum.pretrain import cli

FAST = ["--train-steps", "2", "--hidden-size", "32", "--num-layers", "1",
        "--micro-batch-size", "2", "--seq-length", "32", "--no-alum", "--eval-interval", "0",
        "--tensorboard", "false", "--progress-bar", "false"]


def _error_line(capsys):
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines, "no error printed"
    return lines[-1]


def test_missing_dataset(tmp_path, sample_cache, capsys):
    prefix = str(tmp_path / "nowhere" / "wiki")
    rc = cli.main(FAST + ["--output-dir", str(tmp_path / "run"), "--data-path", prefix,
                          "--tokenizer", os.path.join(sample_cache, "tokenizer")])
    assert rc == 2
    assert _error_line(capsys) == (
        f"alum-pretrain: error: DataConfig.data_path: dataset {prefix} not found: {prefix}.idx "
        f"does not exist (alum-preprocess writes PREFIX.bin and PREFIX.idx)")


def test_dataset_without_documents(tmp_path, sample_cache, capsys):
    from alum.tools.indexed_output import DatasetWriter

    prefix = str(tmp_path / "empty")
    with DatasetWriter(prefix, np.uint16):
        pass
    assert os.path.getsize(prefix + ".bin") == 0 and os.path.isfile(prefix + ".idx")
    rc = cli.main(FAST + ["--output-dir", str(tmp_path / "run"), "--data-path", prefix,
                          "--tokenizer", os.path.join(sample_cache, "tokenizer")])
    assert rc == 2
    assert _error_line(capsys) == (f"alum-pretrain: error: DataConfig.data_path: dataset "
                                   f"{prefix} holds no documents ({prefix}.bin is empty)")


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_tokenizer_that_does_not_load(tmp_path, sample_cache, capsys, damage):
    tok = tmp_path / "tok"
    if damage == "garbage":
        tok.mkdir()
        (tok / "tokenizer.json").write_text("{not json")
        (tok / "tokenizer_config.json").write_text('{"tokenizer_class": "BertTokenizerFast"}')
    rc = cli.main(FAST + ["--output-dir", str(tmp_path / "run"), "--data-path",
                          os.path.join(sample_cache, "wiki_text_document"),
                          "--tokenizer", str(tok)])
    assert rc == 2
    line = _error_line(capsys)
    if damage == "missing":
        assert line == (f"alum-pretrain: error: DataConfig.tokenizer: {tok} is not a directory "
                        f"(a tokenizer directory from alum-tokenizer or save_pretrained is "
                        f"expected)")
    else:
        assert line.startswith(f"alum-pretrain: error: DataConfig.tokenizer: cannot load a "
                               f"tokenizer from {tok}: ")
