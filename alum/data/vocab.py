"""What the MLM data pipeline needs from a tokenizer, read once from a HF tokenizer.

The datasets never call the tokenizer per sample (the indexed dataset already
holds token ids); they need the special ids to frame and pad a sequence, the
ids a random replacement may draw from, and the word-boundary tables. This
object also plays the part of megatron-core's tokenizer inside
``BlendedMegatronDatasetConfig.tokenizer`` (``pad``/``cls``/``sep``/``mask`` and
``unique_identifiers`` for the dataset description hash).
"""
from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from typing import Any, Optional

import numpy as np

from .word_boundaries import (WordBoundaryConvention, WordBoundaryTables,
                              build_word_boundary_tables)


@dataclasses.dataclass(eq=False)
class MLMVocab:
    """Special ids and per-vocab tables of one tokenizer (build with :meth:`from_tokenizer`)."""

    cls: int
    """Id opening every sample: ``[CLS]`` (BERT) or ``<s>`` (RoBERTa)."""
    sep: int
    """Id closing every sample and separating documents: ``[SEP]`` or ``</s>``."""
    pad: int
    """Padding id (``[PAD]`` / ``<pad>``)."""
    mask: int
    """Mask id (``[MASK]`` / ``<mask>``)."""
    vocab_size: int
    """Number of ids (``len(tokenizer)``, added tokens included)."""
    special_ids: np.ndarray
    """Ids never masked and never drawn as random replacements."""
    word_boundaries: Optional[WordBoundaryTables] = None
    """Tables for whole-word masking; None when the convention was not asked for."""
    name: str = ""
    """The tokenizer's ``name_or_path``, for the dataset description only."""

    def __post_init__(self) -> None:
        for field in ("cls", "sep", "pad", "mask"):
            value = getattr(self, field)
            if value is None or not 0 <= int(value) < self.vocab_size:
                raise ValueError(f"{field} id {value!r} is not in [0, {self.vocab_size})")
        self.special_ids = np.unique(np.asarray(self.special_ids, dtype=np.int64))
        is_special = np.zeros(self.vocab_size, dtype=bool)
        is_special[self.special_ids[(self.special_ids >= 0)
                                    & (self.special_ids < self.vocab_size)]] = True
        is_special[[self.cls, self.sep, self.pad, self.mask]] = True
        self.is_special = is_special
        #: ids a "random token" replacement draws from (BERT draws from the whole
        #: vocabulary; drawing a [CLS] or [PAD] into the text teaches nothing).
        self.random_ids = np.flatnonzero(~is_special).astype(np.int64)
        if self.random_ids.size == 0:
            raise ValueError("the vocabulary has no non-special token")

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, whole_word: bool = True,
                       convention: Optional[WordBoundaryConvention] = None) -> "MLMVocab":
        """Reads the ids from a ``transformers`` tokenizer.

        ``[CLS]``/``[SEP]`` come from ``cls_token_id``/``sep_token_id`` and fall
        back to ``bos_token_id``/``eos_token_id`` (RoBERTa defines both pairs as
        ``<s>``/``</s>``).

        Args:
            tokenizer: a ``PreTrainedTokenizerFast`` (or anything with the same ids).
            whole_word: also build the word-boundary tables (needs a tokenizer whose
                convention :func:`~alum.data.word_boundaries.detect_convention` knows,
                or ``convention``).
            convention: overrides the detected word-boundary convention.
        """
        def first(*names):
            for name in names:
                value = getattr(tokenizer, name, None)
                if value is not None:
                    return int(value)
            return None

        ids = dict(cls=first("cls_token_id", "bos_token_id"),
                   sep=first("sep_token_id", "eos_token_id"),
                   pad=first("pad_token_id"), mask=first("mask_token_id"))
        missing = [k for k, v in ids.items() if v is None]
        if missing:
            raise ValueError(f"tokenizer {getattr(tokenizer, 'name_or_path', '')!r} has no "
                             f"{'/'.join(missing)} token; MLM needs cls, sep, pad and mask")
        vocab_size = len(tokenizer)
        special = list(getattr(tokenizer, "all_special_ids", [])) + list(ids.values())
        tables = None
        if whole_word:
            # <unk> stands for a piece (sentencepiece) or a whole word (WordPiece):
            # its own token string, read by the convention's rule, says which; the
            # other special tokens are words of their own.
            unk = getattr(tokenizer, "unk_token_id", None)
            framing = [i for i in special if i != unk or i in ids.values()]
            tables = build_word_boundary_tables(tokenizer, vocab_size, framing, convention)
        return cls(vocab_size=vocab_size, special_ids=np.asarray(special), word_boundaries=tables,
                   name=str(getattr(tokenizer, "name_or_path", "") or ""), **ids)

    @property
    def unique_identifiers(self) -> "OrderedDict[str, Any]":
        """JSON-able identity, read by megatron-core when it hashes a dataset description."""
        digest = hashlib.md5(usedforsecurity=False)
        digest.update(self.special_ids.tobytes())
        if self.word_boundaries is not None:
            digest.update(self.word_boundaries.starts.tobytes())
            digest.update(self.word_boundaries.ends.tobytes())
        out = OrderedDict(cls=int(self.cls), sep=int(self.sep), pad=int(self.pad),
                          mask=int(self.mask), vocab_size=int(self.vocab_size), name=self.name)
        out["tables_md5"] = digest.hexdigest()
        return out
