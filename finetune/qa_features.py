"""Turn QA examples into model features: question + context windows with a doc stride.

A context longer than ``max_length`` is split into overlapping windows (``doc_stride``
tokens of overlap, HF's ``return_overflowing_tokens``); every window is one feature.
Training features carry ``start_positions``/``end_positions`` (token indices); a window
that does not contain the whole answer, and every unanswerable question, points at the
CLS token, which is how SQuAD 2.0 models learn to abstain (Devlin et al., 2019, §4.3).
Evaluation features keep the character offsets of their context tokens so that the
postprocessing can map a token span back to text.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Tuple

from .qa_data import QAExample
from .task_data import TaskDataError

MODEL_KEYS = ("input_ids", "attention_mask", "token_type_ids")


@dataclass
class QAFeatures:
    """Tokenized windows; ``columns`` feeds ``datasets.Dataset.from_dict``."""

    columns: dict
    example_index: List[int]
    """Index into the examples list of each feature's question."""
    offsets: List[List[Optional[Tuple[int, int]]]]
    """Per feature and token: the (start, end) characters in the context, None outside it."""
    cls_index: List[int]

    def __len__(self) -> int:
        return len(self.example_index)


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "is_fast", False):
        raise TaskDataError("extractive QA needs a fast (Rust) tokenizer for the character "
                            "offsets; the model directory has a slow one only")
    if tokenizer.padding_side != "right":
        raise TaskDataError("extractive QA features assume right padding "
                            f"(tokenizer.padding_side is {tokenizer.padding_side!r})")


def build_qa_features(examples: List[QAExample], tokenizer: Any, max_length: int = 384,
                      doc_stride: int = 128, max_query_length: int = 64,
                      with_positions: bool = True) -> QAFeatures:
    """Features for training (``with_positions``) or evaluation (offsets kept either way).

    ``doc_stride`` is the overlap between consecutive windows in tokens; the question is
    truncated to ``max_query_length`` tokens first so that it cannot crowd out the context.
    """
    _check_tokenizer(tokenizer)
    if doc_stride >= max_length // 2:
        raise TaskDataError(f"--doc-stride {doc_stride} must be below half of --max-length "
                            f"{max_length}: windows would not advance through the context")
    questions = []
    for ex in examples:
        # Leading spaces would become tokens of their own for byte-level BPE (RoBERTa).
        q = ex.question.lstrip()
        ids = tokenizer(q, add_special_tokens=False)["input_ids"]
        if len(ids) > max_query_length:
            q = tokenizer.decode(ids[:max_query_length])
        questions.append(q)
    enc = tokenizer(questions, [ex.context for ex in examples], truncation="only_second",
                    max_length=max_length, stride=doc_stride, return_overflowing_tokens=True,
                    return_offsets_mapping=True, padding=False)
    columns: dict = {k: [] for k in MODEL_KEYS if k in enc}
    if with_positions:
        columns["start_positions"], columns["end_positions"] = [], []
    example_index, offsets, cls_index = [], [], []
    for i in range(len(enc["input_ids"])):
        ex_i = enc["overflow_to_sample_mapping"][i]
        ids = enc["input_ids"][i]
        seq = enc.sequence_ids(i)
        cls = ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in ids else 0
        context_offsets = [tuple(o) if s == 1 else None
                           for o, s in zip(enc["offset_mapping"][i], seq)]
        for k in columns:
            if k in MODEL_KEYS:
                columns[k].append(enc[k][i])
        if with_positions:
            start, end = _token_span(examples[ex_i], context_offsets, cls)
            columns["start_positions"].append(start)
            columns["end_positions"].append(end)
        example_index.append(ex_i)
        offsets.append(context_offsets)
        cls_index.append(cls)
    return QAFeatures(columns, example_index, offsets, cls_index)


def _token_span(ex: QAExample, offsets: List[Optional[Tuple[int, int]]],
                cls: int) -> Tuple[int, int]:
    """Token indices of the first answer in this window, or (cls, cls)."""
    if ex.is_impossible or not ex.answers or not ex.aligned:
        return cls, cls
    start_char = ex.answer_starts[0]
    end_char = start_char + len(ex.answers[0])
    inside = [i for i, o in enumerate(offsets) if o is not None]
    if not inside or offsets[inside[0]][0] > start_char or offsets[inside[-1]][1] < end_char:
        return cls, cls  # the answer is not (wholly) in this window
    start = next(i for i in inside if offsets[i][1] > start_char)
    end = next(i for i in reversed(inside) if offsets[i][0] < end_char)
    return start, end


def qa_dataset(features: QAFeatures, with_positions: bool = True):
    """A ``datasets.Dataset`` of the model inputs (and targets when ``with_positions``)."""
    import datasets

    keep = {k: v for k, v in features.columns.items()
            if k in MODEL_KEYS or with_positions}
    return datasets.Dataset.from_dict(keep)
