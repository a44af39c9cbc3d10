"""From start/end logits of the windows back to one text answer per question.

For every window of a question, the ``n_best`` highest start and end logits give
candidate spans; a span is valid when both ends lie in the context, end ≥ start and it
is at most ``max_answer_length`` tokens long. Its score is start + end logit. With
SQuAD 2.0 the null answer scores start + end logit at the CLS token (the minimum over
the question's windows, as in BERT's reference code) and wins when

    null_score − best_span_score > null_score_threshold

(Devlin et al., 2019, §4.3: the threshold is tuned on dev to maximise F1).
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Tuple

import numpy as np

from .qa_data import QAExample
from .qa_features import QAFeatures


def postprocess_qa(examples: Sequence[QAExample], features: QAFeatures,
                   start_logits: Sequence[np.ndarray], end_logits: Sequence[np.ndarray],
                   version_2: bool = False, n_best: int = 20, max_answer_length: int = 30,
                   null_score_threshold: float = 0.0) -> Tuple[Dict[str, str], Dict[str, float]]:
    """Returns (question id -> predicted text, question id -> null score − best span score).

    ``start_logits[i]``/``end_logits[i]`` belong to feature i; they may be longer than the
    feature (batch padding): positions past its tokens are ignored. A question with no
    valid span gets ``""``.
    """
    by_example: Dict[int, List[int]] = {}
    for f, e in enumerate(features.example_index):
        by_example.setdefault(e, []).append(f)
    predictions: Dict[str, str] = {}
    null_diff: Dict[str, float] = {}
    for e, example in enumerate(examples):
        best_text, best_score = "", -np.inf
        null_score = np.inf
        for f in by_example.get(e, []):
            offsets = features.offsets[f]
            n = len(offsets)
            s = np.asarray(start_logits[f], dtype=np.float64)[:n]
            t = np.asarray(end_logits[f], dtype=np.float64)[:n]
            cls = features.cls_index[f]
            null_score = min(null_score, s[cls] + t[cls])
            starts = np.argsort(s)[::-1][:n_best]
            ends = np.argsort(t)[::-1][:n_best]
            for i in starts:
                if offsets[i] is None:
                    continue
                for j in ends:
                    if offsets[j] is None or j < i or j - i + 1 > max_answer_length:
                        continue
                    score = s[i] + t[j]
                    if score > best_score:
                        best_score = score
                        best_text = example.context[offsets[i][0]:offsets[j][1]]
        diff = float(null_score - best_score) if np.isfinite(best_score) else float("inf")
        null_diff[example.qid] = diff
        if version_2 and diff > null_score_threshold:
            best_text = ""
        predictions[example.qid] = best_text
    return predictions, null_diff
