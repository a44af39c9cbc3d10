"""Word boundaries read from a tokenizer's own convention, as per-vocabulary tables.

Whole-word masking (BERT's "whole word masking" release; RoBERTa/fairseq's
``--mask-whole-words``) needs to know which sub-word tokens start a word. Each
tokenizer family marks this differently, and looking for "##" only works for
WordPiece:

* WordPiece (BERT): a *continuing* sub-word carries the model's
  ``continuing_subword_prefix`` ("##"); every other token starts a word.
* byte-level BPE (GPT-2/RoBERTa): the pre-tokenizer maps the space before a word
  to "Ġ" (byte 0x20 in GPT-2's bytes-to-unicode table), so a token that starts with
  "Ġ" starts a word; the rest continue the current one. This is fairseq's
  ``is_beginning_of_word`` for the GPT-2 BPE (punctuation glued to a word, as in
  "word,", stays in that word's group).
* sentencepiece (unigram or BPE, ``Metaspace``): the space is "▁" (U+2581), same rule.
* BPE with an ``end_of_word_suffix`` (e.g. "</w>"): the suffix marks the *last*
  piece of a word, so the token after it starts a new word.

The convention is read once from the fast tokenizer's serialized pipeline
(model, pre-tokenizer, normalizer) and turned into boolean tables over the
vocabulary, so the per-sample work is a gather (``table[ids]``).
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Iterable, Optional

import numpy as np

#: GPT-2's bytes-to-unicode image of the space byte (0x20 -> U+0120 'Ġ').
BYTE_LEVEL_SPACE = "\u0120"
#: sentencepiece's meta-symbol for a space.
METASPACE = "\u2581"


@dataclasses.dataclass(frozen=True)
class WordBoundaryConvention:
    """How a tokenizer marks words in its sub-word tokens."""

    kind: str
    """One of ``"continuing_prefix"`` (WordPiece "##"), ``"start_marker"`` (byte-level
    "Ġ" or sentencepiece "▁"), ``"end_suffix"`` (BPE "</w>"), or ``"none"`` (every
    token is its own word: whole-word masking degrades to token masking)."""

    marker: str = ""
    """The prefix, marker or suffix string the rule looks for."""

    def __post_init__(self) -> None:
        kinds = ("continuing_prefix", "start_marker", "end_suffix", "none")
        if self.kind not in kinds:
            raise ValueError(f"kind must be one of {kinds}, got {self.kind!r}")
        if self.kind != "none" and not self.marker:
            raise ValueError(f"convention {self.kind!r} needs a non-empty marker")


def _walk(node: Any) -> Iterable[dict]:
    """Yields every dict in a nested pre-tokenizer/normalizer spec (Sequence included)."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _backend_spec(tokenizer: Any) -> Optional[dict]:
    """The JSON pipeline of a HF fast tokenizer or a ``tokenizers.Tokenizer``, if any."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None and hasattr(tokenizer, "to_str") and hasattr(tokenizer, "get_vocab"):
        backend = tokenizer  # a bare tokenizers.Tokenizer
    if backend is None:
        return None
    try:
        return json.loads(backend.to_str())
    except Exception:  # pragma: no cover - exotic backends
        return None


def detect_convention(tokenizer: Any) -> WordBoundaryConvention:
    """Reads the word-boundary convention from the tokenizer's own pipeline.

    Order of the checks: the model's WordPiece/``continuing_subword_prefix`` and
    ``end_of_word_suffix``, then a ``Metaspace`` or ``ByteLevel`` pre-tokenizer,
    then a normalizer that replaces spaces by "▁" (Llama-style sentencepiece
    conversions), then a slow sentencepiece tokenizer (``sp_model``).

    Raises:
        ValueError: when none of these is found; pass ``whole_word_masking=False``
            (or build a :class:`WordBoundaryConvention` yourself) for such tokenizers.
    """
    spec = _backend_spec(tokenizer)
    if spec is not None:
        model = spec.get("model") or {}
        prefix = model.get("continuing_subword_prefix")
        if model.get("type") == "WordPiece":
            return WordBoundaryConvention("continuing_prefix", prefix or "##")
        if prefix:
            return WordBoundaryConvention("continuing_prefix", prefix)
        suffix = model.get("end_of_word_suffix")
        if suffix:
            return WordBoundaryConvention("end_suffix", suffix)
        for node in _walk(spec.get("pre_tokenizer")):
            if node.get("type") == "Metaspace":
                return WordBoundaryConvention("start_marker", node.get("replacement") or METASPACE)
        for node in _walk(spec.get("pre_tokenizer")):
            if node.get("type") == "ByteLevel":
                return WordBoundaryConvention("start_marker", BYTE_LEVEL_SPACE)
        for node in _walk(spec.get("normalizer")):
            if node.get("type") == "Replace" and node.get("content") == METASPACE:
                return WordBoundaryConvention("start_marker", METASPACE)
        for node in _walk(spec.get("decoder")):
            if node.get("type") == "ByteLevel":
                return WordBoundaryConvention("start_marker", BYTE_LEVEL_SPACE)
    if getattr(tokenizer, "sp_model", None) is not None:
        return WordBoundaryConvention("start_marker", METASPACE)
    raise ValueError(
        f"cannot tell the word boundaries of {type(tokenizer).__name__}: no WordPiece prefix, "
        "end-of-word suffix, Metaspace or ByteLevel step in its pipeline; disable whole-word "
        "masking or pass a WordBoundaryConvention explicitly")


@dataclasses.dataclass(frozen=True)
class WordBoundaryTables:
    """Per-vocabulary boolean tables (index = token id).

    A position ``i`` of a token sequence starts a word when
    ``starts[ids[i]] or ends[ids[i-1]]``, or when ``i`` is the first position of a
    sequence read from the indexed dataset (see :func:`word_start_positions`).
    """

    starts: np.ndarray
    """``starts[t]``: token ``t`` begins a word (special tokens: True)."""
    ends: np.ndarray
    """``ends[t]``: token ``t`` ends a word, so the next one begins a new word (special: True)."""
    convention: WordBoundaryConvention


def build_word_boundary_tables(tokenizer: Any, vocab_size: int,
                               special_ids: Iterable[int] = (),
                               convention: Optional[WordBoundaryConvention] = None
                               ) -> WordBoundaryTables:
    """Builds :class:`WordBoundaryTables` once for the whole vocabulary.

    Args:
        tokenizer: a HF tokenizer (``get_vocab()``) or ``tokenizers.Tokenizer``.
        vocab_size: table length (``len(tokenizer)``, added tokens included).
        special_ids: ids that always form a word of their own ([CLS], [SEP], ...);
            any other id follows the convention's rule on its token string.
        convention: overrides :func:`detect_convention`.
    """
    convention = convention or detect_convention(tokenizer)
    starts = np.ones(vocab_size, dtype=bool)
    ends = np.zeros(vocab_size, dtype=bool)
    if convention.kind != "none":
        vocab = tokenizer.get_vocab()
        for token, index in vocab.items():
            if index >= vocab_size:
                continue
            if convention.kind == "continuing_prefix":
                starts[index] = not token.startswith(convention.marker)
            elif convention.kind == "start_marker":
                starts[index] = token.startswith(convention.marker)
            else:  # end_suffix: nothing marks a start; the previous token's suffix does
                starts[index] = False
                ends[index] = token.endswith(convention.marker)
    special = np.fromiter((i for i in special_ids if 0 <= i < vocab_size), dtype=np.int64)
    starts[special] = True
    ends[special] = True
    return WordBoundaryTables(starts=starts, ends=ends, convention=convention)


def word_start_positions(ids: np.ndarray, tables: WordBoundaryTables,
                         sequence_starts: Optional[np.ndarray] = None) -> np.ndarray:
    """Boolean per position: does this position start a word?

    Args:
        ids: token ids of one sample.
        tables: the vocabulary tables.
        sequence_starts: positions where a stored sequence (sentence, document or
            chunk) begins. They always start a word: a sentence tokenized on its own
            may lack the leading "Ġ"/"▁" of its first word, and a word never spans
            two stored sequences.
    """
    ids = np.asarray(ids, dtype=np.int64)
    starts = tables.starts[ids].copy()
    if ids.size:
        starts[0] = True
        starts[1:] |= tables.ends[ids[:-1]]
    if sequence_starts is not None:
        starts[np.asarray(sequence_starts, dtype=bool)] = True
    return starts
