"""alum.finetune.demo.write_split_csvs: the train/eval split both study data sets use."""
import csv

import pytest

from alum.finetune.demo import write_split_csvs


def _read(path):
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["text", "label"]
    return [tuple(r) for r in rows[1:]]


def test_disjoint_sized_and_seeded(tmp_path):
    rows = [(f"sentence {i}, with \"quotes\"\nand a new line", str(i % 3)) for i in range(57)]
    train, held = write_split_csvs(rows, 30, 20, 7, str(tmp_path / "a"), "set", "prog")
    a_train, a_eval = _read(train), _read(held)
    assert len(a_train) == 30 and len(a_eval) == 20
    assert not set(a_train) & set(a_eval) and set(a_train) | set(a_eval) <= set(rows)
    again = write_split_csvs(rows, 30, 20, 7, str(tmp_path / "b"), "set", "prog")
    assert _read(again[0]) == a_train and _read(again[1]) == a_eval
    other = write_split_csvs(rows, 30, 20, 8, str(tmp_path / "c"), "set", "prog")
    assert _read(other[0]) != a_train
    assert train.endswith("set_train.csv") and held.endswith("set_eval.csv")


def test_too_many_examples_names_the_program_and_sizes(tmp_path):
    with pytest.raises(SystemExit, match=r"prog: 40\+20 examples asked, the set has 57"):
        write_split_csvs([("x", "0")] * 57, 40, 20, 1, str(tmp_path), "set", "prog")
    assert not (tmp_path / "set_train.csv").exists()
