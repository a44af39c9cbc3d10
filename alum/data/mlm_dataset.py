"""Masked-LM dataset over megatron-core indexed datasets (packing + dynamic masking).

:class:`MLMDataset` is a megatron-core ``MegatronDataset`` (the "mid-level"
dataset of megatron's three levels), so megatron-core's
``BlendedMegatronDatasetBuilder`` can build it: the builder opens the
``IndexedDataset`` (:meth:`MLMDataset.build_low_level_dataset`), counts documents
(:meth:`MLMDataset.numel_low_level_dataset`), cuts the train/valid/test splits by
document, and blends several prefixes by weight (see :mod:`alum.data.blending`).

What megatron-core's own ``MaskedWordPieceDataset``/``BERTMaskedWordPieceDataset``
do not fit, and this class does instead (details in ``docs/mlm_data.md``):

* word boundaries: they test ``inv_vocab[t].startswith("##")`` (WordPiece only);
  here the tokenizer's own convention is read into tables
  (:mod:`alum.data.word_boundaries`), so whole-word masking works for byte-level
  BPE and sentencepiece too;
* masking: their mask depends on ``seed + index`` only (the same mask every
  epoch) at a fixed rate; here it depends on (seed, dataset, epoch, index), and
  the rate follows a schedule (:mod:`alum.data.schedule`);
* packing: their ``build_mapping`` overshoots the target length and truncates,
  drops documents holding a sentence over 512 tokens and cannot pack across
  documents; :mod:`alum.data.packing` never exceeds the length, drops nothing,
  and offers both layouts;
* their sample index needs ``torch.distributed`` to be initialized and a
  writable cache directory; this class works in a single process, and caches
  only when ``path_to_cache`` is set.
"""
from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
from megatron.core.datasets.indexed_dataset import IndexedDataset
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from ..atomic_write import atomic_path
from .masking import IGNORE_INDEX, MaskingConfig, mask_tokens, sample_rng
from .packing import PACKING_MODES, PackedIndex, assemble, pack_sequences
from .schedule import describe_schedule, make_masking_schedule
from .splits import split_documents, split_index
from .vocab import MLMVocab
from .word_boundaries import word_start_positions

logger = logging.getLogger(__name__)

# Keys that separate the RNG streams of one dataset (the first key is the seed).
_MASK_STREAM = 0
_ORDER_STREAM = 1


@dataclass
class MLMDatasetConfig(BlendedMegatronDatasetConfig):
    """megatron-core's dataset config plus the MLM options.

    Inherited fields used here: ``random_seed``, ``sequence_length`` (the model's
    maximum length, [CLS]/[SEP] included), ``blend`` / ``blend_per_split``,
    ``split`` (train/valid/test weights over documents, e.g. ``"949,50,1"``;
    required with ``blend``), ``path_to_cache``, ``mmap_bin_files``, ``tokenizer``
    (a HF tokenizer, turned into an :class:`~alum.data.vocab.MLMVocab`).
    """

    packing: str = "document"
    """``"document"``: a sample holds one document's consecutive sequences;
    ``"cross_document"``: fill samples across documents with a separator between
    them (see :mod:`alum.data.packing`)."""

    masking_rate: Any = 0.15
    """A rate, or a schedule spec for :func:`~alum.data.schedule.make_masking_schedule`
    (e.g. ``"linear:0.05:0.25:100000"``, a dict, or a callable ``step -> rate``)."""

    mask_token_prob: float = 0.8
    """Chosen positions replaced by the mask token."""

    random_token_prob: float = 0.1
    """Chosen positions replaced by a random non-special token (the rest stay)."""

    whole_word_masking: bool = False
    """Choose whole words, with word starts from the tokenizer's convention."""

    shuffle: bool = True
    """Visit packed samples in a seeded random order, new for each epoch and each
    pass over the data; False keeps document order."""

    samples_per_step: Optional[int] = None
    """Global batch size. When set, the masking-rate step of sample ``idx`` in
    epoch ``e`` is ``(e * len(dataset) + idx) // samples_per_step``, which is the
    optimizer step that consumes it under :mod:`alum.data.distributed`'s order
    (and works in DataLoader workers). A step given to :meth:`MLMDataset.set_step`
    overrides it; with neither, the step is 0."""

    pad_to_max_length: bool = True
    """Pad every sample to ``sequence_length``; False returns unpadded samples
    (pad them with :class:`~alum.data.collate.MLMCollator`)."""

    masking_schedule: Any = field(init=False, default=None)
    """The schedule built from ``masking_rate`` (set in ``__post_init__``)."""

    masking: MaskingConfig = field(init=False, default=None)
    """The corruption config built from the fields above."""

    masking_description: str = field(init=False, default="")
    """JSON-able description of the masking options (part of the dataset hash)."""

    def __post_init__(self) -> None:
        if self.blend is None and not (self.blend_per_split and any(self.blend_per_split)):
            raise ValueError("MLMDatasetConfig needs blend=([prefix, ...], weights or None) or "
                             "blend_per_split; megatron's mock mode is not supported")
        if self.tokenizer is None:
            raise ValueError("MLMDatasetConfig needs a tokenizer (HF tokenizer or MLMVocab)")
        if not isinstance(self.tokenizer, MLMVocab):
            self.tokenizer = MLMVocab.from_tokenizer(self.tokenizer,
                                                     whole_word=self.whole_word_masking)
        elif self.whole_word_masking and self.tokenizer.word_boundaries is None:
            raise ValueError("whole_word_masking needs an MLMVocab built with whole_word=True")
        if self.packing not in PACKING_MODES:
            raise ValueError(f"packing must be one of {PACKING_MODES}, got {self.packing!r}")
        if int(self.sequence_length) < 3:
            raise ValueError(f"sequence_length must be >= 3, got {self.sequence_length}")
        if self.samples_per_step is not None and int(self.samples_per_step) < 1:
            raise ValueError(f"samples_per_step must be >= 1, got {self.samples_per_step}")
        self.masking_schedule = make_masking_schedule(self.masking_rate)
        self.masking = MaskingConfig(self.mask_token_prob, self.random_token_prob,
                                     self.whole_word_masking)
        self.masking_description = repr(OrderedDict(
            schedule=describe_schedule(self.masking_schedule), masking=repr(self.masking),
            samples_per_step=self.samples_per_step))
        super().__post_init__()


def stream_salt(indexed_dataset: IndexedDataset, dataset_path: Optional[str],
                split_name: str) -> int:
    """The key that separates the sample-order and masking RNG streams of one dataset
    split from another's: the prefix's file name, the sequence, document and token
    counts, and the split. Not the folder: the same data copied or moved elsewhere (another
    mount, another cache directory) must give the same samples, or a run resumed there
    would continue with another order and other masks."""
    lengths = indexed_dataset.sequence_lengths
    documents = indexed_dataset.document_indices.shape[0] - 1
    key = (f"{os.path.basename(dataset_path or '')}|{len(lengths)}|{documents}|"
           f"{int(np.asarray(lengths).sum(dtype=np.int64))}|{split_name}")
    return zlib.crc32(key.encode())


class MLMDataset(MegatronDataset):
    """Packed, dynamically masked MLM samples from one indexed dataset and one split.

    Built by megatron-core's builder (see :func:`alum.data.blending.build_mlm_datasets`)
    or directly with :meth:`from_prefix`.

    ``dataset[idx]`` returns a dict of tensors: ``input_ids``, ``attention_mask``,
    ``token_type_ids`` (zeros), ``labels`` (-100 where not predicted) and
    ``loss_mask`` (float, 1.0 where predicted). It is a pure function of
    (seed, dataset identity, split, epoch, idx) and the masking step.

    Args (megatron's ``MegatronDataset`` signature):
        indexed_dataset: the ``IndexedDataset``.
        dataset_path: its prefix (its file name, not its folder, keys the RNG streams:
            ``stream_salt``).
        indexed_indices: the document ids of this split.
        num_samples: length of the dataset; None for one pass over the packed
            samples. A larger value loops over the data (each pass reshuffled;
            masks differ because indices differ).
        index_split: the megatron ``Split``.
        config: :class:`MLMDatasetConfig`.
    """

    def __init__(self, indexed_dataset: IndexedDataset, dataset_path: Optional[str],
                 indexed_indices: np.ndarray, num_samples: Optional[int], index_split: Split,
                 config: MLMDatasetConfig) -> None:
        super().__init__(indexed_dataset, dataset_path, indexed_indices, num_samples,
                         index_split, config)
        self.vocab: MLMVocab = config.tokenizer
        self.packed = self._build_packed_index()
        self.num_packed = len(self.packed)
        if num_samples is None:
            self._length = self.num_packed
        else:
            if num_samples > 0 and self.num_packed == 0:
                raise ValueError(
                    f"the {index_split.name} split of {dataset_path} has no tokens "
                    f"({len(indexed_indices)} documents under split {config.split!r}) but "
                    f"{num_samples} samples were requested; give the split more weight or "
                    f"request 0 samples")
            self._length = int(num_samples)
        self.epoch = 0
        self.step: Optional[int] = None
        self._salt = stream_salt(indexed_dataset, dataset_path, index_split.name)
        self._orders: "OrderedDict[tuple, np.ndarray]" = OrderedDict()

    # ---------------------------------------------------------------- megatron hooks
    @staticmethod
    def numel_low_level_dataset(low_level_dataset: IndexedDataset) -> int:
        """Documents, not sequences: megatron's builder then splits by document."""
        return low_level_dataset.document_indices.shape[0] - 1

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: MLMDatasetConfig) -> IndexedDataset:
        return IndexedDataset(dataset_path, mmap=config.mmap_bin_files)

    @staticmethod
    def _key_config_attributes():
        return MegatronDataset._key_config_attributes() + [
            "packing", "shuffle", "pad_to_max_length", "masking_description"]

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_prefix(cls, path_prefix: str, tokenizer: Any, sequence_length: int,
                    split_name: str = "train", num_samples: Optional[int] = None,
                    random_seed: int = 1234, split: str = "949,50,1",
                    **options: Any) -> "MLMDataset":
        """One split of one indexed dataset, without megatron's builder.

        Args:
            path_prefix: ``PREFIX`` of ``PREFIX.bin``/``PREFIX.idx``.
            tokenizer: HF tokenizer or :class:`MLMVocab`.
            sequence_length: model length, special tokens included.
            split_name: ``"train"``, ``"valid"`` or ``"test"``.
            num_samples: see the class docstring.
            split: train/valid/test weights over documents.
            **options: any other :class:`MLMDatasetConfig` field (``packing``,
                ``masking_rate``, ``whole_word_masking``, ...).
        """
        config = MLMDatasetConfig(random_seed=random_seed, sequence_length=sequence_length,
                                  blend=([path_prefix], None), split=split, tokenizer=tokenizer,
                                  **options)
        low = cls.build_low_level_dataset(path_prefix, config)
        which = split_index(split_name)
        docs = split_documents(cls.numel_low_level_dataset(low), config.split)[which]
        return cls(low, path_prefix, docs, num_samples, Split(which), config)

    def _build_packed_index(self) -> PackedIndex:
        capacity = self.config.sequence_length - 2
        cache = None
        if self.config.path_to_cache:
            cache = os.path.join(self.config.path_to_cache,
                                 f"{self.unique_description_hash}-{type(self).__name__}-packed.npz")
            if os.path.isfile(cache):
                with np.load(cache) as f:
                    return PackedIndex(f["segment_sequence"], f["segment_offset"],
                                       f["segment_length"], f["sample_pointer"])
        packed = pack_sequences(self.dataset.document_indices, self.dataset.sequence_lengths,
                                self.indices, capacity, self.config.packing)
        if cache:
            os.makedirs(self.config.path_to_cache, exist_ok=True)
            with open(os.path.join(self.config.path_to_cache, f"{self.unique_description_hash}"
                                   f"-{type(self).__name__}-description.txt"), "w") as f:
                f.write(self.unique_description)
            with atomic_path(cache) as tmp, open(tmp, "wb") as f:
                np.savez(f, segment_sequence=packed.segment_sequence,
                         segment_offset=packed.segment_offset,
                         segment_length=packed.segment_length,
                         sample_pointer=packed.sample_pointer)
        return packed

    # ---------------------------------------------------------------- epoch / step
    def set_epoch(self, epoch: int) -> None:
        """New order and new masks for this epoch (call before creating the iterator:
        DataLoader workers copy the dataset when the iterator starts)."""
        self.epoch = int(epoch)

    def set_step(self, step: Optional[int]) -> None:
        """Optimizer step for the masking-rate schedule, when ``samples_per_step`` is not set.
        (With DataLoader workers, only values set before the iterator starts reach them.)"""
        self.step = None if step is None else int(step)

    def masking_step(self, idx: int, epoch: Optional[int] = None) -> int:
        """The schedule step used for sample ``idx`` (see ``MLMDatasetConfig.samples_per_step``)."""
        if self.step is not None:
            return self.step
        if self.config.samples_per_step:
            epoch = self.epoch if epoch is None else epoch
            return (epoch * len(self) + int(idx)) // int(self.config.samples_per_step)
        return 0

    # ---------------------------------------------------------------- samples
    def __len__(self) -> int:
        return self._length

    def packed_position(self, idx: int, epoch: Optional[int] = None) -> int:
        """Which packed sample dataset index ``idx`` shows in ``epoch``."""
        epoch = self.epoch if epoch is None else epoch
        passes, j = divmod(int(idx), self.num_packed)
        if not self.config.shuffle:
            return j
        key = (epoch, passes)
        order = self._orders.get(key)
        if order is None:
            order = sample_rng(self.config.random_seed, self._salt, _ORDER_STREAM, epoch,
                               passes).permutation(self.num_packed)
            self._orders[key] = order
            while len(self._orders) > 4:
                self._orders.popitem(last=False)
        return int(order[j])

    def tokens(self, idx: int, epoch: Optional[int] = None):
        """Unmasked ``[CLS] ... [SEP]`` ids of sample ``idx`` and the sequence-start flags."""
        segments = self.packed.segments(self.packed_position(idx, epoch))
        return assemble(lambda s, o, n: self.dataset.get(s, offset=o, length=n), segments,
                        self.vocab.cls, self.vocab.sep)

    def get_sample(self, idx: int, epoch: Optional[int] = None,
                   step: Optional[int] = None) -> Dict[str, torch.Tensor]:
        """Sample ``idx`` of ``epoch`` (default: the current one) masked at ``step``'s rate."""
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} samples")
        epoch = self.epoch if epoch is None else int(epoch)
        if step is None:
            step = self.masking_step(idx, epoch)
        ids, sequence_starts = self.tokens(idx, epoch)
        vocab, config = self.vocab, self.config
        if ids.size and (ids.max() >= vocab.vocab_size or ids.min() < 0):
            raise ValueError(f"{self.dataset_path} holds token id {int(ids.max())} outside the "
                             f"tokenizer's {vocab.vocab_size} ids: was it made with another "
                             f"tokenizer?")
        maskable = ~vocab.is_special[ids]
        word_starts = None
        if config.whole_word_masking:
            word_starts = word_start_positions(ids, vocab.word_boundaries, sequence_starts)
        rate = float(config.masking_schedule(step))
        rng = sample_rng(config.random_seed, self._salt, _MASK_STREAM, epoch, idx)
        masked, labels = mask_tokens(ids, maskable, rate, rng, vocab.mask, vocab.random_ids,
                                     word_starts, config.masking)
        return self._to_tensors(masked, labels)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        return self.get_sample(int(idx))

    def _to_tensors(self, ids: np.ndarray, labels: np.ndarray) -> Dict[str, torch.Tensor]:
        n = ids.size
        length = self.config.sequence_length if self.config.pad_to_max_length else n
        input_ids = np.full(length, self.vocab.pad, dtype=np.int64)
        input_ids[:n] = ids
        out_labels = np.full(length, IGNORE_INDEX, dtype=np.int64)
        out_labels[:n] = labels
        attention = np.zeros(length, dtype=np.int64)
        attention[:n] = 1
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(attention),
            "token_type_ids": torch.zeros(length, dtype=torch.long),
            "labels": torch.from_numpy(out_labels),
            "loss_mask": torch.from_numpy((out_labels != IGNORE_INDEX).astype(np.float32)),
        }
