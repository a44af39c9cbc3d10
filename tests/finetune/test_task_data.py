"""Tests of alum.finetune.task_data against independent csv/json parses of the fixtures."""
import csv
import gzip
import json
import os
from pathlib import Path

import pytest

from alum.finetune.task_data import (
    TaskData, TaskDataError, build_label_list, detect_format, load_task_file,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "finetune"


def fixture(name: str) -> str:
    return str(FIXTURES / name)


def read_tsv(path, header=True):
    """Independent GLUE TSV parse: tab-split lines, quotes are plain characters."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    if header:
        return [dict(zip(rows[0], row)) for row in rows[1:]]
    return rows


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def message_of(excinfo) -> str:
    return str(excinfo.value)


# ---------------------------------------------------------------- formats


def test_sst2_tsv_matches_csv_module():
    rows = read_tsv(fixture("sst2_train.tsv"))
    data = load_task_file(fixture("sst2_train.tsv"), text_field="sentence", label_field="label")
    assert isinstance(data, TaskData)
    assert data.texts == [r["sentence"] for r in rows]
    assert data.text_pairs is None
    assert data.label_list == ["0", "1"]
    assert data.labels == [int(r["label"]) for r in rows]
    assert data.source == fixture("sst2_train.tsv") and data.fmt == "tsv"
    assert data.num_labels == 2 and len(data) == len(rows) >= 20


def test_mnli_tsv_keeps_quote_characters():
    path = fixture("mnli_dev_matched.tsv")
    rows = read_tsv(path)
    data = load_task_file(path, text_field="sentence1", text_pair_field="sentence2",
                          label_field="gold_label")
    assert data.texts == [r["sentence1"] for r in rows]
    assert data.text_pairs == [r["sentence2"] for r in rows]
    assert data.label_list == ["contradiction", "entailment", "neutral"]
    assert [data.label_list[i] for i in data.labels] == [r["gold_label"] for r in rows]
    # Unbalanced and leading quotes survive untouched (no quote processing).
    assert any(t.startswith('"') for t in data.texts)
    assert any(t.count('"') % 2 == 1 for t in data.texts + data.text_pairs)


def test_cola_without_header_by_column_index():
    path = fixture("cola_train.tsv")
    rows = read_tsv(path, header=False)
    data = load_task_file(path, text_field=3, label_field=1, no_header=True)
    assert data.texts == [r[3] for r in rows]
    assert data.labels == [int(r[1]) for r in rows]
    # Digit strings (as a CLI passes them) work the same as ints.
    again = load_task_file(path, text_field="3", label_field="1", no_header=True)
    assert again.texts == data.texts and again.labels == data.labels


def test_anli_jsonl():
    path = fixture("anli_train.jsonl")
    rows = read_jsonl(path)
    data = load_task_file(path, text_field="premise", text_pair_field="hypothesis",
                          label_field="label")
    assert data.fmt == "jsonl"
    assert data.texts == [r["premise"] for r in rows]
    assert data.text_pairs == [r["hypothesis"] for r in rows]
    assert data.label_list == ["c", "e", "n"]
    assert [data.label_list[i] for i in data.labels] == [r["label"] for r in rows]


def test_mnli_jsonl_ignore_labels_counts_dropped_rows():
    path = fixture("mnli_train.jsonl")
    rows = read_jsonl(path)
    kept = [r for r in rows if r["gold_label"] != "-"]
    assert len(kept) < len(rows)
    data = load_task_file(path, text_field="sentence1", text_pair_field="sentence2",
                          label_field="gold_label", ignore_labels=["-"])
    assert data.num_ignored == len(rows) - len(kept)
    assert data.texts == [r["sentence1"] for r in kept]
    assert [data.label_list[i] for i in data.labels] == [r["gold_label"] for r in kept]
    assert "-" not in data.label_list


def test_stsb_regression():
    path = fixture("stsb_train.tsv")
    rows = read_tsv(path)
    data = load_task_file(path, text_field="sentence1", text_pair_field="sentence2",
                          label_field="score", task="regression")
    assert data.label_list is None and data.num_labels == 1
    assert data.labels == [float(r["score"]) for r in rows]
    assert all(isinstance(v, float) for v in data.labels)
    assert data.text_pairs == [r["sentence2"] for r in rows]


def test_csv_with_commas_quotes_and_newlines_in_fields():
    path = fixture("tweets.csv")
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    data = load_task_file(path, text_field="text", label_field="label")
    assert data.fmt == "csv"
    assert data.texts == [r["text"] for r in rows]
    assert [data.label_list[i] for i in data.labels] == [r["label"] for r in rows]
    assert data.label_list == ["negative", "neutral", "positive"]
    assert any('"' in t for t in data.texts) and any("\n" in t for t in data.texts)


def test_gzip_and_parquet(tmp_path):
    src = fixture("sst2_dev.tsv")
    expected = load_task_file(src, text_field="sentence", label_field="label")
    gz = tmp_path / "dev.tsv.gz"
    gz.write_bytes(gzip.compress(Path(src).read_bytes()))
    assert detect_format(str(gz)) == "tsv"
    got = load_task_file(str(gz), text_field="sentence", label_field="label")
    assert (got.texts, got.labels, got.label_list) == (expected.texts, expected.labels,
                                                       expected.label_list)

    import datasets
    parquet = str(tmp_path / "dev.parquet")
    datasets.Dataset.from_dict({"sentence": expected.texts,
                                "label": [int(v) for v in expected.labels]}).to_parquet(parquet)
    got = load_task_file(parquet, text_field="sentence", label_field="label")
    assert got.fmt == "parquet" and got.texts == expected.texts and got.labels == expected.labels


def test_format_detection():
    assert detect_format("a/b.tsv") == "tsv"
    assert detect_format("x.CSV") == "csv"
    assert detect_format("x.jsonl") == "jsonl" and detect_format("x.json") == "jsonl"
    assert detect_format("x.jsonl.gz") == "jsonl"
    assert detect_format("x.parquet") == "parquet"
    with pytest.raises(TaskDataError, match=r"x\.txt.*fmt="):
        detect_format("x.txt")


def test_explicit_fmt_overrides_extension(tmp_path):
    path = write(tmp_path, "data.txt", "sentence\tlabel\ngood\t1\nbad\t0\n")
    data = load_task_file(path, text_field="sentence", label_field="label", fmt="tsv")
    assert data.texts == ["good", "bad"]


def test_values_stay_strings(tmp_path):
    # pandas would turn "007" into 7 and "NA"/"null" into NaN without care.
    path = write(tmp_path, "s.tsv", "sentence\tlabel\nNA\t007\nnull\t1\n")
    data = load_task_file(path, text_field="sentence", label_field="label")
    assert data.texts == ["NA", "null"]
    assert data.label_list == ["1", "007"]  # numeric order: 1 < 7


# ---------------------------------------------------------------- labels


def test_integer_labels_sort_numerically(tmp_path):
    path = write(tmp_path, "n.tsv", "s\tl\na\t10\nb\t2\nc\t1\nd\t2\n")
    data = load_task_file(path, text_field="s", label_field="l")
    assert data.label_list == ["1", "2", "10"]
    assert data.labels == [2, 1, 0, 1]
    assert build_label_list(["b", "10", "a", "9", "-1"]) == ["-1", "9", "10", "a", "b"]


def test_train_label_list_reused_for_eval():
    train = load_task_file(fixture("sst2_train.tsv"), text_field="sentence", label_field="label")
    dev = load_task_file(fixture("sst2_dev.tsv"), text_field="sentence", label_field="label",
                         label_list=train.label_list)
    rows = read_tsv(fixture("sst2_dev.tsv"))
    assert dev.label_list == train.label_list
    assert dev.labels == [train.label_list.index(r["label"]) for r in rows]
    # A given order is respected, not re-sorted.
    flipped = load_task_file(fixture("sst2_dev.tsv"), text_field="sentence",
                             label_field="label", label_list=["1", "0"])
    assert flipped.labels == [1 - v for v in dev.labels]


def test_json_label_types_normalised(tmp_path):
    lines = [{"t": "a", "y": True}, {"t": "b", "y": False}, {"t": "c", "y": True}]
    path = write(tmp_path, "b.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    data = load_task_file(path, text_field="t", label_field="y")
    assert data.label_list == ["false", "true"] and data.labels == [1, 0, 1]

    # Mixed ints and strings in one column; 1.0 counts as the class "1".
    lines = [{"t": "a", "y": 1}, {"t": "b", "y": "x"}, {"t": "c", "y": 0}, {"t": "d", "y": 1.0}]
    path = write(tmp_path, "m.jsonl", "".join(json.dumps(r) + "\n" for r in lines))
    data = load_task_file(path, text_field="t", label_field="y")
    assert data.label_list == ["0", "1", "x"] and data.labels == [1, 2, 0, 1]


def test_max_examples_counts_kept_rows():
    path = fixture("mnli_train.jsonl")
    rows = [r for r in read_jsonl(path) if r["gold_label"] != "-"]
    data = load_task_file(path, text_field="sentence1", label_field="gold_label",
                          ignore_labels=["-"], max_examples=7)
    assert len(data) == 7 and data.texts == [r["sentence1"] for r in rows[:7]]
    data = load_task_file(fixture("sst2_train.tsv"), text_field="sentence",
                          label_field="label", max_examples=3)
    assert len(data) == 3 and len(data.labels) == 3


# ---------------------------------------------------------------- errors


def test_missing_file_names_path(tmp_path):
    path = str(tmp_path / "nowhere" / "train.tsv")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="sentence", label_field="label")
    assert path in message_of(excinfo) and "not found" in message_of(excinfo)


def test_missing_column_lists_available_columns():
    path = fixture("mnli_dev_matched.tsv")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="premise", label_field="gold_label")
    msg = message_of(excinfo)
    assert "'premise'" in msg and path in msg
    assert "sentence1" in msg and "gold_label" in msg and "genre" in msg
    assert issubclass(TaskDataError, ValueError)


def test_missing_jsonl_field_lists_available_columns():
    path = fixture("anli_train.jsonl")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="premise", label_field="gold_label")
    msg = message_of(excinfo)
    assert "'gold_label'" in msg and path in msg and "hypothesis" in msg and "reason" in msg


def test_unknown_label_in_eval_names_label_file_and_line():
    path = fixture("mnli_dev_matched.tsv")
    rows = read_tsv(path)
    first_neutral = next(i for i, r in enumerate(rows) if r["gold_label"] == "neutral")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="sentence1", label_field="gold_label",
                       label_list=["entailment", "contradiction"])
    msg = message_of(excinfo)
    # +2: 1-based lines and the header line.
    assert "'neutral'" in msg and f"{path}, line {first_neutral + 2}" in msg


def test_unknown_label_line_counts_multiline_csv_records(tmp_path):
    # tweets.csv has a quoted field spanning two lines, so record and line
    # numbers differ; append an unknown label and expect its physical line.
    original = Path(fixture("tweets.csv")).read_text(encoding="utf-8")
    assert '\n' in "".join(r["text"] for r in csv.DictReader(original.splitlines(True)))
    path = write(tmp_path, "tweets_eval.csv", original + '"Meh, whatever",sarcastic\n')
    last_line = len(Path(path).read_text(encoding="utf-8").splitlines())
    train = load_task_file(fixture("tweets.csv"), text_field="text", label_field="label")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="text", label_field="label",
                       label_list=train.label_list)
    msg = message_of(excinfo)
    assert "'sarcastic'" in msg and f"{path}, line {last_line}" in msg


def test_unknown_label_line_in_jsonl_with_blank_lines(tmp_path):
    text = '{"t": "a", "y": "e"}\n\n{"t": "b", "y": "n"}\n{"t": "c", "y": "x"}\n'
    path = write(tmp_path, "d.jsonl", text)
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="t", label_field="y", label_list=["e", "n"])
    assert "'x'" in message_of(excinfo) and f"{path}, line 4" in message_of(excinfo)


def test_non_numeric_regression_label(tmp_path):
    path = write(tmp_path, "r.tsv", "s1\ts2\tscore\na\tb\t1.5\nc\td\thigh\n")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="s1", text_pair_field="s2", label_field="score",
                       task="regression")
    msg = message_of(excinfo)
    assert "'high'" in msg and f"{path}, line 3" in msg


def test_empty_and_missing_text(tmp_path):
    path = write(tmp_path, "e.tsv", "sentence\tlabel\ngood\t1\n  \t0\n")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="sentence", label_field="label")
    assert "empty text" in message_of(excinfo) and f"{path}, line 3" in message_of(excinfo)

    path = write(tmp_path, "m.jsonl", '{"p": "x", "h": "y", "label": "e"}\n'
                                      '{"p": "x", "h": null, "label": "e"}\n')
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="p", text_pair_field="h", label_field="label")
    msg = message_of(excinfo)
    assert "missing text" in msg and "'h'" in msg and f"{path}, line 2" in msg


def test_missing_label(tmp_path):
    path = write(tmp_path, "l.csv", "text,label\nfine,1\nno label,\n")
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="text", label_field="label")
    assert "missing label" in message_of(excinfo) and f"{path}, line 3" in message_of(excinfo)


def test_malformed_jsonl_line(tmp_path):
    path = write(tmp_path, "bad.jsonl", '{"t": "a", "y": "e"}\n{"t": "b", "y": "n"}\n'
                                        '{"t": "c" "y": "e"}\n')
    with pytest.raises(TaskDataError) as excinfo:
        load_task_file(path, text_field="t", label_field="y")
    msg = message_of(excinfo)
    assert "malformed JSON" in msg and f"{path}, line 3" in msg


def test_no_header_field_errors():
    path = fixture("cola_train.tsv")
    with pytest.raises(TaskDataError, match=r"out of range.*4 columns"):
        load_task_file(path, text_field=4, label_field=1, no_header=True)
    with pytest.raises(TaskDataError, match=r"0-based column indices"):
        load_task_file(path, text_field="sentence", label_field=1, no_header=True)


def test_bad_arguments(tmp_path):
    path = fixture("sst2_dev.tsv")
    with pytest.raises(TaskDataError, match="task must be"):
        load_task_file(path, text_field="sentence", label_field="label", task="ranking")
    with pytest.raises(TaskDataError, match="duplicate"):
        load_task_file(path, text_field="sentence", label_field="label", label_list=["0", "0"])
    empty = write(tmp_path, "empty.tsv", "")
    with pytest.raises(TaskDataError, match="empty"):
        load_task_file(empty, text_field="sentence", label_field="label")


def test_invalid_encoding_suggests_replace(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("text,label\ncaf\xe9 ok,1\n".encode("latin-1"))
    with pytest.raises(TaskDataError, match="encoding_errors='replace'") as excinfo:
        load_task_file(str(path), text_field="text", label_field="label")
    assert str(path) in message_of(excinfo)
    data = load_task_file(str(path), text_field="text", label_field="label",
                          encoding="latin-1")
    assert data.texts == ["caf\xe9 ok"]
    assert os.path.exists(path)
