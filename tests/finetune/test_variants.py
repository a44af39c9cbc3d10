"""alum-finetune's Trainer with each direction and the batch fraction (AlumConfig.direction,
.fraction): the passes each one runs, the free direction's gradient against a reference
written here, and the rows the fraction perturbs."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

from alum import AlumConfig
from alum.finetune.embedding_site import EmbeddingSite
from alum.finetune.trainer import AlumTrainer
from alum.perturbation import adv_project, embedding_scale

TEXTS = ["a good film", "bad", "the plot was thin but the acting good", "fine"]


def setup(model_dir, tmp_path, cfg):
    # Dropout off: the passes are deterministic, so the reference can repeat them.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    trainer = AlumTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path),
                                                              report_to="none", use_cpu=True),
                          alum_config=cfg)
    trainer.current_gradient_accumulation_steps = 1  # set by Trainer.train's loop
    batch = dict(tok(TEXTS, padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0, 1, 0])
    return model, trainer, batch


class PassCounter:
    """Forward passes through the encoder, and backward passes through it (gradients that
    reach an encoder output), with the input ids each forward saw."""

    def __init__(self, model):
        self.forward = self.backward = 0
        self.batches = []
        model.bert.encoder.register_forward_hook(self._on_forward)
        model.bert.embeddings.register_forward_pre_hook(
            lambda _m, args, kwargs: self.batches.append(kwargs.get("input_ids")),
            with_kwargs=True)

    def _on_forward(self, _module, _args, output):
        self.forward += 1
        hidden = output[0] if isinstance(output, tuple) else output.last_hidden_state
        if hidden.requires_grad:
            hidden.register_hook(self._on_backward)

    def _on_backward(self, _grad):
        self.backward += 1


@pytest.mark.parametrize("direction, forward, backward", [
    ("ascent", 3, 3), ("none", 2, 2), ("random", 2, 2), ("free", 2, 2)])
def test_passes_per_step(tiny_bert_dir, tmp_path, direction, forward, backward):
    """K = 1 ascent: clean, ascent and final pass, each forward and backward; the cheaper
    directions: the clean and the perturbed pass only (the free one's δ comes from the
    clean backward)."""
    cfg = AlumConfig.from_preset("relative-finetune", direction=direction)
    model, trainer, batch = setup(tiny_bert_dir, tmp_path, cfg)
    counter = PassCounter(model)
    trainer.training_step(model, batch)
    assert (counter.forward, counter.backward) == (forward, backward)
    assert trainer.adv_steps == 1 and trainer.adv_skipped == 0
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_free_gradient_matches_a_reference(tiny_bert_dir, tmp_path):
    """The free step's parameter gradients are those of CE(f(x)) + α·D_sym(f(x+δ), sg f(x))
    with δ = Π(η·g/‖g‖), g = ∇_x CE(f(x)) at the embedding output."""
    cfg = AlumConfig.from_preset("free", alpha=0.7)
    model, trainer, batch = setup(tiny_bert_dir, tmp_path, cfg)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    mask = batch["attention_mask"]

    model.train()
    site = EmbeddingSite(model)
    with site.capture():
        out = model(**inputs)
    embeds = site.output
    ce = torch.nn.functional.cross_entropy(out.logits, batch["labels"])
    (g,) = torch.autograd.grad(ce, embeds, retain_graph=True)
    delta = adv_project(torch.zeros_like(embeds), g, cfg, mask,
                        embedding_scale(embeds, cfg, mask))
    with site.inject(embeds.detach() + delta):
        adv = model(**inputs).logits
    p_adv, p_clean = torch.softmax(adv.double(), -1), torch.softmax(out.logits.detach().double(), -1)
    sym = (p_clean * (p_clean.log() - p_adv.log())).sum(-1) \
        + (p_adv.detach() * (p_adv.detach().log() - p_clean.log())).sum(-1)
    (ce + cfg.alpha * sym.mean()).backward()
    want = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    trainer.training_step(model, batch)
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want[name], rtol=1e-4, atol=1e-6, msg=name)
    assert float(delta.abs().sum()) > 0


def test_fraction_perturbs_the_first_examples(tiny_bert_dir, tmp_path):
    cfg = AlumConfig.from_preset("half-batch")
    model, trainer, batch = setup(tiny_bert_dir, tmp_path, cfg)
    counter = PassCounter(model)
    trainer.training_step(model, batch)
    # The clean pass sees the batch; the ascent and the final pass its first ceil(4/2) rows.
    ids = batch["input_ids"]
    assert [b.shape[0] for b in counter.batches] == [4, 2, 2]
    assert torch.equal(counter.batches[0], ids)
    assert all(torch.equal(b, ids[:2]) for b in counter.batches[1:])
    assert counter.forward == 3
