"""Training and validation data of a run: MLM datasets (alum.data) and their loaders.

The train dataset is sized to the whole run (``train_steps x global batch``
samples; alum.data loops over the corpus and reshuffles each pass), so the
position in the data is a single number, the global samples consumed, and a
resumed run rebuilds the loader from it (``rank_indices``' ``consumed_samples``).
The masking step of each sample is derived from its index (``samples_per_step`` =
global batch), so the masking-rate schedule follows the optimizer step, also in
DataLoader workers and after a resume.

With no data path, the shipped sample corpus is tokenized (WordPiece, the
alum-tokenizer code) and indexed (the alum-preprocess code) into a cache
directory on first use.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Tuple

import torch
import torch.distributed as dist

from .config import DataConfig

logger = logging.getLogger("alum.pretrain")

SAMPLE_VOCAB_SIZE = 2048
"""WordPiece vocabulary of the sample corpus (62k tokens of KJV text)."""
SAMPLE_SPLIT = "90,10,0"
"""Document split of the sample corpus: its 82 chapters leave 949,50,1 almost no valid set."""
DEFAULT_SPLIT = "949,50,1"


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "alum", "pretrain_sample")


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def prepare_sample_corpus(cache_dir: Optional[str] = None) -> Tuple[str, str]:
    """(indexed-dataset prefix, tokenizer dir) of the sample corpus, built once per cache.

    Rank 0 builds, the others wait. Each output is written by the tools' own safe
    commit (tokenizer files, then ``.bin``/``.idx``), and a ``READY`` file is written
    last (atomically), so an interrupted preparation is redone rather than half-used.
    """
    from alum.atomic_write import atomic_write_text
    from alum.data.sample import sample_corpus_path

    cache_dir = os.path.abspath(os.path.expanduser(cache_dir or default_cache_dir()))
    tokenizer_dir = os.path.join(cache_dir, "tokenizer")
    prefix = os.path.join(cache_dir, "wiki_text_document")
    ready = os.path.join(cache_dir, "READY")
    if _is_rank0() and not os.path.isfile(ready):
        from alum.tools.preprocess import build_indexed_dataset
        from alum.tools.train_tokenizer import train_tokenizer

        os.makedirs(cache_dir, exist_ok=True)
        corpus = sample_corpus_path("wiki")
        logger.info("preparing the sample corpus in %s (once)", cache_dir)
        train_tokenizer([corpus], "wordpiece", SAMPLE_VOCAB_SIZE, tokenizer_dir, lowercase=True)
        build_indexed_dataset([corpus], tokenizer_dir, prefix, no_progress=True, no_resume=True)
        atomic_write_text(ready, "ok\n")
    _barrier()
    return prefix, tokenizer_dir


@dataclass
class RunData:
    """The datasets and tokenizer of a run."""

    train: Any
    valid: Optional[Any]
    tokenizer: Any
    tokenizer_path: str
    data_path: Tuple[str, ...]


def build_run_data(cfg: DataConfig, train_samples: int, samples_per_step: int,
                   seed: int) -> RunData:
    """Train/valid datasets for ``cfg`` (the sample corpus when ``data_path`` is empty).
    A missing or empty dataset, or a tokenizer that does not load, is a ``ValueError``
    naming the path."""
    from alum.data import MLMDataset, build_mlm_datasets

    if cfg.data_path:
        data_path, tokenizer_path = cfg.data_path, cfg.tokenizer
        split = cfg.split or DEFAULT_SPLIT
        cache = cfg.cache_dir
    else:
        prefix, tokenizer_path = prepare_sample_corpus(cfg.cache_dir)
        data_path = (prefix,)
        split = cfg.split or SAMPLE_SPLIT
        cache = os.path.dirname(prefix)
    for prefix in dataset_prefixes(data_path):
        check_dataset(prefix)
    tokenizer = load_tokenizer(tokenizer_path)
    options = dict(packing=cfg.packing, masking_rate=_masking_rate(cfg.masking_rate),
                   whole_word_masking=cfg.whole_word_masking, samples_per_step=samples_per_step,
                   path_to_cache=os.path.join(cache, "packed_index") if cache else None)
    if len(data_path) == 1:
        train = MLMDataset.from_prefix(data_path[0], tokenizer, cfg.seq_length, "train",
                                       num_samples=train_samples, random_seed=seed,
                                       split=split, **options)
        valid = MLMDataset.from_prefix(data_path[0], tokenizer, cfg.seq_length, "valid",
                                       random_seed=seed, split=split, **options)
    else:
        valid_samples = max(1, train_samples // 100)
        train, valid, _ = build_mlm_datasets(list(data_path), tokenizer, cfg.seq_length,
                                             sizes=(train_samples, valid_samples, 0),
                                             split=split, random_seed=seed, **options)
    if valid is not None and len(valid) == 0:
        valid = None
    return RunData(train, valid, tokenizer, os.path.abspath(tokenizer_path), tuple(data_path))


def dataset_prefixes(data_path: Tuple[str, ...]) -> Tuple[str, ...]:
    """The prefixes of a data path (a blend's weights left out)."""
    def is_weight(token: str) -> bool:
        try:
            float(token)
            return True
        except ValueError:
            return False

    return tuple(t for t in data_path if not is_weight(t))


def check_dataset(prefix: str) -> None:
    """One line (``ValueError``) for a dataset that is not there or holds no documents,
    before megatron-core's reader (an assertion, or "cannot mmap an empty file" without
    the path). The index header, megatron-core's format: magic, version (u64), dtype
    code (u8), sequence count (u64), document count (u64)."""
    import struct

    from alum.tools.indexed_output import INDEX_HEADER as _INDEX_MAGIC

    for ext in (".idx", ".bin"):
        if not os.path.isfile(prefix + ext):
            raise ValueError(f"DataConfig.data_path: dataset {prefix} not found: {prefix}{ext} "
                             f"does not exist (alum-preprocess writes PREFIX.bin and PREFIX.idx)")
    try:
        with open(prefix + ".idx", "rb") as f:
            header = f.read(len(_INDEX_MAGIC) + 8 + 1 + 8)
    except OSError as err:
        raise ValueError(f"DataConfig.data_path: cannot read {prefix}.idx: {err.strerror}") \
            from err
    if len(header) < len(_INDEX_MAGIC) + 17 or not header.startswith(_INDEX_MAGIC):
        raise ValueError(f"DataConfig.data_path: {prefix}.idx is not a megatron-core "
                         f"indexed-dataset index (bad header)")
    sequences = struct.unpack("<Q", header[-8:])[0]
    if sequences == 0 or os.path.getsize(prefix + ".bin") == 0:
        raise ValueError(f"DataConfig.data_path: dataset {prefix} holds no documents "
                         f"({prefix}.bin is empty)")


def load_tokenizer(path: str) -> Any:
    """``AutoTokenizer.from_pretrained(path)``, its failure told in one line naming the path."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise ValueError(f"DataConfig.tokenizer: {path} is not a directory (a tokenizer "
                         f"directory from alum-tokenizer or save_pretrained is expected)")
    try:
        return AutoTokenizer.from_pretrained(path)
    except Exception as err:  # transformers raises OSError, ValueError, TypeError, ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ValueError(f"DataConfig.tokenizer: cannot load a tokenizer from {path}: "
                         f"{first}") from err


def _masking_rate(text: str) -> Any:
    try:
        return float(text)
    except ValueError:
        return text


class IndexedSamples(torch.utils.data.Dataset):
    """The dataset's samples with their index in the training stream (``sample_index``):
    ALUM seeds each sample's random start with it (alum.pretrain.alum_layout)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample = dict(self.dataset[index])
        sample["sample_index"] = torch.tensor(int(index), dtype=torch.long)
        return sample


def train_batches(dataset: Any, micro_batch_size: int, consumed_samples: int,
                  dp_rank: int, dp_size: int, num_workers: int) -> Iterator[dict]:
    """This rank's micro-batches from ``consumed_samples`` on (global order, Megatron's)."""
    from alum.data import DataParallelSampler, mlm_collate

    sampler = DataParallelSampler(len(dataset), rank=dp_rank, world_size=dp_size,
                                  micro_batch_size=micro_batch_size, drop_last=True,
                                  consumed_samples=consumed_samples)
    # A generator of its own: creating a DataLoader iterator draws a base seed from the
    # generator, and from the global one that draw would shift dropout and ALUM's noise
    # after a resume (the iterator is rebuilt there, not in the uninterrupted run).
    generator = torch.Generator().manual_seed(consumed_samples)
    loader = torch.utils.data.DataLoader(IndexedSamples(dataset), batch_size=micro_batch_size,
                                         sampler=sampler,
                                         collate_fn=mlm_collate, num_workers=num_workers,
                                         drop_last=True, generator=generator)
    return iter(loader)


def valid_batches(dataset: Any, micro_batch_size: int, max_batches: int, dp_rank: int,
                  dp_size: int) -> Iterator[dict]:
    """The first ``max_batches`` micro-batches of this rank's validation slice (fixed)."""
    from alum.data import rank_indices, mlm_collate

    indices = rank_indices(len(dataset), dp_rank, dp_size, micro_batch_size, drop_last=False)
    for b in range(max_batches):
        chunk = indices[b * micro_batch_size:(b + 1) * micro_batch_size]
        if not chunk:
            return
        yield mlm_collate([dataset[i] for i in chunk])
