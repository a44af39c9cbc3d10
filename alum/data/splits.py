"""Train/valid/test splits by document, exactly as megatron-core draws them.

Megatron's ``BlendedMegatronDatasetBuilder`` turns a split string such as
``"949,50,1"`` into book-ends with ``parse_and_normalize_split`` and
``convert_split_vector_to_split_matrix`` and gives split ``i`` the documents
``[round(lo_i * N), round(hi_i * N))``: contiguous, disjoint, covering, and the
same on every rank and every run. :func:`split_documents` exposes the same
arithmetic (reusing those two functions) for code that builds an
:class:`~alum.data.mlm_dataset.MLMDataset` without the builder.
"""
from __future__ import annotations

from typing import List, Optional

import numpy as np

SPLIT_NAMES = ("train", "valid", "test")


def split_matrix(split: str) -> List[Optional[tuple]]:
    """``"949,50,1"`` -> ``[(0, .949), (.949, .999), (.999, 1.0)]`` (None for an empty split)."""
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)
    return convert_split_vector_to_split_matrix(parse_and_normalize_split(split))


def split_documents(num_documents: int, split: str = "949,50,1") -> List[np.ndarray]:
    """Document ids of each split (train, valid, test), as megatron-core's builder assigns them."""
    out = []
    for bookends in split_matrix(split):
        if bookends is None:
            out.append(np.zeros(0, dtype=np.int32))
            continue
        beg = int(round(bookends[0] * float(num_documents)))
        end = int(round(bookends[1] * float(num_documents)))
        out.append(np.arange(beg, end, dtype=np.int32))
    return out


def split_index(which) -> int:
    """0/1/2 from ``"train"``/``"valid"``/``"test"``, a megatron ``Split`` or an int."""
    if isinstance(which, str):
        if which not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {SPLIT_NAMES}, got {which!r}")
        return SPLIT_NAMES.index(which)
    value = getattr(which, "value", which)
    if value not in (0, 1, 2):
        raise ValueError(f"split index must be 0, 1 or 2, got {which!r}")
    return int(value)
