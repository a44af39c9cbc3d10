"""alum-finetune --task qa / multiple-choice and the NLI label options, end to end."""
import os

import pytest
from transformers import AutoModelForMultipleChoice, AutoModelForQuestionAnswering

from alum.finetune import robustness
from alum.finetune.cli import build_parser, run

from .conftest import FIXTURES

COMMON = ["--epochs", "1", "--batch-size", "8", "--no-progress", "--logging-steps", "1",
          "--alum-preset", "relative", "--seed", "3"]


def test_squad_v2_with_alum(tiny_bert_dir, tmp_path):
    out = tmp_path / "qa"
    s = run(build_parser().parse_args([
        "--model", tiny_bert_dir, "--task", "qa", "--squad-v2", "--output", str(out),
        "--train", os.path.join(FIXTURES, "squad_v2_train.json"),
        "--eval", os.path.join(FIXTURES, "squad_v2_dev.json"),
        "--max-length", "64", "--doc-stride", "16", *COMMON]))
    assert s["train_features"] > s["train_examples"] == 33
    assert s["adv_steps"] == s["steps"] > 0 and s["adv_skipped"] == 0
    final = s["final_eval"]
    assert final["eval_total"] == 20 and final["eval_no_ans_total"] == 4
    assert 0 <= final["eval_exact_match"] <= final["eval_f1"] <= 100
    AutoModelForQuestionAnswering.from_pretrained(out)
    # The QA model under the robustness command: radius 0 equals clean.
    [r] = robustness.run(robustness.build_parser().parse_args([
        "--model", str(out), "--eval", os.path.join(FIXTURES, "squad_v2_dev.json"),
        "--squad-v2", "--max-length", "64", "--doc-stride", "16", "--radius", "0",
        "--radius", "0.5", "--relative", "--steps", "2"]))
    clean, zero, _ = r["results"]
    assert r["task"] == "qa" and zero["f1"] == clean["f1"] == final["eval_f1"]


@pytest.mark.parametrize("train,evaluation,family", [
    ("swag_train.csv", "swag_val.csv", "roberta"),
    ("hellaswag_train.jsonl", "hellaswag_val.jsonl", "bert")])
def test_multiple_choice_with_alum(train, evaluation, family, tiny_bert_dir, tiny_roberta_dir,
                                   tmp_path):
    model_dir = tiny_bert_dir if family == "bert" else tiny_roberta_dir
    out = tmp_path / "mc"
    s = run(build_parser().parse_args([
        "--model", model_dir, "--task", "multiple-choice", "--output", str(out),
        "--train", os.path.join(FIXTURES, train), "--eval", os.path.join(FIXTURES, evaluation),
        *COMMON]))
    assert s["num_choices"] == 4 and s["adv_steps"] == s["steps"] > 0
    assert "eval_accuracy" in s["final_eval"]
    AutoModelForMultipleChoice.from_pretrained(out)
    [r] = robustness.run(robustness.build_parser().parse_args([
        "--model", str(out), "--eval", os.path.join(FIXTURES, evaluation), "--radius", "0"]))
    assert r["task"] == "multiple-choice"
    assert r["results"][0]["accuracy"] == r["results"][1]["accuracy"] \
        == s["final_eval"]["eval_accuracy"]


def test_mnli_matched_mismatched_and_a_scitail_model_on_mnli(tiny_bert_dir, tmp_path):
    pair = ["--text-field", "sentence1", "--text-pair-field", "sentence2",
            "--label-field", "gold_label", "--ignore-label", "-"]
    s = run(build_parser().parse_args([
        "--model", tiny_bert_dir, "--train", os.path.join(FIXTURES, "mnli_train.jsonl"),
        "--eval", os.path.join(FIXTURES, "mnli_dev_matched.tsv"),
        "--extra-eval", "mismatched=" + os.path.join(FIXTURES, "mnli_dev_mismatched.jsonl"),
        "--output", str(tmp_path / "mnli"), *pair, *COMMON]))
    assert "eval_accuracy" in s["final_eval"]
    assert "eval_mismatched_accuracy" in s["extra_evals"]["mismatched"]
    # 3-way MNLI model scored on 2-way SciTail: contradiction counts as neutral.
    [r] = robustness.run(robustness.build_parser().parse_args([
        "--model", str(tmp_path / "mnli"), "--eval", os.path.join(FIXTURES, "scitail_dev.jsonl"),
        *pair, "--eval-label-map", "scitail-to-mnli", "--prediction-map", "mnli-to-2way",
        "--radius", "0.5", "--relative"]))
    assert [row["examples"] for row in r["results"]] == [3.0, 3.0]

    st = tmp_path / "scitail"
    s = run(build_parser().parse_args([
        "--model", tiny_bert_dir, "--train", os.path.join(FIXTURES, "scitail_train.tsv"),
        "--no-header", "--text-field", "0", "--text-pair-field", "1", "--label-field", "2",
        "--label-map", "scitail-to-mnli", "--output", str(st), *COMMON]))
    assert s["label_list"] == ["entailment", "neutral"]
    # The 2-way model on 3-way MNLI, contradiction merged into neutral.
    [r] = robustness.run(robustness.build_parser().parse_args([
        "--model", str(st), "--eval", os.path.join(FIXTURES, "mnli_dev_mismatched.jsonl"),
        *pair, "--eval-label-map", "mnli-to-2way"]))
    assert r["results"][0]["examples"] == 9.0
