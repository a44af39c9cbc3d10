"""Read extractive-QA files in the official SQuAD JSON format (v1.1 and v2.0).

The layout is ``{"version": ..., "data": [{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}``.
v2.0 adds ``is_impossible`` (with empty ``answers`` and ``plausible_answers``);
Adversarial SQuAD (AddSent/AddOneSent) uses the v1.1 layout unchanged, so it reads
here too. Errors name the file and the JSON path of the offending field
(``data[3].paragraphs[0].qas[7].answers[0].answer_start``) and the question id.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from .task_data import TaskDataError

logger = logging.getLogger("alum.finetune")


@dataclass
class QAExample:
    """One question about one context."""

    qid: str
    question: str
    context: str
    answers: List[str]
    """Gold answer texts (all of them, as the official evaluation takes the max over them)."""
    answer_starts: List[int]
    """Character offsets of ``answers`` in ``context``."""
    is_impossible: bool = False
    title: str = ""
    aligned: bool = True
    """False when the first answer's text is not at its ``answer_start``: then it is no
    training target (a wrong span would teach the model a wrong answer)."""

    @property
    def answer_start(self) -> Optional[int]:
        return self.answer_starts[0] if self.answer_starts else None


@dataclass
class QAData:
    examples: List[QAExample]
    source: str
    version_2: bool
    num_misaligned: int = 0
    """Answers whose ``text`` is not at ``answer_start`` in the context (left out of the
    training targets; kept for evaluation, which compares texts only)."""
    version: str = ""
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_impossible(self) -> int:
        return sum(ex.is_impossible for ex in self.examples)


def _expect(value: Any, kind: type, where: str, path: str, what: str) -> Any:
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        got = "missing" if value is None else type(value).__name__
        raise TaskDataError(f"{path}: {where}: expected {what}, got {got}")
    return value


def load_squad_file(path: str | os.PathLike, *, version_2: bool = False,
                    max_examples: Optional[int] = None,
                    encoding_errors: str = "strict") -> QAData:
    """Read one SQuAD-format JSON file.

    Args:
        path: a ``.json`` file in the official layout.
        version_2: the task allows unanswerable questions (SQuAD 2.0). A file with
            ``is_impossible: true`` questions is refused without it, since a v1.1 model
            has no way to abstain and its metrics would silently be wrong.
        max_examples: keep the first N questions.
        encoding_errors: ``strict`` or ``replace`` for invalid UTF-8.

    Raises:
        TaskDataError naming the file and the JSON path of any malformed field.
    """
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise TaskDataError(f"QA file not found: {source!r}")
    try:
        with open(source, encoding="utf-8-sig", errors=encoding_errors) as fh:
            raw = json.load(fh)
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{source!r} is not valid UTF-8 text ({err.reason} at byte "
                            f"{err.start}); pass --encoding-errors replace") from None
    except json.JSONDecodeError as err:
        raise TaskDataError(f"malformed JSON in {source}, line {err.lineno}, column "
                            f"{err.colno}: {err.msg}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise TaskDataError(f"{source}: not a SQuAD file: expected an object with a 'data' "
                            f"list (data -> paragraphs -> qas)")
    examples: List[QAExample] = []
    misaligned = 0
    seen: set = set()
    for a, article in enumerate(raw["data"]):
        at = f"data[{a}]"
        _expect(article, dict, at, source, "an object")
        title = article.get("title", "") or ""
        for p, paragraph in enumerate(_expect(article.get("paragraphs"), list,
                                              f"{at}.paragraphs", source, "a list")):
            pt = f"{at}.paragraphs[{p}]"
            _expect(paragraph, dict, pt, source, "an object")
            context = _expect(paragraph.get("context"), str, f"{pt}.context", source, "text")
            for q, qa in enumerate(_expect(paragraph.get("qas"), list, f"{pt}.qas", source,
                                           "a list")):
                if max_examples is not None and len(examples) >= max_examples:
                    break
                example, bad = _read_question(qa, f"{pt}.qas[{q}]", source, context, title,
                                              version_2)
                if example.qid in seen:
                    raise TaskDataError(f"{source}: {pt}.qas[{q}].id: duplicate question id "
                                        f"{example.qid!r}")
                seen.add(example.qid)
                misaligned += bad
                examples.append(example)
    if not examples:
        raise TaskDataError(f"{source}: no questions found")
    if misaligned:
        logger.warning("%s: %d answer(s) do not match the context at their answer_start; "
                       "they are not used as training targets", source, misaligned)
    return QAData(examples, source, version_2, misaligned, str(raw.get("version", "")))


def _read_question(qa: Any, at: str, source: str, context: str, title: str,
                   version_2: bool) -> tuple:
    _expect(qa, dict, at, source, "an object")
    qid = qa.get("id")
    if isinstance(qid, int) and not isinstance(qid, bool):
        qid = str(qid)
    qid = _expect(qid, str, f"{at}.id", source, "a question id")
    where = f"{at} (id {qid!r})"
    question = _expect(qa.get("question"), str, f"{where}.question", source, "text")
    if not question.strip():
        raise TaskDataError(f"{source}: {where}.question: empty question")
    impossible = qa.get("is_impossible", False)
    _expect(impossible, bool, f"{where}.is_impossible", source, "true or false")
    if impossible and not version_2:
        raise TaskDataError(
            f"{source}: {where} is unanswerable (is_impossible: true), which SQuAD v1.1 "
            f"does not allow; pass --squad-v2 to train/evaluate with no-answer predictions")
    answers = _expect(qa.get("answers", []), list, f"{where}.answers", source, "a list")
    texts: List[str] = []
    starts: List[int] = []
    if not impossible:
        if not answers:
            raise TaskDataError(f"{source}: {where}.answers: an answerable question needs at "
                                f"least one answer")
        for i, ans in enumerate(answers):
            aw = f"{where}.answers[{i}]"
            _expect(ans, dict, aw, source, "an object")
            text = _expect(ans.get("text"), str, f"{aw}.text", source, "text")
            start = _expect(ans.get("answer_start"), int, f"{aw}.answer_start", source,
                            "a character offset (integer)")
            if not 0 <= start <= len(context):
                raise TaskDataError(f"{source}: {aw}.answer_start: {start} is outside the "
                                    f"context ({len(context)} characters)")
            texts.append(text)
            starts.append(start)
    # Only the first answer becomes a training target (as in the official training files,
    # which carry one); the others matter for evaluation, which compares texts.
    aligned = not texts or context[starts[0]:starts[0] + len(texts[0])] == texts[0]
    example = QAExample(qid, question, context, texts, starts, bool(impossible), title, aligned)
    return example, int(not aligned)
