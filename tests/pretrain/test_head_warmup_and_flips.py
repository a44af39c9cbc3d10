"""--freeze-encoder (a head-only warm-up of a released encoder) and the end-of-run flip
check (ALUM's flip rate against dropout's own, alum.pretrain.flip_check)."""
import pytest
import torch

from alum import AlumConfig
from alum.pretrain import Trainer
from alum.pretrain.config import ModelChoice, PretrainConfig
from alum.pretrain.flip_check import flip_rates
from alum.pretrain.hf_mlm_adapter import tiny_hf_bert

from .conftest import tiny_config

RELATIVE = dict(noise_std=1e-3, step_size=0.5, epsilon=0.5, steps=1, norm="l2",
                level="token", update="project", epsilon_scale="relative")


def test_freeze_encoder_is_checked_at_config_time():
    with pytest.raises(ValueError, match=r"ModelChoice\.freeze_encoder.*model_kind='hf'"):
        ModelChoice(freeze_encoder=True)
    hf = ModelChoice(model_kind="hf", hf_model="x", freeze_encoder=True)
    with pytest.raises(ValueError, match=r"ModelChoice\.freeze_encoder.*--no-alum"):
        PretrainConfig(model=hf, alum=AlumConfig())
    PretrainConfig(model=hf)


def test_freeze_encoder_leaves_the_head_alone_trainable():
    model = tiny_hf_bert(50, hidden_size=16, num_layers=1, max_positions=16)
    head = {id(p) for p in model.head().parameters()}
    base = {id(p) for p in model.base.parameters()}
    trainable = model.freeze_encoder()
    expected = sum(p.numel() for p in model.mlm_model.parameters()
                   if id(p) in head and id(p) not in base)
    assert trainable == expected > 0
    for name, p in model.mlm_model.named_parameters():
        assert p.requires_grad == (id(p) in head and id(p) not in base), name
    # The decoder is tied to the word embeddings: it stays frozen with them.
    decoder = model.mlm_model.cls.predictions.decoder.weight
    assert decoder is model.base.embeddings.word_embeddings.weight
    assert not decoder.requires_grad


@pytest.mark.slow
def test_head_warmup_run_changes_the_head_only(tmp_path, sample_cache):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(f"{sample_cache}/tokenizer")
    tiny_hf_bert(len(tok), hidden_size=32, num_layers=1,
                 max_positions=64).save_pretrained(str(tmp_path / "hf"))
    cfg = tiny_config(tmp_path / "out", sample_cache, steps=3, lr=1e-2)
    cfg.model.model_kind, cfg.model.hf_model = "hf", str(tmp_path / "hf")
    cfg.model.freeze_encoder = True
    cfg.checkpoint.export_hf = str(tmp_path / "warm")
    summary = Trainer(cfg).train()
    assert summary.end_step == 3 and summary.flip_check is None  # no ALUM, no check
    before = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "hf")).state_dict()
    after = AutoModelForMaskedLM.from_pretrained(str(tmp_path / "warm")).state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("cls.") for k in changed), sorted(changed)
    assert "cls.predictions.transform.dense.weight" in changed


def _batch(vocab, b=3, s=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (b, s), generator=g)
    mask = torch.ones(b, s, dtype=torch.long)
    mask[0, 9:] = 0
    labels = torch.full((b, s), -100)
    pick = torch.rand(b, s, generator=g) < 0.4
    pick &= mask.bool()
    labels[pick] = ids[pick]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _reduce(values):
    return values


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_dropout_flips_match_two_plain_passes(dropout):
    vocab = 40
    model = tiny_hf_bert(vocab, hidden_size=16, num_layers=2, max_positions=16, dropout=dropout)
    model.eval()  # the check turns dropout on itself, and restores the mode
    batch = _batch(vocab)
    torch.manual_seed(7)
    state = torch.get_rng_state()
    out = flip_rates(model, [batch], AlumConfig(alpha=1.0, **RELATIVE), "masked", None,
                     lambda x: x, _reduce)
    assert torch.equal(torch.get_rng_state(), state)  # the training stream is untouched
    assert not model.training
    # Reference: the same two dropout draws, as plain forward calls.
    torch.manual_seed(7)
    model.train()
    rows = batch["labels"].ne(-100)
    with torch.no_grad():
        a = model(batch["input_ids"], batch["attention_mask"], rows=rows).argmax(-1)
        b = model(batch["input_ids"], batch["attention_mask"], rows=rows).argmax(-1)
    assert out["positions"] == int(rows.sum())
    assert out["two_clean_passes"] == pytest.approx(float((a != b).float().mean()))
    if dropout == 0.0:
        assert out["two_clean_passes"] == 0.0 and out["dropout"] == 0.0
    else:
        # A random model's residual branches are small next to the embedding stream, so
        # redrawing the encoder's masks alone (``dropout``) may flip nothing; redrawing the
        # embedding dropout too flips many predictions.
        assert out["two_clean_passes"] > 0.0 and 0.0 <= out["dropout"] <= 1.0
    assert 0.0 <= out["alum"] <= 1.0


def test_alum_flips_come_from_delta_without_dropout():
    vocab = 40
    model = tiny_hf_bert(vocab, hidden_size=16, num_layers=2, max_positions=16, dropout=0.0)
    batches = [_batch(vocab, seed=s) for s in range(3)]
    big = flip_rates(model, batches, AlumConfig(alpha=1.0, **RELATIVE), "masked", None,
                     lambda x: x, _reduce)
    zero = flip_rates(model, batches, AlumConfig(alpha=1.0, **dict(
        RELATIVE, noise_std=0.0, step_size=0.0)), "masked", None, lambda x: x, _reduce)
    assert big["dropout"] == 0.0 and zero["dropout"] == 0.0
    assert big["two_clean_passes"] == 0.0
    assert zero["alum"] == 0.0  # δ = 0 and no dropout: the perturbed pass is the clean one
    assert big["alum"] > 0.0    # a 50% ball flips some predictions of a random model


@pytest.mark.slow
def test_alum_run_ends_with_the_flip_check(tmp_path, sample_cache):
    from alum.pretrain.cli import closing_summary

    cfg = tiny_config(tmp_path / "out", sample_cache, steps=2, dropout=0.1,
                      alum=AlumConfig(alpha=1.0, start_step=0, **RELATIVE))
    trainer = Trainer(cfg)
    summary = trainer.train()
    f = summary.flip_check
    assert f is not None and f["positions"] > 0
    assert 0.0 <= f["dropout"] <= 1.0 and 0.0 <= f["alum"] <= 1.0
    text = closing_summary(summary, cfg)
    assert 0.0 <= f["two_clean_passes"] <= 1.0
    assert f"dropout alone flips {100 * f['dropout']:.1f}% (the same two passes" in text
    assert f"({f['positions']} validation positions" in text
