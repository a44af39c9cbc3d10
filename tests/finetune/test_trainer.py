"""AlumTrainer details that the end-to-end runs cannot show on a CPU."""
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainingArguments

import alum.finetune.trainer as trainer_module
from alum import AlumConfig
from alum.finetune.trainer import AlumTrainer


class FakeScaler:
    def is_enabled(self):
        return True

    def get_scale(self):
        return 4096.0


def test_fp16_loss_scale_reaches_the_inner_gradient(tiny_bert_dir, tmp_path, monkeypatch):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    trainer = AlumTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path),
                                                              report_to="none", use_cpu=True),
                          alum_config=AlumConfig())
    seen = {}
    real = trainer_module.adversarial_loss

    def spy(*args, **kwargs):
        seen["loss_scale"] = kwargs.get("loss_scale")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "adversarial_loss", spy)
    batch = dict(tok(["good", "bad film"], padding=True, return_tensors="pt"))
    batch["labels"] = torch.tensor([1, 0])
    model.train()
    trainer.compute_loss(model, batch)
    assert seen["loss_scale"] == 1.0  # no scaler on the CPU
    trainer.accelerator.scaler = FakeScaler()
    loss = trainer.compute_loss(model, batch)
    assert seen["loss_scale"] == 4096.0 and torch.isfinite(loss)
    # Evaluation mode never runs the adversarial term.
    model.eval()
    seen.clear()
    trainer.compute_loss(model, batch)
    assert seen == {}
