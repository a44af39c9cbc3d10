"""Packing stored sequences into samples of at most the model's length.

The indexed dataset holds sequences (a whole document, or one sentence with
``--split-sentences``) and ``document_indices`` marks where documents begin. A
sample is ``[CLS] content [SEP]`` (or ``<s> content </s>``), so the content
holds at most ``capacity = max_length - 2`` tokens. Two layouts:

``"document"`` (Megatron-BERT's sampling, RoBERTa's DOC-SENTENCES)
    consecutive sequences of one document, as many whole ones as fit; a sample
    never mixes documents, so the last one of a document may be short.
``"cross_document"`` (RoBERTa's FULL-SENTENCES, Liu et al. 2019, Sec. 4.2)
    whole sequences contiguously across document ends, with one separator
    token (``[SEP]``/``</s>``) between documents; samples are (nearly) full.

In both, a sequence is never cut unless it alone exceeds the capacity: then it
is cut into ``capacity``-sized chunks (the last chunk may share a sample with
what follows). Megatron's C++ ``build_mapping`` instead overshoots the target
length and truncates later, and drops documents with a sentence over 512
tokens; here no token is dropped and no sample is longer than the length.

A packed sample is a run of *segments* ``(sequence, offset, length)``; the
separator is the segment ``(-1, 0, 1)``.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, List, Sequence, Tuple

import numpy as np

PACKING_MODES = ("document", "cross_document")
SEPARATOR = -1


@dataclasses.dataclass
class PackedIndex:
    """Segments of every packed sample, as flat arrays (cheap to cache with ``numpy.save``)."""

    segment_sequence: np.ndarray
    """Sequence index into the indexed dataset, or -1 for a document separator."""
    segment_offset: np.ndarray
    """First token of the segment inside its sequence."""
    segment_length: np.ndarray
    """Number of tokens of the segment."""
    sample_pointer: np.ndarray
    """Sample ``i`` is segments ``[sample_pointer[i], sample_pointer[i + 1])``."""

    def __len__(self) -> int:
        return int(self.sample_pointer.size - 1)

    def segments(self, i: int) -> List[Tuple[int, int, int]]:
        lo, hi = int(self.sample_pointer[i]), int(self.sample_pointer[i + 1])
        return list(zip(self.segment_sequence[lo:hi].tolist(),
                        self.segment_offset[lo:hi].tolist(),
                        self.segment_length[lo:hi].tolist()))

    def sample_lengths(self) -> np.ndarray:
        """Content tokens per sample (separators included, [CLS]/[SEP] excluded)."""
        sums = np.concatenate([[0], np.cumsum(self.segment_length, dtype=np.int64)])
        return sums[self.sample_pointer[1:]] - sums[self.sample_pointer[:-1]]


def pack_sequences(document_indices: np.ndarray, sequence_lengths: np.ndarray,
                   documents: Iterable[int], capacity: int,
                   mode: str = "document") -> PackedIndex:
    """Greedy packing of the given documents, in the given order.

    Args:
        document_indices: megatron ``document_indices`` (document ``d`` holds
            sequences ``[document_indices[d], document_indices[d + 1])``).
        sequence_lengths: tokens per sequence.
        documents: the document ids to pack (a split's ids, in order).
        capacity: content tokens per sample (``max_length - 2``), >= 1.
        mode: ``"document"`` or ``"cross_document"``.
    """
    if mode not in PACKING_MODES:
        raise ValueError(f"packing mode must be one of {PACKING_MODES}, got {mode!r}")
    capacity = int(capacity)
    if capacity < 1:
        raise ValueError(f"capacity must be >= 1 (max_length >= 3), got {capacity}")
    cross = mode == "cross_document"
    doc_bounds = np.asarray(document_indices, dtype=np.int64).tolist()
    lengths: Sequence[int] = np.asarray(sequence_lengths, dtype=np.int64).tolist()

    seq_out: List[int] = []
    off_out: List[int] = []
    len_out: List[int] = []
    pointer: List[int] = [0]
    current: List[Tuple[int, int, int]] = []
    used = 0

    def emit() -> None:
        nonlocal current, used
        if current:
            for s, o, n in current:
                seq_out.append(s)
                off_out.append(o)
                len_out.append(n)
            pointer.append(len(seq_out))
        current, used = [], 0

    for doc in documents:
        doc = int(doc)
        first_of_doc = True
        for s in range(doc_bounds[doc], doc_bounds[doc + 1]):
            n = lengths[s]
            if n == 0:
                continue
            # A separator is owed when this document joins a non-empty sample.
            sep = 1 if (cross and first_of_doc and current) else 0
            first_of_doc = False
            if used + sep + n <= capacity:
                if sep:
                    current.append((SEPARATOR, 0, 1))
                current.append((s, 0, n))
                used += sep + n
                continue
            emit()
            offset = 0
            while n - offset > capacity:   # only a sequence longer than a sample is cut
                current.append((s, offset, capacity))
                used = capacity
                emit()
                offset += capacity
            current.append((s, offset, n - offset))
            used = n - offset
        if not cross:
            emit()
    emit()
    return PackedIndex(np.asarray(seq_out, dtype=np.int64), np.asarray(off_out, dtype=np.int64),
                       np.asarray(len_out, dtype=np.int64), np.asarray(pointer, dtype=np.int64))


def assemble(read, segments: Sequence[Tuple[int, int, int]], cls_id: int, sep_id: int
             ) -> Tuple[np.ndarray, np.ndarray]:
    """Builds ``[CLS] segments... [SEP]`` for one sample.

    Args:
        read: ``read(sequence, offset, length) -> array`` (``IndexedDataset.get``).
        segments: the sample's segments from :class:`PackedIndex`.

    Returns:
        (token ids int64, bool per position that is the first token of a stored
        sequence or chunk; used as forced word starts).
    """
    pieces = [np.asarray([cls_id], dtype=np.int64)]
    starts = [np.zeros(1, dtype=bool)]
    for s, o, n in segments:
        if s == SEPARATOR:
            pieces.append(np.asarray([sep_id], dtype=np.int64))
            starts.append(np.zeros(1, dtype=bool))
        else:
            pieces.append(np.asarray(read(s, o, n), dtype=np.int64))
            flags = np.zeros(n, dtype=bool)
            flags[0] = True
            starts.append(flags)
    pieces.append(np.asarray([sep_id], dtype=np.int64))
    starts.append(np.zeros(1, dtype=bool))
    return np.concatenate(pieces), np.concatenate(starts)
