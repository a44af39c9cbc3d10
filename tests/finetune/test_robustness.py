"""alum-robustness: the embedding-space PGD attack and the command."""
import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alum.finetune import cli, robustness
from alum.finetune.embedding_attack import AttackConfig, attacked_outputs

from .conftest import FIXTURES


def test_attack_respects_the_ball_and_padding(tiny_bert_dir):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    batch = dict(tok(["a wonderful film", "bad"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    with torch.no_grad():
        clean = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    zero = attacked_outputs(model, batch, AttackConfig(radius=0.0, steps=5)).logits
    assert torch.equal(zero, clean)
    seen = {}
    from alum.finetune import embedding_attack

    real = embedding_attack.EmbeddingSite.inject

    def spy(self, value):
        seen["last"] = value.detach().clone()
        return real(self, value)

    embedding_attack.EmbeddingSite.inject = spy
    try:
        for norm in ("inf", "l2"):
            cfg = AttackConfig(radius=0.3, norm=norm, steps=3)
            site = embedding_attack.EmbeddingSite(model)
            with torch.no_grad(), site.capture():
                model(**{k: v for k, v in batch.items() if k != "labels"})
            attacked = attacked_outputs(model, batch, cfg).logits
            delta = seen["last"] - site.output
            pad = batch["attention_mask"] == 0
            assert pad.any() and delta[pad].abs().max() == 0
            n = delta.abs().amax(-1) if norm == "inf" else delta.norm(dim=-1)
            assert n.max() <= 0.3 + 1e-5 and n[~pad].min() > 0.1
            # The attack raises the loss of the gold label.
            ce = torch.nn.functional.cross_entropy
            assert ce(attacked, batch["labels"]) > ce(clean, batch["labels"])
    finally:
        embedding_attack.EmbeddingSite.inject = real


def test_attack_lowers_accuracy_of_a_standard_model_and_radius_zero_is_clean(
        tiny_bert_dir, tmp_path, capsys):
    model_dir = tmp_path / "sst2-standard"
    cli.run(cli.build_parser().parse_args([
        "--model", tiny_bert_dir, "--train", os.path.join(FIXTURES, "sst2_train.tsv"),
        "--output", str(model_dir), "--epochs", "20", "--warmup-ratio", "0", "--lr", "3e-3",
        "--batch-size", "8", "--no-alum", "--no-progress", "--seed", "7"]))
    out_json = tmp_path / "r.json"
    assert robustness.main([
        "--model", str(model_dir), "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"),
        "--radius", "0", "--radius", "2", "--norm", "l2", "--relative", "--steps", "10",
        "--adv-eval", "again=" + os.path.join(FIXTURES, "sst2_dev.tsv"),
        "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert "pgd-l2 eps=2" in table and "clean" in table
    result = json.loads(out_json.read_text())
    rows = result["results"]
    clean, zero, big, again = rows
    assert result["task"] == "classification"
    assert clean["attack"] == "clean" and clean["accuracy"] >= 0.75
    assert zero["radius"] == 0.0 and zero["accuracy"] == clean["accuracy"]
    assert big["accuracy"] < clean["accuracy"]
    assert again["dataset"] == "again" and again["accuracy"] == clean["accuracy"]


def _every_option_documented(parser):
    text = parser.format_help()
    for action in parser._actions:
        for opt in action.option_strings:
            assert opt in text, opt
        if action.option_strings and action.dest not in ("help", "local_rank"):
            assert action.help and action.help.strip(), action.option_strings


def test_help_documents_every_option():
    _every_option_documented(robustness.build_parser())
    _every_option_documented(cli.build_parser())


def test_word_attack_without_the_library_is_a_clear_error(tiny_bert_dir, capsys, monkeypatch):
    from alum.finetune import word_attack

    monkeypatch.setattr(word_attack, "available", lambda: False)
    with pytest.raises(SystemExit):
        robustness.main(["--model", tiny_bert_dir, "--eval",
                         os.path.join(FIXTURES, "sst2_dev.tsv"), "--word-attack",
                         "TextFoolerJin2019"])
    assert "textattack" in capsys.readouterr().err
