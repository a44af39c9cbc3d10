"""Megatron-style weighted blending of MLM datasets, and the one-call builder.

Megatron-LM trains on ``--data-path 30 wiki 70 owt``: the blend's sample order
is built greedily so that after every sample the count drawn from each dataset
is as close as possible to ``weight * samples_so_far`` (the dataset with the
largest deficit comes next). megatron-core implements this in
``BlendedDataset`` with the compiled ``helpers_cpp.build_blending_indices``
(shipped pre-built in the megatron-core wheel); :class:`BlendedMLMDataset`
reuses that class and its indices, and adds what MLM training needs on top:
the epoch and masking step are passed down to the member datasets, and
``dataset_id`` comes back as a tensor. :func:`blending_indices` is the same
algorithm in NumPy, used only where the compiled helper cannot be imported.

:func:`build_mlm_datasets` runs megatron-core's ``BlendedMegatronDatasetBuilder``
with :class:`~alum.data.mlm_dataset.MLMDataset`: one call gives the train, valid
and test datasets, split by document and blended by weight.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.utils import get_blend_from_list, normalize

from .mlm_dataset import MLMDataset, MLMDatasetConfig

logger = logging.getLogger(__name__)


def blending_indices(weights: Sequence[float], size: int) -> Tuple[np.ndarray, np.ndarray]:
    """(dataset index, sample index within that dataset) for each of ``size`` blend samples.

    Same greedy rule as megatron-core's ``build_blending_indices`` (the C++
    helper is used when importable; this loop is its fallback): sample ``i``
    comes from ``argmax_d(w_d * max(i, 1) - count_d)``, ties to the lowest ``d``.
    """
    w = np.asarray(normalize(list(weights)), dtype=np.float64)
    dataset_index = np.zeros(size, dtype=np.int16)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    try:
        from megatron.core.datasets import helpers
        helpers.build_blending_indices(dataset_index, dataset_sample_index, w, len(w), size,
                                       False)
        return dataset_index, dataset_sample_index
    except ImportError:  # pragma: no cover - the wheel ships the compiled helper
        pass
    return _blending_indices_numpy(w, size)


def _blending_indices_numpy(w: np.ndarray, size: int) -> Tuple[np.ndarray, np.ndarray]:
    dataset_index = np.zeros(size, dtype=np.int16)
    dataset_sample_index = np.zeros(size, dtype=np.int64)
    counts = np.zeros(w.size, dtype=np.int64)
    for i in range(size):
        d = int(np.argmax(w * max(float(i), 1.0) - counts))
        dataset_index[i] = d
        dataset_sample_index[i] = counts[d]
        counts[d] += 1
    return dataset_index, dataset_sample_index


class BlendedMLMDataset(torch.utils.data.Dataset):
    """A weighted blend of :class:`MLMDataset` s (megatron-core ``BlendedDataset`` order).

    Args:
        datasets: the member datasets (same split).
        weights: relative weights (normalized here).
        size: blend length; None for the exhaustive blend, where the weights are
            integer sample counts (megatron's convention).
        blended: an existing megatron ``BlendedDataset`` to wrap instead (what
            :func:`build_mlm_datasets` gets from the builder).

    ``blend[i]`` is ``datasets[d].get_sample(j, epoch, step)`` for the ``(d, j)``
    of blend position ``i``, plus ``dataset_id`` (a long scalar tensor). The
    masking step comes from the *blend* position (``samples_per_step`` of the
    first member's config), since that is the order training consumes.
    """

    def __init__(self, datasets: Optional[Sequence[MLMDataset]] = None,
                 weights: Optional[Sequence[Union[int, float]]] = None,
                 size: Optional[int] = None, *, blended: Optional[BlendedDataset] = None) -> None:
        if blended is None:
            if not datasets or weights is None or len(datasets) != len(weights):
                raise ValueError("give as many weights as datasets (or blended=...)")
            if any(float(w) <= 0 for w in weights):
                raise ValueError(f"blend weights must be > 0, got {list(weights)}")
            try:
                blended = BlendedDataset(list(datasets), list(weights), size, datasets[0].config)
                dataset_index = blended.dataset_index
                dataset_sample_index = blended.dataset_sample_index
            except ImportError:  # pragma: no cover - compiled helper missing
                if size is None:
                    size = int(sum(weights))
                dataset_index, dataset_sample_index = _blending_indices_numpy(
                    np.asarray(normalize(list(weights))), size)
                counts = np.bincount(dataset_index, minlength=len(datasets))
                for d, count in enumerate(counts):
                    if count > len(datasets[d]):
                        raise IndexError(f"the blend draws {count} samples from dataset {d}, "
                                         f"which has {len(datasets[d])}")
            self.datasets = list(datasets)
            self.weights = list(weights)
        else:
            dataset_index = blended.dataset_index
            dataset_sample_index = blended.dataset_sample_index
            self.datasets = list(blended.datasets)
            self.weights = list(blended.weights)
        self.blended = blended
        self.dataset_index = np.asarray(dataset_index)
        self.dataset_sample_index = np.asarray(dataset_sample_index)
        self.epoch = 0
        self.step: Optional[int] = None

    @classmethod
    def from_megatron(cls, blended: BlendedDataset) -> "BlendedMLMDataset":
        """Wraps the ``BlendedDataset`` that megatron-core's builder returns."""
        return cls(blended=blended)

    def __len__(self) -> int:
        return int(self.dataset_index.shape[0])

    def set_epoch(self, epoch: int) -> None:
        """New orders and masks in every member (call before creating the iterator)."""
        self.epoch = int(epoch)
        for d in self.datasets:
            d.set_epoch(epoch)

    def set_step(self, step: Optional[int]) -> None:
        """Fixed masking step (overrides the derived one); None to derive it again."""
        self.step = None if step is None else int(step)

    def masking_step(self, idx: int) -> int:
        if self.step is not None:
            return self.step
        per_step = self.datasets[0].config.samples_per_step
        if per_step:
            return (self.epoch * len(self) + int(idx)) // int(per_step)
        return 0

    def __getitem__(self, idx: int):
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        d = int(self.dataset_index[idx])
        sample = self.datasets[d].get_sample(int(self.dataset_sample_index[idx]),
                                             epoch=self.epoch, step=self.masking_step(idx))
        sample["dataset_id"] = torch.tensor(d, dtype=torch.long)
        return sample


def set_epoch(dataset: Any, epoch: int) -> None:
    """Calls ``set_epoch`` through ``Subset`` wrappers (e.g. :func:`~alum.data.distributed.rank_slice`)."""
    while isinstance(dataset, torch.utils.data.Subset):
        dataset = dataset.dataset
    dataset.set_epoch(epoch)


BlendSpec = Union[str, Sequence[str], Tuple[Sequence[str], Optional[Sequence[float]]]]


def _as_blend(spec: Optional[BlendSpec]):
    """A prefix, megatron's flat list (``["30", "a", "70", "b"]`` or ``["a", "b"]``), or
    megatron's ``(prefixes, weights)`` pair."""
    if spec is None:
        return None
    if isinstance(spec, str):
        return [spec], None
    if (isinstance(spec, tuple) and len(spec) == 2 and not isinstance(spec[0], str)):
        prefixes, weights = spec
        return list(prefixes), (None if weights is None else [float(w) for w in weights])
    return get_blend_from_list([str(s) for s in spec])


def build_mlm_datasets(blend: Optional[BlendSpec], tokenizer: Any, sequence_length: int,
                       sizes: Sequence[Optional[int]] = (None, None, None), *,
                       split: Optional[str] = "949,50,1",
                       blend_per_split: Optional[Sequence[Optional[BlendSpec]]] = None,
                       random_seed: int = 1234,
                       is_built_on_rank: Optional[Callable[[], bool]] = None,
                       **options: Any) -> List[Optional[torch.utils.data.Dataset]]:
    """Train, valid and test MLM datasets via megatron-core's ``BlendedMegatronDatasetBuilder``.

    Args:
        blend: one prefix, megatron's flat list ``["30", "wiki", "70", "owt"]``, or
            ``(prefixes, weights)``. Every split draws from it, documents cut by ``split``.
        tokenizer: HF tokenizer or :class:`~alum.data.vocab.MLMVocab`.
        sequence_length: model length, special tokens included.
        sizes: samples per split (train, valid, test). None: one pass over the data.
            With weights, megatron requires every size to be given (e.g.
            ``train_iters * global_batch``); members are then built slightly
            larger (``mid_level_dataset_surplus``) and looped as needed.
        split: document split weights (ignored with ``blend_per_split``).
        blend_per_split: three blends (or None), one per split, instead of ``blend``.
        random_seed: seed of every order and mask.
        is_built_on_rank: megatron's hook; default: build on every rank.
        **options: other :class:`~alum.data.mlm_dataset.MLMDatasetConfig` fields.

    Returns:
        ``[train, valid, test]``: an ``MLMDataset``, a :class:`BlendedMLMDataset`, or None.
    """
    per_split = None
    if blend_per_split is not None:
        per_split = [_as_blend(b) for b in blend_per_split]
        split = None
    config = MLMDatasetConfig(random_seed=random_seed, sequence_length=sequence_length,
                              blend=_as_blend(blend), blend_per_split=per_split, split=split,
                              tokenizer=tokenizer, **options)
    builder = BlendedMegatronDatasetBuilder(MLMDataset, list(sizes),
                                            is_built_on_rank or (lambda: True), config)
    return [BlendedMLMDataset.from_megatron(d) if isinstance(d, BlendedDataset) else d
            for d in builder.build()]
