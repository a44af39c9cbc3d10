"""The official SQuAD metrics: exact match and token F1 (v1.1 and v2.0 scripts).

Definitions follow ``evaluate-v2.0.py`` (which reduces to ``evaluate-v1.1.py`` when
every question has an answer):

* answers are normalised: lower case, punctuation removed, the articles a/an/the
  removed, whitespace collapsed;
* EM and F1 of a prediction are the max over the gold answers;
* a question with no (non-empty) gold answer (v2.0 unanswerable) has the gold
  answer ``""``: it scores 1 for an empty prediction and 0 for anything else;
* totals are percentages (0-100), as the official scripts print them.
"""
from __future__ import annotations

import collections
import re
import string
from typing import Dict, Iterable, List, Mapping

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower text and remove punctuation, articles and extra whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _tokens(text: str) -> List[str]:
    return normalize_answer(text).split() if text else []


def exact_match(prediction: str, gold: str) -> int:
    return int(normalize_answer(prediction) == normalize_answer(gold))


def f1_score(prediction: str, gold: str) -> float:
    pred, ref = _tokens(prediction), _tokens(gold)
    if not pred or not ref:
        # The v2.0 rule: both empty is a match, one empty is not.
        return float(pred == ref)
    common = collections.Counter(pred) & collections.Counter(ref)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def gold_answers(answers: Iterable[str]) -> List[str]:
    """The gold answers that count: non-empty after normalisation, else ``[""]``."""
    kept = [a for a in answers if normalize_answer(a)]
    return kept or [""]


def squad_scores(predictions: Mapping[str, str],
                 references: Mapping[str, List[str]]) -> Dict[str, float]:
    """EM and F1 (percent) over ``references`` (question id -> gold texts, empty = no answer).

    A question without a prediction scores 0 (as in the v1.1 script) and is counted in
    ``missing``. Also reports the answerable / unanswerable breakdown of the v2.0 script.
    """
    if not references:
        raise ValueError("cannot score zero questions")
    em, f1, has, no = {}, {}, [], []
    for qid, answers in references.items():
        golds = gold_answers(answers)
        (has if golds != [""] else no).append(qid)
        if qid not in predictions:
            em[qid], f1[qid] = 0, 0.0
            continue
        pred = predictions[qid]
        em[qid] = max(exact_match(pred, g) for g in golds)
        f1[qid] = max(f1_score(pred, g) for g in golds)
    n = len(references)
    out = {"exact_match": 100.0 * sum(em.values()) / n, "f1": 100.0 * sum(f1.values()) / n,
           "total": float(n), "missing": float(sum(q not in predictions for q in references))}
    for name, ids in (("has_ans", has), ("no_ans", no)):
        if ids:
            out[f"{name}_exact_match"] = 100.0 * sum(em[q] for q in ids) / len(ids)
            out[f"{name}_f1"] = 100.0 * sum(f1[q] for q in ids) / len(ids)
            out[f"{name}_total"] = float(len(ids))
    return out
