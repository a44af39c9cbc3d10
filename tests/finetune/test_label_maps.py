"""Label-set mappings between MNLI, ANLI and SciTail."""
import os

import numpy as np
import pytest

from alum.finetune.label_maps import (mapped_predictions, parse_label_map, prediction_index,
                                      remap_labels)
from alum.finetune.task_data import TaskDataError, load_task_file

from .conftest import FIXTURES


def test_parse_named_and_explicit_maps():
    assert parse_label_map("scitail-to-mnli") == {"entails": "entailment", "neutral": "neutral"}
    assert parse_label_map("entails=entailment, neutral=neutral") == \
        {"entails": "entailment", "neutral": "neutral"}
    assert parse_label_map(None) is None
    with pytest.raises(TaskDataError, match="not SRC=DST"):
        parse_label_map("entails:entailment")


def test_scitail_tsv_and_jsonl_read_with_mnli_names():
    tsv = load_task_file(os.path.join(FIXTURES, "scitail_train.tsv"), no_header=True,
                         text_field=0, text_pair_field=1, label_field=2)
    with open(os.path.join(FIXTURES, "scitail_train.tsv"), encoding="utf-8") as fh:
        rows = [line.rstrip("\n").split("\t") for line in fh]
    assert tsv.texts == [r[0] for r in rows] and tsv.text_pairs == [r[1] for r in rows]
    mapped = remap_labels(tsv, parse_label_map("scitail-to-mnli"))
    assert mapped.label_list == ["entailment", "neutral"]
    assert [mapped.label_list[i] for i in mapped.labels] == \
        [{"entails": "entailment"}.get(r[2], r[2]) for r in rows]
    jl = load_task_file(os.path.join(FIXTURES, "scitail_dev.jsonl"), text_field="sentence1",
                        text_pair_field="sentence2", label_field="gold_label")
    assert remap_labels(jl, parse_label_map("scitail-to-mnli"), ["entailment", "neutral"]) \
        .labels == [0, 1, 0]


def test_three_way_mnli_against_a_two_way_model():
    mnli = load_task_file(os.path.join(FIXTURES, "mnli_dev_mismatched.jsonl"),
                          text_field="sentence1", text_pair_field="sentence2",
                          label_field="gold_label", ignore_labels=["-"])
    with pytest.raises(TaskDataError, match="contradiction"):
        remap_labels(mnli, None, ["entailment", "neutral"])
    two_way = remap_labels(mnli, parse_label_map("mnli-to-2way"), ["entailment", "neutral"])
    gold3 = [mnli.label_list[i] for i in mnli.labels]
    assert [two_way.label_list[i] for i in two_way.labels] == \
        ["entailment" if g == "entailment" else "neutral" for g in gold3]
    # A 3-way model's predictions scored on the 2-way labels.
    model = ["contradiction", "entailment", "neutral"]
    index = prediction_index(model, ["entailment", "neutral"], parse_label_map("mnli-to-2way"))
    assert index.tolist() == [1, 0, 1]
    logits = np.array([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0]])
    assert mapped_predictions(logits, model, ["entailment", "neutral"],
                              parse_label_map("mnli-to-2way")).tolist() == [1, 0, 1]
    with pytest.raises(TaskDataError, match="prediction-map"):
        prediction_index(model, ["entailment", "neutral"], None)


def test_anli_letters_to_mnli_names():
    anli = load_task_file(os.path.join(FIXTURES, "anli_r2_dev.jsonl"), text_field="premise",
                          text_pair_field="hypothesis", label_field="label")
    mapped = remap_labels(anli, parse_label_map("anli-to-mnli"),
                          ["contradiction", "entailment", "neutral"])
    assert [mapped.label_list[i] for i in mapped.labels] == \
        ["contradiction", "entailment", "neutral", "entailment", "contradiction", "neutral"]
