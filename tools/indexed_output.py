"""Writing megatron-core indexed datasets (PREFIX.bin + PREFIX.idx) safely.

All writing goes through megatron-core's IndexedDatasetBuilder, so the files
are exactly what `IndexedDataset(PREFIX)` expects. What is added here:

- temporary names (`PREFIX.bin.tmp-PID`, `PREFIX.idx.tmp-PID`) that never
  end in .bin/.idx, so a failed run leaves nothing that looks like a dataset;
- a commit order that keeps that promise even if the process dies during the
  rename: the old .idx is removed first, then the .bin is moved in, then the
  .idx last. A .bin without its .idx is not a dataset to IndexedDataset;
- parts (`PartWriter`): what a worker writes for its share of the input,
  with numpy only, so that workers never import torch or megatron-core
  (seconds of start-up each). A part is the data bytes exactly as
  IndexedDatasetBuilder writes them plus the sequence lengths and sequences
  per document; `DatasetWriter.add_part` appends one to a dataset the way
  the builder's own `add_index` appends a dataset.
"""
import contextlib
import os
import shutil
import warnings

import numpy as np


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


def temp_paths(prefix: str):
    pid = os.getpid()
    return f"{prefix}.bin.tmp-{pid}", f"{prefix}.idx.tmp-{pid}"


def remove_quietly(*paths):
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


def commit(tmp_bin: str, tmp_idx: str, prefix: str) -> None:
    """Move finished temp files to PREFIX.bin / PREFIX.idx (index last)."""
    remove_quietly(prefix + ".idx")
    os.replace(tmp_bin, prefix + ".bin")
    os.replace(tmp_idx, prefix + ".idx")


class DatasetWriter:
    """One indexed dataset written document by document, committed on success.

    Use as a context manager; leaving the block with an exception deletes the
    temp files, leaving it normally finalizes and commits.
    """

    def __init__(self, prefix: str, dtype):
        self.prefix = prefix
        self.dtype = dtype
        self.tmp_bin, self.tmp_idx = temp_paths(prefix)
        self.builder = indexed_dataset_module().IndexedDatasetBuilder(self.tmp_bin, dtype=dtype)

    def add_document(self, sequences) -> None:
        """One document made of one or more non-empty token-id sequences."""
        flat = np.concatenate(sequences) if len(sequences) > 1 else np.asarray(sequences[0])
        self.builder.add_document(flat, lengths=[len(s) for s in sequences])

    def add_dataset(self, prefix: str) -> None:
        """Append a whole existing indexed dataset (megatron's add_index)."""
        self.builder.add_index(prefix)

    def add_part(self, prefix: str) -> None:
        """Append a part written by PartWriter, as add_index appends a dataset."""
        with np.load(prefix + PART_INDEX) as index:
            lengths, per_doc = index["sequence_lengths"], index["document_sequences"]
        if lengths.sum() * np.dtype(self.dtype).itemsize != os.path.getsize(prefix + ".bin"):
            raise ValueError(f"{prefix}.bin does not match its index (damaged work file)")
        builder = self.builder
        offset = len(builder.sequence_lengths)
        builder.sequence_lengths.extend(lengths.tolist())
        builder.document_indices.extend((offset + np.cumsum(per_doc)).tolist())
        with open(prefix + ".bin", "rb") as f:
            shutil.copyfileobj(f, builder.data_file, 1 << 22)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is not None:
            self.builder.data_file.close()
            remove_quietly(self.tmp_bin, self.tmp_idx)
            return False
        try:
            self.builder.finalize(self.tmp_idx)
            commit(self.tmp_bin, self.tmp_idx, self.prefix)
        except BaseException:
            remove_quietly(self.tmp_bin, self.tmp_idx)
            raise
        return False


PART_INDEX = ".part.npz"


class PartWriter:
    """A part: PREFIX.bin (token bytes) + PREFIX.part.npz (lengths), numpy only.

    Written under temporary names and committed on success like DatasetWriter
    (the index last); leaving the block with an exception deletes them.
    """

    def __init__(self, prefix: str, dtype):
        self.prefix = prefix
        self.dtype = np.dtype(dtype)
        pid = os.getpid()
        self.tmp_bin, self.tmp_index = f"{prefix}.bin.tmp-{pid}", f"{prefix}.part.tmp-{pid}.npz"
        self.data_file = open(self.tmp_bin, "wb")
        self.sequence_lengths = []
        self.document_sequences = []

    def add_document(self, sequences) -> None:
        """One document made of one or more non-empty token-id sequences (in dtype)."""
        flat = np.concatenate(sequences) if len(sequences) > 1 else sequences[0]
        self.data_file.write(np.asarray(flat, dtype=self.dtype).tobytes(order="C"))
        self.sequence_lengths.extend(len(s) for s in sequences)
        self.document_sequences.append(len(sequences))

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.data_file.close()
        if exc_type is not None:
            remove_quietly(self.tmp_bin, self.tmp_index)
            return False
        try:
            np.savez(self.tmp_index, sequence_lengths=np.asarray(self.sequence_lengths, np.int64),
                     document_sequences=np.asarray(self.document_sequences, np.int64))
            os.replace(self.tmp_bin, self.prefix + ".bin")
            os.replace(self.tmp_index, self.prefix + PART_INDEX)
        except BaseException:
            remove_quietly(self.tmp_bin, self.tmp_index)
            raise
        return False


def merge_parts(prefixes, out_prefix: str, dtype):
    """One indexed dataset made of the parts `prefixes`, in order."""
    with DatasetWriter(out_prefix, dtype) as writer:
        for prefix in prefixes:
            writer.add_part(prefix)


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
