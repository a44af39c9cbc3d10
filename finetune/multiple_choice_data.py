"""Read multiple-choice files: SWAG (official CSV) and HellaSwag (official jsonl).

SWAG (``swagaf/data/{train,val,test}.csv``): a leading unnamed index column, then
``video-id, fold-ind, startphrase, sent1, sent2, gold-source, ending0..ending3, label``
(``label`` absent from test.csv). Each choice is the pair ``(sent1, sent2 + " " + ending)``,
as in the SWAG paper's BERT baseline and HF's ``run_swag``.

HellaSwag (``hellaswag_{train,val,test}.jsonl``): objects with ``ctx_a``, ``ctx_b``
(``ctx`` = both), ``endings`` (4) and ``label``. Each choice is
``(ctx_a, ctx_b.capitalize() + " " + ending)``: ``ctx_b`` is the lower-cased start of
the sentence that the ending completes. Files with only ``ctx`` use ``(ctx, ending)``.

Errors name the file, the line and the field.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from typing import List, Optional

from .task_data import TaskDataError

MC_FORMATS = ("swag", "hellaswag")
SWAG_ENDINGS = tuple(f"ending{i}" for i in range(4))


@dataclass
class MCExample:
    uid: str
    context: str
    """The first segment, shared by every choice."""
    choices: List[str]
    """The second segment of each choice (the question/sentence start plus the ending)."""
    label: Optional[int]
    line: int = 0


@dataclass
class MCData:
    examples: List[MCExample]
    source: str
    fmt: str

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def num_choices(self) -> int:
        return len(self.examples[0].choices)

    @property
    def labels(self) -> List[int]:
        return [ex.label for ex in self.examples]


def detect_mc_format(path: str) -> str:
    name = path.lower()
    if name.endswith(".csv"):
        return "swag"
    if name.endswith((".jsonl", ".json")):
        return "hellaswag"
    raise TaskDataError(f"cannot tell the multiple-choice format of {path!r} from its "
                        f"extension: SWAG is .csv, HellaSwag .jsonl; pass --mc-format")


def load_multiple_choice_file(path: str | os.PathLike, fmt: str = "auto",
                              max_examples: Optional[int] = None, require_labels: bool = True,
                              encoding_errors: str = "strict") -> MCData:
    """Read a SWAG CSV or HellaSwag jsonl file; every example must have the same number
    of choices, and a label (unless ``require_labels`` is False, e.g. test files)."""
    source = os.fspath(path)
    if not os.path.isfile(source):
        raise TaskDataError(f"multiple-choice file not found: {source!r}")
    fmt = detect_mc_format(source) if fmt == "auto" else fmt
    if fmt not in MC_FORMATS:
        raise TaskDataError(f"unknown multiple-choice format {fmt!r}; known: {MC_FORMATS}")
    try:
        with open(source, encoding="utf-8-sig", errors=encoding_errors, newline="") as fh:
            reader = _read_swag if fmt == "swag" else _read_hellaswag
            examples = reader(fh, source, max_examples, require_labels)
    except UnicodeDecodeError as err:
        raise TaskDataError(f"{source!r} is not valid UTF-8 text ({err.reason} at byte "
                            f"{err.start}); pass --encoding-errors replace") from None
    if not examples:
        raise TaskDataError(f"{source}: no examples found")
    n = len(examples[0].choices)
    for ex in examples:
        if len(ex.choices) != n:
            raise TaskDataError(f"{source}, line {ex.line}: {len(ex.choices)} choices where "
                                f"the first example has {n}")
    return MCData(examples, source, fmt)


def _label(value, n: int, where: str, require: bool) -> Optional[int]:
    if value is None or value == "":
        if require:
            raise TaskDataError(f"{where}: missing label")
        return None
    try:
        label = int(str(value).strip()) if not isinstance(value, bool) else None
    except ValueError:
        label = None
    if label is None or not 0 <= label < n:
        raise TaskDataError(f"{where}: label {value!r} is not a choice index 0..{n - 1}")
    return label


def _text(value, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaskDataError(f"{where}: {'missing' if value is None else 'empty'} text")
    return value.strip()


def _read_swag(fh, source: str, max_examples: Optional[int],
               require_labels: bool) -> List[MCExample]:
    reader = csv.DictReader(fh)
    columns = reader.fieldnames or []
    needed = ["sent1", "sent2", *SWAG_ENDINGS] + (["label"] if require_labels else [])
    missing = [c for c in needed if c not in columns]
    if missing:
        raise TaskDataError(f"{source}: not a SWAG CSV: missing column(s) {missing}; "
                            f"columns are {columns}")
    examples = []
    start = reader.line_num + 1
    for row in reader:
        line, start = start, reader.line_num + 1
        if max_examples is not None and len(examples) >= max_examples:
            break
        where = f"{source}, line {line}"
        context = _text(row.get("sent1"), f"{where}, column 'sent1'")
        header = (row.get("sent2") or "").strip()
        choices = [f"{header} {_text(row.get(c), f'{where}, column {c!r}')}".strip()
                   for c in SWAG_ENDINGS]
        label = _label(row.get("label"), len(choices), f"{where}, column 'label'",
                       require_labels)
        uid = row.get("video-id") or str(len(examples))
        examples.append(MCExample(f"{uid}:{row.get('fold-ind', '')}", context, choices,
                                  label, line))
    return examples


def _read_hellaswag(fh, source: str, max_examples: Optional[int],
                    require_labels: bool) -> List[MCExample]:
    examples = []
    for number, raw in enumerate(fh, start=1):
        if not raw.strip():
            continue
        if max_examples is not None and len(examples) >= max_examples:
            break
        where = f"{source}, line {number}"
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as err:
            raise TaskDataError(f"malformed JSON in {where}: {err.msg} (column "
                                f"{err.colno})") from None
        if not isinstance(record, dict):
            raise TaskDataError(f"{where}: expected a JSON object")
        endings = record.get("endings")
        if not isinstance(endings, list) or not endings:
            raise TaskDataError(f"{where}, field 'endings': expected a list of endings")
        endings = [_text(e, f"{where}, field 'endings[{i}]'") for i, e in enumerate(endings)]
        if record.get("ctx_a"):
            context = _text(record["ctx_a"], f"{where}, field 'ctx_a'")
            lead = (record.get("ctx_b") or "").strip()
            lead = lead[:1].upper() + lead[1:]
            choices = [f"{lead} {e}".strip() for e in endings]
        else:
            context = _text(record.get("ctx"), f"{where}, field 'ctx' (or 'ctx_a')")
            choices = endings
        label = _label(record.get("label"), len(choices), f"{where}, field 'label'",
                       require_labels)
        uid = str(record.get("ind", len(examples)))
        examples.append(MCExample(uid, context, choices, label, number))
    return examples


def build_mc_dataset(data: MCData, tokenizer, max_length: int, with_labels: bool = True):
    """``[num_choices, T]`` token lists per example (padding is left to the collator)."""
    import datasets

    n = data.num_choices
    firsts = [ex.context for ex in data.examples for _ in range(n)]
    seconds = [c for ex in data.examples for c in ex.choices]
    enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
    columns = {k: [v[i:i + n] for i in range(0, len(v), n)] for k, v in enc.items()}
    if with_labels:
        if any(label is None for label in data.labels):
            raise TaskDataError(f"{data.source}: some examples have no label")
        columns["labels"] = data.labels
    return datasets.Dataset.from_dict(columns)


def mc_collator(tokenizer):
    from transformers import DataCollatorForMultipleChoice

    return DataCollatorForMultipleChoice(tokenizer)
