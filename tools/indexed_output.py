"""Writing megatron-core indexed datasets (PREFIX.bin + PREFIX.idx) safely.

Datasets written document by document (`DatasetWriter`) or concatenated
(`merge_datasets`) go through megatron-core's IndexedDatasetBuilder, so the
files are exactly what `IndexedDataset(PREFIX)` expects. What is added here:

- temporary names that never end in .bin/.idx, so a failed run leaves nothing
  that looks like a dataset, and a commit order that keeps that promise even if
  the process dies during the renames (alum.atomic_write.atomic_pair: the old
  .idx goes first, the .idx comes last; a .bin without its .idx is not a
  dataset to IndexedDataset);
- parts (`PartWriter`): what a worker writes for its share of the input,
  with numpy only, so that workers never import torch or megatron-core
  (seconds of start-up each). A part is the data bytes exactly as
  IndexedDatasetBuilder writes them plus the sequence lengths and sequences
  per document; `PartMerger` concatenates parts into a dataset the way the
  builder's own `add_index` appends one, and writes the index with numpy
  (`write_index`, byte-identical to megatron-core's), so that the merge does not
  pay megatron-core's import (seconds of CPU that would compete with the workers).
"""
import abc
import contextlib
import os
import shutil
import struct
import sys
import warnings
from typing import BinaryIO

import numpy as np

from alum.atomic_write import atomic_pair


def indexed_dataset_module():
    """megatron.core.datasets.indexed_dataset, imported on first use.

    Importing megatron.core pulls in its optimizer and FSDP modules, which
    warn that Transformer Engine / Apex are missing; irrelevant for data.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Transformer Engine.*")
        warnings.filterwarnings("ignore", message=".*Apex.*")
        from megatron.core.datasets import indexed_dataset
    return indexed_dataset


def smallest_dtype(vocab_size: int):
    """Smallest dtype megatron-core's index format supports that holds every id."""
    if vocab_size <= 1 << 8:
        return np.uint8
    if vocab_size <= 1 << 16:
        return np.uint16
    return np.int32


def remove_quietly(*paths):
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


class _PairWriter(abc.ABC):
    """A writer of PREFIX.bin (``data_file``, open at ``tmp_bin``) and its index under
    ``atomic_pair``'s temporary names: leaving the block normally runs ``_finish`` (which
    writes the index at ``tmp_index``) and commits the pair; leaving it with an exception,
    or failing in ``_finish``, closes the data file and removes both."""

    data_file: BinaryIO

    def _open(self, prefix: str, index_suffix: str) -> None:
        self._files = atomic_pair(prefix + ".bin", prefix + index_suffix)
        self.tmp_bin, self.tmp_index = self._files.__enter__()

    @abc.abstractmethod
    def _finish(self) -> None:
        """Complete the data file and write the index."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            try:
                self._finish()
            except BaseException:
                self.data_file.close()
                self._files.__exit__(*sys.exc_info())
                raise
        else:
            self.data_file.close()
        return self._files.__exit__(exc_type, exc, tb)


class DatasetWriter(_PairWriter):
    """One indexed dataset written document by document, committed on success.

    Use as a context manager; leaving the block with an exception deletes the
    temp files, leaving it normally finalizes and commits.
    """

    def __init__(self, prefix: str, dtype):
        self.prefix = prefix
        self.dtype = dtype
        module = indexed_dataset_module()
        self._open(prefix, ".idx")
        self.builder = module.IndexedDatasetBuilder(self.tmp_bin, dtype=dtype)
        self.data_file = self.builder.data_file

    def add_document(self, sequences) -> None:
        """One document made of one or more non-empty token-id sequences."""
        flat = np.concatenate(sequences) if len(sequences) > 1 else np.asarray(sequences[0])
        self.builder.add_document(flat, lengths=[len(s) for s in sequences])

    def add_dataset(self, prefix: str) -> None:
        """Append a whole existing indexed dataset (megatron's add_index)."""
        self.builder.add_index(prefix)

    def _finish(self) -> None:
        self.builder.finalize(self.tmp_index)


PART_INDEX = ".part.npz"
# megatron-core's index header and dtype codes (megatron.core.datasets.indexed_dataset:
# _INDEX_HEADER, DType); tests compare them with the installed megatron-core.
INDEX_HEADER = b"MMIDIDX\x00\x00"
DTYPE_CODES = {np.uint8: 1, np.int8: 2, np.int16: 3, np.int32: 4, np.int64: 5, np.float64: 6,
               np.float32: 7, np.uint16: 8}


class PartWriter(_PairWriter):
    """A part: PREFIX.bin (token bytes) + PREFIX.part.npz (lengths), numpy only.

    Written under temporary names and committed on success like DatasetWriter
    (the index last); leaving the block with an exception deletes them.
    """

    def __init__(self, prefix: str, dtype):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        self._open(prefix, PART_INDEX)
        self.data_file = open(self.tmp_bin, "wb")
        self.sequence_lengths = []
        self.document_sequences = []

    def add_document(self, sequences) -> None:
        """One document made of one or more non-empty token-id sequences (in dtype)."""
        flat = np.concatenate(sequences) if len(sequences) > 1 else sequences[0]
        self.data_file.write(np.asarray(flat, dtype=self.dtype).tobytes(order="C"))
        self.sequence_lengths.extend(len(s) for s in sequences)
        self.document_sequences.append(len(sequences))

    def _finish(self) -> None:
        self.data_file.close()
        with open(self.tmp_index, "wb") as f:  # a file object: np.savez would append .npz
            np.savez(f, sequence_lengths=np.asarray(self.sequence_lengths, np.int64),
                     document_sequences=np.asarray(self.document_sequences, np.int64))


class PartMerger(_PairWriter):
    """One indexed dataset made of parts: the parts' .bin bytes concatenated, the .idx
    written by ``write_index`` (numpy only: the merge imports neither torch nor
    megatron-core). Committed like ``DatasetWriter``."""

    def __init__(self, prefix: str, dtype):
        self.dtype = np.dtype(dtype)
        self._open(prefix, ".idx")
        self.data_file = open(self.tmp_bin, "wb")
        self.sequence_lengths = []
        self.document_indices = [np.zeros(1, np.int64)]  # megatron's index starts at 0
        self.sequences = 0

    def add_part(self, prefix: str) -> None:
        """Append a part written by PartWriter (as megatron's ``add_index`` appends a dataset)."""
        with np.load(prefix + PART_INDEX) as index:
            lengths, per_doc = index["sequence_lengths"], index["document_sequences"]
        if lengths.sum() * self.dtype.itemsize != os.path.getsize(prefix + ".bin"):
            raise ValueError(f"{prefix}.bin does not match its index (damaged work file)")
        self.sequence_lengths.append(lengths)
        self.document_indices.append(self.sequences + np.cumsum(per_doc))
        self.sequences += len(lengths)
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, self.data_file, 1 << 22)

    def _finish(self) -> None:
        self.data_file.close()
        write_index(self.tmp_index, self.dtype, np.concatenate(self.sequence_lengths or [[]]),
                    np.concatenate(self.document_indices))


def write_index(path: str, dtype, sequence_lengths: np.ndarray,
                document_indices: np.ndarray) -> None:
    """megatron-core's .idx format (``_IndexWriter``; tests check the bytes against it):
    header, version 1, dtype code, sequence and document counts, then the int32 sequence
    lengths, their int64 byte offsets in the .bin and the int64 document boundaries."""
    dtype = np.dtype(dtype)
    lengths = np.asarray(sequence_lengths, np.int32)
    pointers = np.zeros(len(lengths), np.int64)
    np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    documents = np.asarray(document_indices, np.int64)
    with open(path, "wb") as f:
        f.write(INDEX_HEADER + struct.pack("<QB", 1, DTYPE_CODES[dtype.type]))
        f.write(struct.pack("<QQ", len(lengths), len(documents)))
        for array in (lengths, pointers, documents):
            f.write(array.tobytes(order="C"))


def merge_parts(prefixes, out_prefix: str, dtype):
    """One indexed dataset made of the parts `prefixes`, in order."""
    with PartMerger(out_prefix, dtype) as merger:
        for prefix in prefixes:
            merger.add_part(prefix)


def dataset_dtype(prefix: str):
    """dtype of an existing indexed dataset, read from its .idx header."""
    module = indexed_dataset_module()
    with open(prefix + ".idx", "rb") as f:
        header = f.read(len(module._INDEX_HEADER) + 9)
    if not header.startswith(module._INDEX_HEADER):
        raise ValueError(f"{prefix}.idx is not a megatron indexed-dataset index")
    return module.DType.dtype_from_code(header[-1])


def merge_datasets(prefixes, out_prefix: str):
    """Concatenate indexed datasets (same dtype) into one, in the given order."""
    if not prefixes:
        raise ValueError("nothing to merge")
    dtypes = {p: dataset_dtype(p) for p in prefixes}
    dtype = dtypes[prefixes[0]]
    odd = [p for p, d in dtypes.items() if d != dtype]
    if odd:
        raise ValueError(f"cannot merge datasets of different dtypes: {prefixes[0]} is "
                         f"{dtype.__name__}, {odd[0]} is {dtypes[odd[0]].__name__}")
    with DatasetWriter(out_prefix, dtype) as writer:
        for prefix in prefixes:
            writer.add_dataset(prefix)
    return dtype
