"""The perturbation site on real HF BERT and RoBERTa classes (tiny, built from config)."""
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alum import AlumConfig, adversarial_loss
from alum.finetune.embedding_site import EmbeddingSite, find_embeddings


def _batch(model_dir):
    tok = AutoTokenizer.from_pretrained(model_dir)
    batch = tok(["a great movie , truly wonderful", "awful"], ["yes", "no it was bad"],
                padding=True, return_tensors="pt")
    assert (batch["attention_mask"] == 0).any()  # padding present
    return batch


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_zero_delta_perturbed_forward_equals_clean(family, tiny_bert_dir, tiny_roberta_dir):
    model_dir = tiny_bert_dir if family == "bert" else tiny_roberta_dir
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = _batch(model_dir)
    site = EmbeddingSite(model)
    with site.capture():
        clean = model(**batch).logits
    calls = {"n": 0}
    hook = find_embeddings(model).register_forward_pre_hook(
        lambda *a: calls.__setitem__("n", calls["n"] + 1))
    with site.inject(site.output + torch.zeros_like(site.output)):
        perturbed = model(**batch).logits
    hook.remove()
    assert torch.equal(perturbed, clean)
    # The embeddings module's own forward did not run again (its hooks still fire).
    assert calls["n"] == 1
    assert "forward" not in vars(find_embeddings(model))  # restored after the block
    # Re-running through inputs_embeds (the reference code's fault) would not be equal.
    emb = find_embeddings(model)
    twice = model(inputs_embeds=site.output, attention_mask=batch["attention_mask"]).logits
    assert not torch.allclose(twice, clean)
    assert emb is find_embeddings(model)


@pytest.mark.parametrize("family", ["bert", "roberta"])
def test_injected_delta_changes_output_and_adversarial_loss_runs(family, tiny_bert_dir,
                                                                 tiny_roberta_dir):
    model_dir = tiny_bert_dir if family == "bert" else tiny_roberta_dir
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    batch = _batch(model_dir)
    site = EmbeddingSite(model)
    with site.capture():
        out = model(**batch)

    def forward_fn(x):
        with site.inject(x):
            return model(**batch).logits

    cfg = AlumConfig.from_preset("relative")
    loss, stats = adversarial_loss(forward_fn, site.output, out.logits, cfg,
                                   mask=batch["attention_mask"])
    assert loss.item() > 0 and not stats.skipped
    loss.backward()
    # The adversarial term trains the encoder and head, not the embedding tables
    # (detach_embeddings): the clean branch's KL term reaches them only via clean logits.
    enc = [p for n, p in model.named_parameters() if "encoder" in n]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in enc)


def test_non_encoder_model_is_rejected():
    with pytest.raises(ValueError, match="embeddings"):
        EmbeddingSite(torch.nn.Linear(2, 2))
