"""MLM data for pre-training: packed, dynamically masked samples from indexed datasets.

Modules (one idea each):

* :mod:`.word_boundaries` - word starts from the tokenizer's own convention.
* :mod:`.vocab` - special ids and per-vocab tables read once from a HF tokenizer.
* :mod:`.schedule` - masking-rate schedules (constant, linear, step).
* :mod:`.masking` - BERT 80/10/10 masking, token-level or whole-word.
* :mod:`.packing` - packing sequences up to the model length.
* :mod:`.splits` - train/valid/test splits by document (megatron's arithmetic).
* :mod:`.mlm_dataset` - :class:`MLMDataset`, a megatron-core ``MegatronDataset``.
* :mod:`.blending` - weighted blends and the one-call builder.
* :mod:`.distributed` - each data-parallel rank its slice.
* :mod:`.collate` - batching.

Names are imported lazily: the masking and packing helpers do not pull in
megatron-core (whose import takes seconds); the datasets do.
"""
from __future__ import annotations

from alum.lazy_exports import lazy_getattr

_EXPORTS = {
    "WordBoundaryConvention": "word_boundaries",
    "WordBoundaryTables": "word_boundaries",
    "detect_convention": "word_boundaries",
    "build_word_boundary_tables": "word_boundaries",
    "word_start_positions": "word_boundaries",
    "MLMVocab": "vocab",
    "ConstantMaskingRate": "schedule",
    "LinearMaskingRate": "schedule",
    "StepMaskingRate": "schedule",
    "make_masking_schedule": "schedule",
    "MaskingConfig": "masking",
    "IGNORE_INDEX": "masking",
    "choose_positions": "masking",
    "apply_mask": "masking",
    "mask_tokens": "masking",
    "PackedIndex": "packing",
    "pack_sequences": "packing",
    "PACKING_MODES": "packing",
    "split_documents": "splits",
    "MLMDataset": "mlm_dataset",
    "MLMDatasetConfig": "mlm_dataset",
    "BlendedMLMDataset": "blending",
    "blending_indices": "blending",
    "build_mlm_datasets": "blending",
    "set_epoch": "blending",
    "rank_indices": "distributed",
    "rank_slice": "distributed",
    "DataParallelSampler": "distributed",
    "MLMCollator": "collate",
    "mlm_collate": "collate",
}

__all__ = sorted(_EXPORTS)


__getattr__ = lazy_getattr(__name__, _EXPORTS)
