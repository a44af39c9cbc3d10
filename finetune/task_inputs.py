"""Turns read task examples into tokenized model inputs (``datasets`` + HF tokenizers)."""
from __future__ import annotations

from typing import Any

from .task_data import TaskData


def build_dataset(data: TaskData, tokenizer: Any, max_length: int):
    """A ``datasets.Dataset`` with input ids, attention mask (token types) and ``labels``.

    Padding is left to the collator so each batch pads only to its longest example.
    """
    import datasets

    columns = {"text": data.texts, "labels": data.labels}
    if data.text_pairs is not None:
        columns["text_pair"] = data.text_pairs
    raw = datasets.Dataset.from_dict(columns)
    if data.task == "regression":
        raw = raw.cast_column("labels", datasets.Value("float32"))

    def tokenize(batch):
        return tokenizer(batch["text"], batch.get("text_pair"), truncation=True,
                         max_length=max_length)

    drop = [c for c in raw.column_names if c != "labels"]
    return raw.map(tokenize, batched=True, remove_columns=drop,
                   desc=f"tokenizing {data.source}", keep_in_memory=True)


def build_collator(tokenizer: Any):
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer)
