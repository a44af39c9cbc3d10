"""Read fine-tuning train/eval files in the formats people actually have.

Supported formats (``fmt``; ``"auto"`` picks one from the file extension):

- ``"tsv"``: GLUE-style tab-separated files. Quote characters are *data*, not
  quoting (MNLI sentences contain unbalanced ``"``), so no quote processing is
  done. With a header row, fields are named; without one (CoLA), pass
  ``no_header=True`` and give fields as 0-based column indices.
- ``"csv"``: comma-separated with standard (RFC 4180) quoting; a header row
  unless ``no_header=True``.
- ``"jsonl"``: one JSON object per line (MNLI/ANLI style). A ``.json`` file
  holding one JSON array of objects is read too.
- ``"parquet"``: columnar files; positions are reported as rows, not lines.

``.gz`` variants of all text formats are read transparently.

Parsing is done by the ``datasets`` library (pandas for CSV/TSV, Arrow for
JSON and parquet). This module adds what those loaders do not give: every
column read as a string (so ``007`` stays ``007``), label normalisation and
label-list handling, and errors that name the file, the line and the column.
"""
from __future__ import annotations

import contextlib
import csv
import gzip
import io
import json
import math
import os
import re
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

FORMATS = ("tsv", "csv", "jsonl", "parquet")
TASKS = ("classification", "regression")

# Extension -> format; checked after stripping a trailing ".gz".
_EXTENSIONS = {
    ".tsv": "tsv", ".csv": "csv", ".jsonl": "jsonl", ".json": "jsonl",
    ".ndjson": "jsonl", ".parquet": "parquet",
}
_INT_RE = re.compile(r"^[+-]?\d+$")


class TaskDataError(ValueError):
    """A task file is missing, malformed, or inconsistent with what was asked."""


@dataclass
class TaskData:
    """Examples read from one file.

    ``labels`` holds class indices into ``label_list`` for classification and
    floats for regression (where ``label_list`` is None). ``num_ignored`` counts
    rows dropped because their label was in ``ignore_labels``.
    """

    texts: list[str]
    text_pairs: list[str] | None
    labels: list[int] | list[float]
    label_list: list[str] | None
    source: str
    task: str = "classification"
    fmt: str = "tsv"
    num_ignored: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def num_labels(self) -> int:
        """Number of classes (1 for regression, as HF models expect)."""
        return len(self.label_list) if self.label_list is not None else 1


def detect_format(path: str | os.PathLike) -> str:
    """Return the format implied by ``path``'s extension (``.gz`` allowed)."""
    name = os.fspath(path).lower()
    if name.endswith(".gz"):
        name = name[:-3]
    ext = os.path.splitext(name)[1]
    if ext not in _EXTENSIONS:
        raise TaskDataError(
            f"cannot tell the format of {os.fspath(path)!r} from its extension "
            f"{ext or '(none)'!r}; known extensions: {', '.join(sorted(_EXTENSIONS))} "
            f"(optionally .gz); pass fmt= one of {', '.join(FORMATS)}")
    return _EXTENSIONS[ext]


def build_label_list(values: Sequence[str]) -> list[str]:
    """Sorted unique label names; integer-looking names sort numerically.

    Integer-looking names come first (``"2" < "10"``), then the others in
    string order, so a mixed set still has one deterministic order.
    """
    def key(name: str):
        return (0, int(name), "") if _INT_RE.match(name) else (1, 0, name)
    return sorted(set(values), key=key)


def normalize_label(value: Any) -> str | None:
    """String form of a classification label; None when the label is missing.

    JSON booleans become ``"true"``/``"false"`` (their spelling in the file);
    integral floats become integers (``1.0`` -> ``"1"``) because Arrow widens a
    JSON column of ints to floats as soon as one float appears; strings are
    stripped of surrounding whitespace (stray ``\\r`` from CRLF files).
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == int(value):
            return str(int(value))
        return repr(value)
    if isinstance(value, str):
        value = value.strip()
        return value or None
    raise TypeError(f"unsupported label value {value!r} of type {type(value).__name__}")


def load_task_file(
    path: str | os.PathLike,
    *,
    text_field: str | int,
    text_pair_field: str | int | None = None,
    label_field: str | int,
    task: str = "classification",
    label_list: Sequence[str] | None = None,
    ignore_labels: Sequence[Any] = (),
    fmt: str = "auto",
    no_header: bool = False,
    max_examples: int | None = None,
    encoding: str = "utf-8",
    encoding_errors: str = "strict",
    cache_dir: str | None = None,
) -> TaskData:
    """Read one train or eval file into a :class:`TaskData`.

    Args:
        path: the file (.tsv, .csv, .jsonl/.json, .parquet, or .gz of a text format).
        text_field, text_pair_field, label_field: column names, or 0-based
            column indices (ints or digit strings) when ``no_header=True``.
        task: ``"classification"`` (labels become indices into ``label_list``)
            or ``"regression"`` (labels become floats).
        label_list: class names in index order. None builds it from this
            file (see :func:`build_label_list`); pass the train file's list
            when loading eval so indices agree. A label outside it is an error.
        ignore_labels: rows whose label is one of these are dropped (MNLI's
            ``"-"``); compared in normalised string form.
        fmt: ``"auto"`` (from the extension) or one of :data:`FORMATS`.
        no_header: the TSV/CSV file has no header row (CoLA).
        max_examples: keep at most this many examples (after dropping
            ignored rows); None keeps all.
        encoding, encoding_errors: how text files are decoded; use
            ``encoding_errors="replace"`` for files with stray invalid bytes.
        cache_dir: where ``datasets`` writes its Arrow cache (default: its own).

    Raises:
        TaskDataError: missing file, unreadable/malformed file, missing column,
            empty text, missing or unknown label, non-numeric regression label.
            Messages name the file and, for row problems, the 1-based line in
            the file (counting the header line).
    """
    source = os.fspath(path)
    if task not in TASKS:
        raise TaskDataError(f"task must be one of {TASKS}, got {task!r}")
    if not os.path.exists(source):
        raise TaskDataError(f"task file not found: {source!r}")
    if not os.path.isfile(source):
        raise TaskDataError(f"task file is not a regular file: {source!r}")
    fmt = detect_format(source) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise TaskDataError(f"fmt must be 'auto' or one of {FORMATS}, got {fmt!r}")
    if no_header and fmt not in ("tsv", "csv"):
        raise TaskDataError(f"no_header applies to tsv/csv files only, not {fmt} ({source!r})")
    if max_examples is not None and max_examples < 0:
        raise TaskDataError(f"max_examples must be >= 0, got {max_examples}")
    if label_list is not None:
        label_list = [str(name) for name in label_list]
        if len(set(label_list)) != len(label_list):
            raise TaskDataError(f"label_list has duplicate names: {label_list}")
        if task == "regression":
            raise TaskDataError("label_list is for classification; regression labels are numbers")

    reader = _FileReader(source, fmt, no_header, encoding, encoding_errors, cache_dir)
    text_col = reader.resolve(text_field, "text_field")
    pair_col = reader.resolve(text_pair_field, "text_pair_field") if text_pair_field is not None else None
    label_col = reader.resolve(label_field, "label_field")

    data = reader.dataset
    raw_texts = data[text_col]
    raw_pairs = data[pair_col] if pair_col is not None else None
    raw_labels = data[label_col]
    ignored = {normalize_label(v) for v in ignore_labels}

    texts: list[str] = []
    pairs: list[str] | None = [] if pair_col is not None else None
    label_names: list[str] = []        # classification: names, mapped to ids below
    label_rows: list[int] = []         # row index of each kept example, for errors
    values: list[float] = []           # regression
    num_ignored = 0
    for row in range(len(raw_labels)):
        if max_examples is not None and len(texts) >= max_examples:
            break
        name = _label_or_error(raw_labels[row], reader, row, label_col)
        if name in ignored:
            num_ignored += 1
            continue
        texts.append(_text_or_error(raw_texts[row], reader, row, text_col))
        if pairs is not None:
            pairs.append(_text_or_error(raw_pairs[row], reader, row, pair_col))
        if task == "regression":
            values.append(_number_or_error(name, reader, row, label_col))
        else:
            label_names.append(name)
            label_rows.append(row)

    if task == "regression":
        return TaskData(texts, pairs, values, None, source, task, fmt, num_ignored)

    if label_list is None:
        label_list = build_label_list(label_names)
    index = {name: i for i, name in enumerate(label_list)}
    labels: list[int] = []
    for name, row in zip(label_names, label_rows):
        if name not in index:
            raise TaskDataError(
                f"unknown label {name!r} in column {label_col!r} at {reader.where(row)}; "
                f"known labels: {label_list}")
        labels.append(index[name])
    return TaskData(texts, pairs, labels, list(label_list), source, task, fmt, num_ignored)


# --------------------------------------------------------------------------
# Per-row checks


def _label_or_error(value: Any, reader: "_FileReader", row: int, column: str) -> str:
    try:
        name = normalize_label(value)
    except TypeError as err:
        raise TaskDataError(f"{err} in column {column!r} at {reader.where(row)}") from None
    if name is None:
        raise TaskDataError(f"missing label in column {column!r} at {reader.where(row)}")
    return name


def _text_or_error(value: Any, reader: "_FileReader", row: int, column: str) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)  # a JSON number used as text
    if not isinstance(value, str) or not value.strip():
        what = "missing" if value is None else "empty" if isinstance(value, str) else "non-text"
        raise TaskDataError(f"{what} text in column {column!r} at {reader.where(row)}")
    return value


def _number_or_error(name: str, reader: "_FileReader", row: int, column: str) -> float:
    try:
        number = float(name)
    except ValueError:
        number = math.nan
    if name in ("true", "false") or not math.isfinite(number):
        raise TaskDataError(
            f"regression label {name!r} in column {column!r} is not a finite number "
            f"at {reader.where(row)}")
    return number


# --------------------------------------------------------------------------
# File access


class _FileReader:
    """Loads one file with `datasets` and maps row indices back to file lines."""

    def __init__(self, path: str, fmt: str, no_header: bool, encoding: str,
                 encoding_errors: str, cache_dir: str | None):
        self.path, self.fmt, self.no_header = path, fmt, no_header
        self.encoding_name = encoding  # as the caller spelled it, for messages
        # utf-8-sig also accepts plain utf-8 and drops a leading byte-order mark.
        self.encoding = "utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding
        self.encoding_errors = encoding_errors
        self.cache_dir = cache_dir
        self._record_lines: list[int] | None = None
        self._header: list[str] | None = None
        if fmt in ("tsv", "csv"):
            self._header = self._first_record()
            if no_header:
                self.columns = [str(i) for i in range(len(self._header))]
            else:
                self.columns = [name.strip() for name in self._header]
                dupes = sorted({c for c in self.columns if self.columns.count(c) > 1})
                if dupes:
                    raise TaskDataError(f"{path!r} has duplicate column names {dupes} in its header")
        self.dataset = self._load()
        if fmt not in ("tsv", "csv"):
            self.columns = list(self.dataset.column_names)

    # -- columns

    def resolve(self, field: str | int, option: str) -> str:
        """The dataset column for a user-given field name or index."""
        if self.no_header:
            if isinstance(field, str) and field.strip().isdigit():
                field = int(field)
            if not isinstance(field, int) or isinstance(field, bool):
                raise TaskDataError(
                    f"{option}={field!r}: {self.path!r} is read with no_header=True, so "
                    f"fields are 0-based column indices (0..{len(self.columns) - 1})")
            if not 0 <= field < len(self.columns):
                raise TaskDataError(
                    f"{option}: column index {field} is out of range for {self.path!r}, "
                    f"which has {len(self.columns)} columns (indices 0..{len(self.columns) - 1})")
            return str(field)
        if not isinstance(field, str) or field not in self.columns:
            raise TaskDataError(
                f"{option}: column {field!r} not found in {self.path!r}; "
                f"available columns: {self.columns}")
        return field

    # -- locations

    def where(self, row: int) -> str:
        """Human-readable position of data row ``row`` (0-based) in the file."""
        if self.fmt == "parquet":
            return f"{self.path}, row {row + 1}"
        lines = self._lines()
        if lines is None:  # layout not line-based (JSON array) or scan disagreed
            return f"{self.path}, record {row + 1}"
        return f"{self.path}, line {lines[row]}"

    def _lines(self) -> list[int] | None:
        """1-based start line of every data record, computed only when needed."""
        if self._record_lines is None:
            lines = list(self._scan_record_lines())
            # A disagreement with the parsed row count means the scan does not
            # model the parser here; better no line number than a wrong one.
            self._record_lines = lines if len(lines) == len(self.dataset) else []
        return self._record_lines or None

    def _scan_record_lines(self) -> Iterator[int]:
        with self._open() as handle:
            if self.fmt == "jsonl":
                for number, line in enumerate(handle, start=1):
                    stripped = line.strip()
                    if number == 1 and stripped.startswith("["):
                        return  # a JSON array, not JSON Lines
                    if stripped:
                        yield number
                return
            reader = csv.reader(handle, **self._dialect())
            end = 0
            first = True
            for record in reader:
                start, end = end + 1, reader.line_num
                if not record:
                    continue  # blank line: skipped by the parser as well
                if first and not self.no_header:
                    first = False
                    continue
                yield start

    # -- reading

    def _open(self) -> io.TextIOBase:
        opener = gzip.open if self.path.lower().endswith(".gz") else open
        try:
            return opener(self.path, "rt", encoding=self.encoding,
                          errors=self.encoding_errors, newline="")
        except OSError as err:
            raise TaskDataError(f"cannot open task file {self.path!r}: {err}") from None

    def _dialect(self) -> dict:
        if self.fmt == "tsv":
            return {"delimiter": "\t", "quoting": csv.QUOTE_NONE}
        return {"delimiter": ",", "quotechar": '"', "doublequote": True}

    def _first_record(self) -> list[str]:
        try:
            with self._open() as handle:
                for record in csv.reader(handle, **self._dialect()):
                    if record:
                        return record
        except UnicodeDecodeError as err:
            raise self._decode_error(err) from None
        except (OSError, csv.Error, EOFError) as err:
            raise TaskDataError(f"cannot read {self.path!r} as {self.fmt}: {err}") from None
        raise TaskDataError(f"task file {self.path!r} is empty")

    def _decode_error(self, err: UnicodeDecodeError) -> TaskDataError:
        return TaskDataError(
            f"{self.path!r} is not valid {self.encoding_name} text ({err.reason} at byte "
            f"{err.start}); pass encoding= or encoding_errors='replace'")

    def _load(self):
        import datasets  # heavy import, deferred until a file is actually read

        kwargs: dict[str, Any] = {}
        if self.fmt in ("tsv", "csv"):
            builder = "csv"
            # Every column as a string, no "NA"/"null" -> NaN conversion: texts
            # like "null" and labels like "007" must survive as written.
            kwargs.update(
                sep="\t" if self.fmt == "tsv" else ",",
                quoting=csv.QUOTE_NONE if self.fmt == "tsv" else csv.QUOTE_MINIMAL,
                column_names=self.columns, header=None if self.no_header else 0,
                keep_default_na=False, na_filter=False,
                features=datasets.Features({c: datasets.Value("string") for c in self.columns}),
                encoding=self.encoding, encoding_errors=self.encoding_errors)
        elif self.fmt == "jsonl":
            builder = "json"
            kwargs.update(encoding=self.encoding, encoding_errors=self.encoding_errors)
        else:
            builder = "parquet"
        try:
            with _quiet_datasets(datasets):
                return datasets.load_dataset(
                    builder, data_files=self.path, split="train", keep_in_memory=True,
                    cache_dir=self.cache_dir, **kwargs)
        except Exception as err:  # datasets wraps parser errors in its own types
            cause = _root_cause(err)
            if isinstance(cause, UnicodeDecodeError):
                raise self._decode_error(cause) from None
            if self.fmt == "jsonl":
                self._raise_json_line_error()
            raise TaskDataError(
                f"cannot read {self.path!r} as {self.fmt}: {type(cause).__name__}: {cause}") from None

    def _raise_json_line_error(self) -> None:
        """Find the first line that is not a JSON object and report it."""
        with self._open() as handle:
            text = handle.read()
        if text.lstrip().startswith("["):
            try:
                json.loads(text)
            except json.JSONDecodeError as err:
                raise TaskDataError(
                    f"malformed JSON in {self.path}, line {err.lineno}: {err.msg}") from None
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise TaskDataError(
                    f"malformed JSON in {self.path}, line {number}: {err.msg} "
                    f"(column {err.colno})") from None
            if not isinstance(record, dict):
                raise TaskDataError(
                    f"malformed JSON Lines in {self.path}, line {number}: expected an "
                    f"object, got {type(record).__name__}")


def _root_cause(err: BaseException) -> BaseException:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


@contextlib.contextmanager
def _quiet_datasets(datasets):
    """Silence datasets' progress bars and its error log (we raise our own)."""
    bars_off = datasets.are_progress_bars_disabled()
    verbosity = datasets.logging.get_verbosity()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    try:
        yield
    finally:
        datasets.logging.set_verbosity(verbosity)
        if not bars_off:
            datasets.enable_progress_bars()
