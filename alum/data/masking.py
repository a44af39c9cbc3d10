"""BERT masking (Devlin et al. 2019, Sec. 3.1 and App. A.1), token-level or whole-word.

Of the maskable positions (not special, not padding), a fraction ``rate`` is
chosen for prediction; each chosen position becomes ``[MASK]`` with probability
0.8, a random token with 0.1, and stays unchanged with 0.1. Labels hold the
original id at chosen positions and -100 elsewhere (PyTorch's
``ignore_index``).

How many positions: ``n * rate`` rounded *stochastically* (floor plus a
Bernoulli of the fraction), so the expected rate is exactly ``rate`` also for
short sequences, where BERT's ``max(1, round(n * rate))`` over-masks.

Whole-word masking: positions are grouped into words (a group starts at a
word-start position, see :mod:`alum.data.word_boundaries`); groups are visited
in random order and taken whole while they fit in the budget, as in Google's
``create_pretraining_data.py`` (groups that do not fit are skipped). Token-level
masking is the same procedure with one-token groups. The 80/10/10 choice is
made per token, as in both reference implementations.

Randomness comes from a ``numpy.random.Generator`` that the caller seeds; the
datasets seed it from (seed, dataset, epoch, index), so a mask is a pure
function of those and a new epoch draws a new mask (dynamic masking, RoBERTa
Sec. 4.1).
"""
from __future__ import annotations

import dataclasses
from typing import Optional, Tuple

import numpy as np

IGNORE_INDEX = -100


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """How chosen positions are corrupted."""

    mask_token_prob: float = 0.8
    """Probability that a chosen position becomes the mask token."""
    random_token_prob: float = 0.1
    """Probability that a chosen position becomes a random (non-special) token;
    the rest, ``1 - mask_token_prob - random_token_prob``, stay unchanged."""
    whole_word: bool = False
    """Choose whole words (groups of sub-words) instead of single tokens."""

    def __post_init__(self) -> None:
        for name in ("mask_token_prob", "random_token_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value!r}")
        if self.mask_token_prob + self.random_token_prob > 1.0 + 1e-12:
            raise ValueError("mask_token_prob + random_token_prob must be <= 1, got "
                             f"{self.mask_token_prob} + {self.random_token_prob}")


def _stochastic_round(x: float, rng: np.random.Generator) -> int:
    base = int(np.floor(x))
    return base + int(rng.random() < x - base)


def choose_positions(maskable: np.ndarray, rate: float, rng: np.random.Generator,
                     word_starts: Optional[np.ndarray] = None) -> np.ndarray:
    """Positions chosen for prediction (sorted int64).

    Args:
        maskable: bool per position; False for special tokens and padding.
        rate: target fraction of maskable positions, in [0, 1].
        rng: the generator to draw from.
        word_starts: bool per position, True where a word starts (special tokens
            that frame the text must be marked, as
            :func:`~alum.data.word_boundaries.word_start_positions` does); None
            for token-level masking.
    """
    maskable = np.asarray(maskable, dtype=bool)
    candidates = np.flatnonzero(maskable)
    n = candidates.size
    if n == 0 or rate <= 0.0:
        return np.zeros(0, dtype=np.int64)
    budget = min(_stochastic_round(n * float(rate), rng), n)
    if budget == 0:
        return np.zeros(0, dtype=np.int64)
    if word_starts is None:
        return np.sort(rng.permutation(candidates)[:budget]).astype(np.int64)

    # Words over the whole sequence (the tables mark [CLS]/[SEP]/... as words of
    # their own); a group's size is its number of maskable tokens, so a word
    # holding a non-maskable piece (sentencepiece's <unk> inside a word) is still
    # chosen or left whole, minus that piece.
    starts = np.asarray(word_starts, dtype=bool).copy()
    starts[0] = True
    word_of = np.cumsum(starts)[candidates] - 1
    _, group_first, sizes = np.unique(word_of, return_index=True, return_counts=True)
    order = rng.permutation(group_first.size)
    # Take groups in random order while they fit; vectorised over the prefix
    # that fits, then a short loop that skips groups too large for what is left.
    cumulative = np.cumsum(sizes[order])
    k = int(np.searchsorted(cumulative, budget, side="right"))
    taken = list(order[:k])
    total = int(cumulative[k - 1]) if k else 0
    for g in order[k:]:
        if total == budget:
            break
        if total + sizes[g] <= budget:
            taken.append(g)
            total += int(sizes[g])
    chosen = np.zeros(n, dtype=bool)
    for g in taken:
        chosen[group_first[g]:group_first[g] + sizes[g]] = True
    return candidates[chosen].astype(np.int64)


def apply_mask(input_ids: np.ndarray, positions: np.ndarray, rng: np.random.Generator,
               mask_id: int, random_ids: np.ndarray,
               config: MaskingConfig = MaskingConfig()) -> Tuple[np.ndarray, np.ndarray]:
    """Corrupts ``positions`` 80/10/10 and builds the labels.

    Returns:
        (masked input ids, labels) as int64 arrays; labels are -100 off ``positions``.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    masked = ids.copy()
    labels = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
    if positions.size == 0:
        return masked, labels
    labels[positions] = ids[positions]
    u = rng.random(positions.size)
    to_mask = u < config.mask_token_prob
    to_random = (~to_mask) & (u < config.mask_token_prob + config.random_token_prob)
    masked[positions[to_mask]] = mask_id
    n_random = int(to_random.sum())
    if n_random:
        masked[positions[to_random]] = random_ids[rng.integers(0, random_ids.size, n_random)]
    return masked, labels


def mask_tokens(input_ids: np.ndarray, maskable: np.ndarray, rate: float,
                rng: np.random.Generator, mask_id: int, random_ids: np.ndarray,
                word_starts: Optional[np.ndarray] = None,
                config: MaskingConfig = MaskingConfig()) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`choose_positions` then :func:`apply_mask` on one sequence.

    ``word_starts`` is used only when ``config.whole_word`` is True.
    """
    positions = choose_positions(maskable, rate, rng,
                                 word_starts if config.whole_word else None)
    return apply_mask(input_ids, positions, rng, mask_id, random_ids, config)


def sample_rng(*keys: int) -> np.random.Generator:
    """A generator that depends only on the integer keys (seed, dataset, epoch, index, ...)."""
    return np.random.default_rng(np.random.SeedSequence([int(k) & 0xFFFFFFFFFFFFFFFF
                                                         for k in keys]))
