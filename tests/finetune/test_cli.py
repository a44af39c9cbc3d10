"""alum-finetune end to end on tiny models built from config and the shipped fixtures."""
import json
import os

import pytest
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alum.finetune.cli import build_parser, main, run

from .conftest import FIXTURES

pytestmark = pytest.mark.slow  # each test trains a model (a few seconds)


def _args(model_dir, out, *extra):
    return ["--model", model_dir, "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
            "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"), "--output", str(out),
            "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--no-progress",
            "--logging-steps", "2", "--seed", "7", *extra]


def test_classification_with_alum_saves_a_loadable_model(tiny_bert_dir, tmp_path):
    out = tmp_path / "sst2-alum"
    summary = run(build_parser().parse_args(_args(tiny_bert_dir, out, "--alum-preset",
                                                  "relative")))
    assert summary["steps"] == 8  # 30 rows / batch 8 = 4 steps per epoch
    assert summary["adv_steps"] == 8 and summary["adv_skipped"] == 0
    assert summary["train_cpu_seconds"] > 0 and summary["train_seconds"] > 0
    evals = summary["eval_history"]
    assert len(evals) == 2 and {"eval_accuracy", "eval_macro_f1"} <= set(evals[-1])
    model = AutoModelForSequenceClassification.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert model.config.id2label == {0: "0", 1: "1"}
    logits = model(**tok(["a wonderful film"], return_tensors="pt")).logits
    assert logits.shape == (1, 2)
    with open(out / "alum_finetune.json") as fh:
        saved = json.load(fh)
    assert saved["alum"]["epsilon_scale"] == "relative"
    assert not (tmp_path / "sst2-alum.partial").exists()
    assert not (tmp_path / "sst2-alum.work").exists()


def test_training_learns_the_fixture_task(tiny_bert_dir, tmp_path):
    """Standard and ALUM training both fit the clearly separable fixture sentences."""
    for flag in ("--no-alum", "--alum"):
        out = tmp_path / flag.strip("-")
        summary = run(build_parser().parse_args(
            _args(tiny_bert_dir, out, flag, "--epochs", "20", "--warmup-ratio", "0",
                  "--lr", "3e-3")))
        first, last = summary["eval_history"][0], summary["eval_history"][-1]
        assert last["eval_loss"] < first["eval_loss"]
        assert last["eval_accuracy"] >= 0.8  # on the held-out dev file; chance is 0.5


def test_same_seed_same_run_and_curriculum(tiny_bert_dir, tmp_path):
    runs = []
    for name in ("a", "b"):
        runs.append(run(build_parser().parse_args(
            _args(tiny_bert_dir, tmp_path / name, "--adv-start-step", "5"))))
    strip = [[{k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}
              for e in r["eval_history"]] for r in runs]
    assert strip[0] == strip[1]
    # Steps 0..4 are standard; the adversarial term runs from step 5 on.
    assert runs[0]["adv_steps"] == runs[0]["steps"] - 5 == 3


def test_regression_pair_task_on_roberta(tiny_roberta_dir, tmp_path):
    out = tmp_path / "stsb"
    stsb = os.path.join(FIXTURES, "stsb_train.tsv")
    summary = run(build_parser().parse_args(
        ["--model", tiny_roberta_dir, "--task", "regression", "--train", stsb, "--eval", stsb,
         "--text-field", "sentence1", "--text-pair-field", "sentence2", "--label-field",
         "score", "--output", str(out), "--epochs", "1", "--batch-size", "4", "--no-progress"]))
    assert summary["alum"]["loss"] == "mse" and summary["adv_steps"] == 3
    assert {"eval_pearson", "eval_spearman"} <= set(summary["final_eval"])
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.num_labels == 1 and model.config.problem_type == "regression"


def test_pair_classification_from_jsonl(tiny_bert_dir, tmp_path):
    anli = os.path.join(FIXTURES, "anli_train.jsonl")
    summary = run(build_parser().parse_args(
        ["--model", tiny_bert_dir, "--train", anli, "--eval", anli, "--text-field", "premise",
         "--text-pair-field", "hypothesis", "--output", str(tmp_path / "anli"),
         "--epochs", "1", "--batch-size", "6", "--no-progress"]))
    assert summary["label_list"] == ["c", "e", "n"]


def _error(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_clear_errors(tiny_bert_dir, tmp_path, capsys):
    base = ["--model", tiny_bert_dir, "--output", str(tmp_path / "x")]
    err = _error(capsys, base + ["--train", str(tmp_path / "nope.tsv")])
    assert "nope.tsv" in err
    err = _error(capsys, base + ["--train", os.path.join(FIXTURES, "sst2_train.tsv"),
                                 "--text-field", "review"])
    assert "review" in err and "sst2_train.tsv" in err and "sentence" in err
    err = _error(capsys, base + ["--train", os.path.join(FIXTURES, "sst2_train.tsv"),
                                 "--labels", "0"])
    assert "'1'" in err or "\"1\"" in err or " 1" in err
    assert "line" in err
    err = _error(capsys, base + ["--train", os.path.join(FIXTURES, "sst2_train.tsv"),
                                 "--adv-norm", "l1"])
    assert "AlumConfig.norm" in err or "norm='l1'" in err
    err = _error(capsys, ["--model", str(tmp_path), "--output", str(tmp_path / "y"),
                          "--train", os.path.join(FIXTURES, "sst2_train.tsv")])
    assert "config.json" in err
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


def test_help_documents_every_option(capsys):
    parser = build_parser()
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 10, action.option_strings
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for option in ("--adv-epsilon-scale", "--adv-update", "--alum-preset", "--text-pair-field"):
        assert option in text


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tiny_bert_dir, tmp_path):
    full = run(build_parser().parse_args(
        _args(tiny_bert_dir, tmp_path / "full", "--save-checkpoints")))
    work = tmp_path / "full.work"
    assert sorted(os.listdir(work)) == ["checkpoint-4", "checkpoint-8"]
    # Simulate a crash after the first epoch: the second checkpoint and the output are gone.
    import shutil
    shutil.rmtree(work / "checkpoint-8")
    shutil.rmtree(tmp_path / "full")
    resumed = run(build_parser().parse_args(
        _args(tiny_bert_dir, tmp_path / "full", "--save-checkpoints", "--resume")))
    assert resumed["steps"] == 8 and resumed["adv_steps"] == 4  # only steps 5..8 re-ran

    def clean(e):
        return {k: v for k, v in e.items() if "runtime" not in k and "per_second" not in k}

    assert clean(resumed["final_eval"]) == clean(full["final_eval"])


def test_default_alum_is_the_free_direction_in_the_five_percent_ball_at_half_weight():
    """What `alum-finetune` trains with when no ALUM option is given: the preset the
    robustness study's rule picks over both data sets (δ from the clean backward's
    gradient, mapped onto an L2 ball of 5% of each token's norm, the adversarial term
    weighted 0.5)."""
    from alum.cli_args import alum_config_from_args

    args = build_parser().parse_args(["--model", "m", "--train", "t.tsv", "--output", "o"])
    cfg = alum_config_from_args(args)
    assert args.alum_preset == "free"
    assert (cfg.direction, cfg.epsilon, cfg.step_size, cfg.epsilon_scale, cfg.norm,
            cfg.update, cfg.alpha) == ("free", 0.05, 0.05, "relative", "l2", "project", 0.5)
    ascent = alum_config_from_args(build_parser().parse_args(
        ["--model", "m", "--train", "t.tsv", "--output", "o", "--alum-preset",
         "relative-finetune"]))
    assert (ascent.direction, ascent.epsilon, ascent.alpha) == ("ascent", 0.05, 0.5)
    override = alum_config_from_args(build_parser().parse_args(
        ["--model", "m", "--train", "t.tsv", "--output", "o", "--alum-preset", "relative"]))
    assert (override.epsilon, override.step_size) == (0.1, 0.1)
    full_weight = alum_config_from_args(build_parser().parse_args(
        ["--model", "m", "--train", "t.tsv", "--output", "o", "--adv-alpha", "1.0"]))
    assert (full_weight.epsilon, full_weight.alpha) == (0.05, 1.0)
