"""alum-robustness: the embedding-space PGD attack and the command."""
import json
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alum.finetune import cli, embedding_attack, robustness
from alum.finetune.embedding_attack import AttackConfig, attacked_outputs

from .conftest import FIXTURES


@pytest.fixture
def injected(monkeypatch):
    """The last embedding output the attack injected (``injected["last"]``)."""
    seen = {}
    real = embedding_attack.EmbeddingSite.inject

    def spy(self, value):
        seen["last"] = value.detach().clone()
        return real(self, value)

    monkeypatch.setattr(embedding_attack.EmbeddingSite, "inject", spy)
    return seen


def test_attack_respects_the_ball_and_padding(tiny_bert_dir, injected):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    batch = dict(tok(["a wonderful film", "bad"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    with torch.no_grad():
        clean = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
    zero = attacked_outputs(model, batch, AttackConfig(radius=0.0, steps=5)).logits
    assert torch.equal(zero, clean)
    for norm in ("inf", "l2"):
        cfg = AttackConfig(radius=0.3, norm=norm, steps=3)
        site = embedding_attack.EmbeddingSite(model)
        with torch.no_grad(), site.capture():
            model(**{k: v for k, v in batch.items() if k != "labels"})
        attacked = attacked_outputs(model, batch, cfg).logits
        delta = injected["last"] - site.output
        pad = batch["attention_mask"] == 0
        assert pad.any() and delta[pad].abs().max() == 0
        n = delta.abs().amax(-1) if norm == "inf" else delta.norm(dim=-1)
        assert n.max() <= 0.3 + 1e-5 and n[~pad].min() > 0.1
        # The attack raises the loss of the gold label.
        ce = torch.nn.functional.cross_entropy
        assert ce(attacked, batch["labels"]) > ce(clean, batch["labels"])


@pytest.mark.slow
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


def _plain_pgd(model, batch, cfg, embeds, mask):
    """PGD written out in plain PyTorch (Madry et al.): sign step for L-inf, g/‖g‖₂ for L2,
    clamp / rescale into the per-token ball, padding kept at 0."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    keep = mask.to(embeds.dtype).unsqueeze(-1)
    if cfg.relative:
        e = embeds * keep
        unit = e.abs().amax(-1, keepdim=True) if cfg.norm == "inf" else e.norm(dim=-1,
                                                                                keepdim=True)
    else:
        unit = torch.ones_like(embeds[..., :1])
    eps, eta = cfg.radius * unit, cfg.eta * unit

    def project(d):
        if cfg.norm == "inf":
            return torch.maximum(torch.minimum(d, eps), -eps)
        n = d.norm(dim=-1, keepdim=True)
        return torch.where(n > eps, d * eps / n, d)

    delta = torch.zeros_like(embeds)
    if cfg.random_start:
        gen = torch.Generator().manual_seed(cfg.seed)
        delta = project((torch.rand(embeds.shape, generator=gen) * 2 - 1) * eps) * keep
    site = embedding_attack.EmbeddingSite(model)
    for _ in range(cfg.steps):
        d = delta.clone().requires_grad_(True)
        with site.inject(embeds + d):
            loss = torch.nn.functional.cross_entropy(model(**inputs).logits, batch["labels"],
                                                     reduction="sum")
        (g,) = torch.autograd.grad(loss, d)
        n = g.norm(dim=-1, keepdim=True).clamp_min(1e-30)  # padding rows: g = 0
        step = g.sign() if cfg.norm == "inf" else g / n
        delta = project(delta + eta * step) * keep
    return delta


@pytest.mark.parametrize("norm", ["inf", "l2"])
@pytest.mark.parametrize("relative", [False, True])
@pytest.mark.parametrize("random_start", [False, True])
def test_attack_equals_plain_pgd(tiny_bert_dir, injected, norm, relative, random_start):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir).eval()
    batch = dict(tok(["a wonderful film indeed", "bad"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    cfg = AttackConfig(radius=0.2 if relative else 0.5, norm=norm, steps=3,
                       relative=relative, random_start=random_start, seed=4)
    site = embedding_attack.EmbeddingSite(model)
    with torch.no_grad(), site.capture():
        model(**{k: v for k, v in batch.items() if k != "labels"})
    embeds = site.output.detach()
    want = _plain_pgd(model, batch, cfg, embeds, batch["attention_mask"])
    attacked_outputs(model, batch, cfg)
    torch.testing.assert_close(injected["last"] - embeds, want, rtol=1e-5, atol=1e-6)


def test_plot_draws_one_curve_per_model_from_the_results(tiny_bert_dir, tmp_path, capsys):
    import shutil

    from transformers import AutoModelForSequenceClassification

    from alum.plotting import read_png_data

    # Two different models: the tiny BERT and a copy whose classifier is moved.
    first, second = tmp_path / "model-a", tmp_path / "model-b"
    shutil.copytree(tiny_bert_dir, first)
    shutil.copytree(tiny_bert_dir, second)
    model = AutoModelForSequenceClassification.from_pretrained(second)
    torch.manual_seed(0)
    with torch.no_grad():
        model.classifier.weight.add_(torch.randn_like(model.classifier.weight))
    model.save_pretrained(second)
    png, out_json = tmp_path / "curves.png", tmp_path / "r.json"
    radii = ["0.05", "0.2", "1"]
    assert robustness.main(["--model", str(first), "--model", str(second),
                            "--eval", os.path.join(FIXTURES, "sst2_dev.tsv"), "--norm", "l2",
                            "--eval-label-map", "0=LABEL_0,1=LABEL_1",
                            "--relative", "--steps", "3", "--json", str(out_json),
                            "--plot", str(png)] + [a for r in radii for a in ("--radius", r)]
                           ) == 0
    assert "model: " in capsys.readouterr().out
    results = json.loads(out_json.read_text())
    assert [r["model"] for r in results] == [str(first), str(second)]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = read_png_data(str(png))
    assert data["metric"] == "accuracy" and list(data["curves"]) == ["model-a", "model-b"]
    for result, points in zip(results, data["curves"].values()):
        rows = {r["radius"]: r["accuracy"] for r in result["results"] if r["attack"] != "clean"}
        clean = next(r["accuracy"] for r in result["results"] if r["attack"] == "clean")
        assert points == [[0.0, clean]] + [[float(r), rows[float(r)]] for r in radii]
    import matplotlib.image

    assert matplotlib.image.imread(str(png)).shape[2] in (3, 4)  # a readable image


def test_plot_without_a_radius_is_refused_before_evaluating(tiny_bert_dir, tmp_path, capsys):
    with pytest.raises(SystemExit):
        robustness.main(["--model", tiny_bert_dir, "--eval",
                         os.path.join(FIXTURES, "sst2_dev.tsv"), "--plot",
                         str(tmp_path / "x.png")])
    assert "--radius > 0" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists()
