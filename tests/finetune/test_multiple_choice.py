"""Multiple choice: SWAG CSV and HellaSwag jsonl reading, [B, C, T] batches, ALUM over the
choice distribution."""
import csv
import json
import os

import pytest
import torch
from transformers import AutoModelForMultipleChoice, AutoTokenizer

from alum import AlumConfig, adversarial_loss
from alum.finetune.embedding_site import EmbeddingSite
from alum.finetune.multiple_choice_data import (build_mc_dataset, load_multiple_choice_file,
                                                mc_collator)
from alum.finetune.task_data import TaskDataError
from alum.finetune.trainer import embedding_mask, head_logits

from .conftest import FIXTURES


@pytest.mark.parametrize("name", ["swag_train.csv", "swag_val.csv"])
def test_reads_swag_csv(name):
    path = os.path.join(FIXTURES, name)
    data = load_multiple_choice_file(path)
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, rows = rows[0], rows[1:]
    col = {c: i for i, c in enumerate(header)}
    assert header[0] == "" and len(data) == len(rows) and data.num_choices == 4
    for ex, row in zip(data.examples, rows):
        assert ex.context == row[col["sent1"]]
        assert ex.choices == [f"{row[col['sent2']]} {row[col[f'ending{i}']]}" for i in range(4)]
        assert ex.label == int(row[col["label"]])


@pytest.mark.parametrize("name", ["hellaswag_train.jsonl", "hellaswag_val.jsonl"])
def test_reads_hellaswag_jsonl(name):
    path = os.path.join(FIXTURES, name)
    data = load_multiple_choice_file(path)
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    assert len(data) == len(records)
    for ex, r in zip(data.examples, records):
        assert ex.context == r["ctx_a"]
        lead = r["ctx_b"][:1].upper() + r["ctx_b"][1:]
        assert ex.choices == [f"{lead} {e}".strip() for e in r["endings"]]
        assert ex.label == r["label"]
        assert r["ctx"].startswith(r["ctx_a"])


def test_mc_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"ctx_a": "a", "ctx_b": "b", "endings": ["x", "y"], "label": 0}\n'
                    '{"ctx_a": "a", "ctx_b": "b", "endings": ["x", "y"], "label": 5}\n')
    with pytest.raises(TaskDataError, match=r"h.jsonl, line 2, field 'label'"):
        load_multiple_choice_file(path)
    path = tmp_path / "s.csv"
    path.write_text("sent1,sent2,ending0,ending1,ending2,ending3,label\n"
                    "a,b,c,d,e,,1\n")
    with pytest.raises(TaskDataError, match=r"s.csv, line 2, column 'ending3'"):
        load_multiple_choice_file(path)


def test_alum_term_over_the_choices_sends_gradient_to_the_encoder(tiny_roberta_dir):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_roberta_dir)
    model = AutoModelForMultipleChoice.from_pretrained(tiny_roberta_dir,
                                                       ignore_mismatched_sizes=True)
    model.eval()
    data = load_multiple_choice_file(os.path.join(FIXTURES, "swag_val.csv"))
    ds = build_mc_dataset(data, tok, max_length=64)
    batch = mc_collator(tok)([ds[i] for i in range(len(ds))])
    assert batch["input_ids"].shape[:2] == (len(data), 4)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    site = EmbeddingSite(model)
    with site.capture():
        out = model(**inputs)
    assert site.output.shape[0] == len(data) * 4  # [B*C, T, H]
    mask = embedding_mask(batch["attention_mask"], site.output)
    assert mask.shape == site.output.shape[:-1]
    clean = head_logits(out, mask)
    assert clean.shape == (len(data), 4)

    def forward_fn(perturbed):
        with site.inject(perturbed):
            return head_logits(model(**inputs), mask)

    assert torch.equal(forward_fn(site.output), clean)  # δ = 0 changes nothing
    cfg = AlumConfig.from_preset("relative", epsilon=1.0, step_size=1.0)
    adv, stats = adversarial_loss(forward_fn, site.output, clean, cfg, mask=mask)
    assert adv.item() > 0 and not stats.skipped
    model.zero_grad()
    adv.backward()
    grads = [p.grad for n, p in model.named_parameters() if "encoder" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
