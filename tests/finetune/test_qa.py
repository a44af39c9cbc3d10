"""Extractive QA: SQuAD reading, features with doc stride, postprocessing, official EM/F1,
and ALUM's start+end term."""
import json
import os

import numpy as np
import pytest
import torch
from transformers import AutoModelForQuestionAnswering, AutoTokenizer

from alum import AlumConfig, adversarial_loss
from alum.finetune.embedding_site import EmbeddingSite
from alum.finetune.qa_data import QAExample, load_squad_file
from alum.finetune.qa_features import build_qa_features
from alum.finetune.qa_metrics import (exact_match, f1_score, normalize_answer,
                                      squad_scores)
from alum.finetune.qa_postprocess import postprocess_qa
from alum.finetune.task_data import TaskDataError
from alum.finetune.trainer import MASKED_LOGIT, embedding_mask, head_logits

from .conftest import FIXTURES


def _independent_parse(path):
    """Walk the official layout by hand: id -> (question, context, texts, starts, impossible)."""
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    out = {}
    for article in raw["data"]:
        for para in article["paragraphs"]:
            for qa in para["qas"]:
                out[qa["id"]] = (qa["question"], para["context"],
                                 [a["text"] for a in qa["answers"]],
                                 [a["answer_start"] for a in qa["answers"]],
                                 qa.get("is_impossible", False))
    return out


@pytest.mark.parametrize("name,v2", [("squad_v1_train.json", False), ("squad_v1_dev.json", False),
                                     ("squad_v2_train.json", True), ("squad_v2_dev.json", True),
                                     ("adversarial_squad_dev.json", False)])
def test_reads_the_official_format(name, v2):
    path = os.path.join(FIXTURES, name)
    data = load_squad_file(path, version_2=v2)
    expected = _independent_parse(path)
    assert [ex.qid for ex in data.examples] == list(expected)
    for ex in data.examples:
        assert (ex.question, ex.context, ex.answers, ex.answer_starts, ex.is_impossible) \
            == expected[ex.qid]
        for text, start in zip(ex.answers, ex.answer_starts):
            assert ex.context[start:start + len(text)] == text
    assert data.num_misaligned == 0
    assert (data.num_impossible > 0) == v2


def test_v2_file_needs_the_v2_flag_and_errors_name_the_field(tmp_path):
    with pytest.raises(TaskDataError, match=r"qas\[5\].*--squad-v2"):
        load_squad_file(os.path.join(FIXTURES, "squad_v2_dev.json"))
    bad = {"data": [{"title": "t", "paragraphs": [{"context": "abc", "qas": [
        {"id": "q1", "question": "what?", "answers": [{"text": "b", "answer_start": "1"}]}]}]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(TaskDataError, match=r"bad.json: data\[0\]\.paragraphs\[0\]\.qas\[0\] "
                                            r"\(id 'q1'\)\.answers\[0\]\.answer_start"):
        load_squad_file(path)
    path.write_text('{"data": [\n  {"title": }\n]}')
    with pytest.raises(TaskDataError, match="line 2"):
        load_squad_file(path)


def test_official_normalisation_and_scores_by_hand():
    assert normalize_answer("The  Cat, sat!") == "cat sat"
    assert normalize_answer("an Apple a day") == "apple day"
    assert exact_match("the Eiffel Tower.", "Eiffel tower") == 1
    # pred tokens [big, red, dog], gold [red, dog, barked]: P = R = 2/3, F1 = 2/3
    assert f1_score("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert f1_score("", "") == 1.0 and f1_score("x", "") == 0.0 and f1_score("", "x") == 0.0
    refs = {"q1": ["Paris", "the city of Paris"],   # pred "city of Paris": EM 1 (2nd gold)
            "q2": ["red dog barked"],               # pred "big red dog": EM 0, F1 2/3
            "q3": [],                               # unanswerable, pred "": EM 1, F1 1
            "q4": [],                               # unanswerable, pred "Paris": 0, 0
            "q5": ["blue whale"]}                   # no prediction: 0, 0
    preds = {"q1": "city of Paris", "q2": "big red dog", "q3": "", "q4": "Paris"}
    s = squad_scores(preds, refs)
    assert s["exact_match"] == pytest.approx(100 * 2 / 5)
    assert s["f1"] == pytest.approx(100 * (1 + 2 / 3 + 1 + 0 + 0) / 5)
    assert s["has_ans_exact_match"] == pytest.approx(100 / 3)
    assert s["has_ans_f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)
    assert s["no_ans_exact_match"] == 50.0 and s["no_ans_f1"] == 50.0
    assert s["missing"] == 1.0 and s["total"] == 5.0
    # A gold answer that normalises to nothing counts as no answer (v2.0 script).
    assert squad_scores({"q": ""}, {"q": ["the"]})["exact_match"] == 100.0


def test_features_with_doc_stride_point_at_the_answer(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    data = load_squad_file(os.path.join(FIXTURES, "squad_v2_train.json"), version_2=True)
    feats = build_qa_features(data.examples, tok, max_length=48, doc_stride=12)
    assert len(feats) > len(data.examples)  # long contexts were split into windows
    seen_answer = set()
    for f, e in enumerate(feats.example_index):
        ex = data.examples[e]
        s, t = feats.columns["start_positions"][f], feats.columns["end_positions"][f]
        cls = feats.cls_index[f]
        if ex.is_impossible:
            assert (s, t) == (cls, cls)
            continue
        if (s, t) == (cls, cls):
            continue  # the answer is not wholly in this window
        text = ex.context[feats.offsets[f][s][0]:feats.offsets[f][t][1]]
        assert text == ex.answers[0]
        seen_answer.add(ex.qid)
    answerable = {ex.qid for ex in data.examples if not ex.is_impossible}
    assert seen_answer == answerable  # every answer lies wholly in some window


def test_postprocess_picks_best_valid_span_and_null_threshold(tiny_bert_dir):
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    context = "the lamp burned whale oil until kerosene came"
    ex = QAExample("q", "what did it burn?", context, ["whale oil"],
                   [context.index("whale oil")])
    feats = build_qa_features([ex], tok, max_length=64, doc_stride=16)
    offsets = feats.offsets[0]
    idx = [i for i, o in enumerate(offsets) if o is not None]
    # The answer's first and last tokens (the tiny vocabulary may split words into pieces).
    whale = next(i for i in idx if offsets[i][0] == context.index("whale"))
    oil = next(i for i in idx if offsets[i][1] == context.index("oil") + 3)
    n = len(offsets)
    start, end = np.zeros(n), np.zeros(n)
    start[whale], end[oil] = 5.0, 4.0
    end[whale - 1] = 9.0  # a higher end before the start: not a valid span
    start[0] = end[0] = 4.0  # null score 8 at CLS; best span 9
    preds, diff = postprocess_qa([ex], feats, [start], [end], version_2=True)
    assert preds == {"q": "whale oil"} and diff["q"] == pytest.approx(8.0 - 9.0)
    preds, _ = postprocess_qa([ex], feats, [start], [end], version_2=True,
                              null_score_threshold=-2.0)
    assert preds == {"q": ""}  # null − best = −1 > −2
    preds, _ = postprocess_qa([ex], feats, [start], [end], version_2=False,
                              null_score_threshold=-2.0)
    assert preds == {"q": "whale oil"}  # v1.1 never abstains
    preds, _ = postprocess_qa([ex], feats, [start], [end], max_answer_length=1)
    assert preds["q"] != "whale oil"  # two tokens are too long


def test_alum_term_over_start_and_end_sends_gradient_to_the_encoder(tiny_bert_dir):
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModelForQuestionAnswering.from_pretrained(tiny_bert_dir)
    model.eval()  # dropout off: the δ = 0 check below is exact
    batch = dict(tok(["who built it?", "when?"], ["engineers built it in 1871", "in 1871"],
                     padding=True, return_tensors="pt"))
    site = EmbeddingSite(model)
    with site.capture():
        out = model(**batch)
    mask = embedding_mask(batch["attention_mask"], site.output)
    clean = head_logits(out, mask)
    assert isinstance(clean, tuple) and len(clean) == 2
    assert (clean[0][batch["attention_mask"] == 0] == MASKED_LOGIT).all()

    def forward_fn(perturbed):
        with site.inject(perturbed):
            return head_logits(model(**batch), mask)

    zero = forward_fn(site.output)
    assert torch.equal(zero[0], clean[0]) and torch.equal(zero[1], clean[1])
    model.zero_grad()
    adv, stats = adversarial_loss(forward_fn, site.output, clean,
                                  AlumConfig.from_preset("relative"), mask=mask)
    assert adv.item() > 0 and not stats.skipped
    adv.backward()
    grads = [p.grad for n, p in model.named_parameters() if "encoder" in n]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)
    assert model.qa_outputs.weight.grad.abs().sum() > 0
