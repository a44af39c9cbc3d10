"""Masking statistics (rate, 80/10/10), whole-word groups, special tokens, schedules.

Expectations are computed here from the tokenizers themselves (special ids,
``word_ids()`` of a fresh encoding, the schedule formulas), never copied
from the code's output.
"""
import math

import numpy as np
import pytest

from alum.data import MLMDataset
from alum.data.masking import choose_positions
from alum.data.schedule import (ConstantMaskingRate, LinearMaskingRate, StepMaskingRate,
                                make_masking_schedule)


def sigma_bound(p, n, k=5.0):
    """k standard deviations of a binomial proportion (conservative for our draws)."""
    return k * math.sqrt(p * (1 - p) / n)


def originals(sample):
    """The unmasked ids: labels where predicted, inputs elsewhere."""
    ids = sample["input_ids"].numpy().copy()
    labels = sample["labels"].numpy()
    ids[labels != -100] = labels[labels != -100]
    return ids




@pytest.mark.parametrize("whole_word", [False, True])
@pytest.mark.parametrize("name", ["wordpiece", "bpe"])
def test_rate_and_80_10_10(tokenizers, indexed, name, whole_word):
    tok = tokenizers[name]
    special = np.array(sorted(set(tok.all_special_ids)))
    mask_id = tok.mask_token_id
    n_random_pool = len(tok) - len(special)
    ds = MLMDataset.from_prefix(indexed[name, "doc"], tok, 128, split="1,0,0", num_samples=3000,
                                whole_word_masking=whole_word, masking_rate=0.15)
    maskable = predicted = to_mask = to_random = unchanged = 0
    for i in range(len(ds)):
        s = ds[i]
        ids, labels, attn = s["input_ids"].numpy(), s["labels"].numpy(), s["attention_mask"].numpy()
        orig = originals(s)
        is_special = np.isin(orig, special)
        # special tokens and padding: never predicted, never changed
        assert (labels[is_special | (attn == 0)] == -100).all()
        assert (ids[is_special] == orig[is_special]).all()
        chosen = labels != -100
        maskable += int((~is_special & (attn == 1)).sum())
        predicted += int(chosen.sum())
        to_mask += int((ids[chosen] == mask_id).sum())
        replaced = chosen & (ids != orig) & (ids != mask_id)
        to_random += int(replaced.sum())
        unchanged += int((chosen & (ids == orig)).sum())
        # a random replacement is never a special token
        assert not np.isin(ids[replaced], special).any()
    assert predicted > 10_000
    rate = predicted / maskable
    tol = 0.01 if whole_word else sigma_bound(0.15, maskable)
    assert abs(rate - 0.15) < tol, rate
    # a random draw equals the original with probability 1/|pool|
    p_random = 0.1 * (1 - 1 / n_random_pool)
    assert abs(to_mask / predicted - 0.8) < sigma_bound(0.8, predicted)
    assert abs(to_random / predicted - p_random) < sigma_bound(p_random, predicted)
    assert abs(unchanged / predicted - (1 - 0.8 - p_random)) < sigma_bound(0.1, predicted)


def doc_word_groups(tok, sentences):
    """Token ids of a document and a word id per token, from fresh encodings of each
    stored sequence (the tokenizer's pre-tokenizer words, unique across sequences)."""
    ids, words, offset = [], [], 0
    for text in sentences:
        enc = tok(text, add_special_tokens=False)
        w = enc.word_ids()
        ids += enc["input_ids"]
        words += [offset + x for x in w]
        offset += max(w) + 1
    return ids, words


@pytest.mark.parametrize("layout", ["doc", "sent"])
@pytest.mark.parametrize("name", ["wordpiece", "bpe", "unigram"])
def test_whole_word_groups_never_split(tokenizers, indexed, corpus, name, layout):
    tok = tokenizers[name]
    special = sorted(set(tok.all_special_ids))
    n_docs = len(corpus)
    ds = {ww: MLMDataset.from_prefix(indexed[name, layout], tok, 512, split="1,0,0",
                                     num_samples=3 * n_docs, shuffle=False, packing="document",
                                     whole_word_masking=ww, masking_rate=0.2)
          for ww in (True, False)}
    split_words = {True: 0, False: 0}
    whole_multi = 0
    for i in range(3 * n_docs):
        doc = corpus[i % n_docs]
        ids, words = doc_word_groups(tok, doc if layout == "sent" else [" ".join(doc)])
        words = np.array(words)
        for ww, d in ds.items():
            s = d[i]
            orig = originals(s)
            n = len(ids)
            assert orig[1:n + 1].tolist() == ids  # one document per sample, in order
            chosen = s["labels"].numpy()[1:n + 1] != -100
            maskable = ~np.isin(ids, special)   # e.g. sentencepiece's <unk> inside a word
            for w in np.unique(words):
                c = chosen[(words == w) & maskable]
                if c.any() and not c.all():
                    split_words[ww] += 1
                elif ww and c.all() and c.size > 1:
                    whole_multi += 1
    assert split_words[True] == 0
    assert split_words[False] > 0   # the check can see a split when there is one
    assert whole_multi > 50         # multi-token words do get masked whole


def test_choose_positions_token_level_exact_budget():
    rng = np.random.default_rng(0)
    maskable = np.ones(200, dtype=bool)
    maskable[[0, 199]] = False
    counts = [choose_positions(maskable, 0.15, rng).size for _ in range(2000)]
    # 198 * 0.15 = 29.7: stochastic rounding gives 29 or 30, mean 29.7
    assert set(counts) <= {29, 30}
    assert abs(np.mean(counts) - 29.7) < 0.05
    assert choose_positions(maskable, 0.0, rng).size == 0
    assert choose_positions(np.zeros(5, bool), 0.5, rng).size == 0


def test_schedules():
    lin = LinearMaskingRate(start=0.05, end=0.25, num_steps=100)
    assert [lin(s) for s in (0, 25, 50, 100, 1000)] == pytest.approx([0.05, 0.10, 0.15, 0.25, 0.25])
    delayed = LinearMaskingRate(0.05, 0.25, 100, begin_step=50)
    assert [delayed(s) for s in (0, 50, 100, 150)] == pytest.approx([0.05, 0.05, 0.15, 0.25])
    step = StepMaskingRate([0.05, 0.15, 0.25], [10, 20])
    assert [step(s) for s in (0, 9, 10, 19, 20, 10**6)] == [0.05, 0.05, 0.15, 0.15, 0.25, 0.25]
    assert make_masking_schedule(0.15)(123) == 0.15
    assert make_masking_schedule(None) == ConstantMaskingRate(0.15)
    assert make_masking_schedule("linear:0.05:0.25:100") == lin
    assert make_masking_schedule("step:0.05,0.15,0.25@10,20") == step
    assert make_masking_schedule({"type": "linear", "start": 0.05, "end": 0.25,
                                  "num_steps": 100}) == lin
    for bad in ("linear:0.05:0.25", "cosine:1", "1.5", {"type": "cosine"}):
        with pytest.raises(ValueError):
            make_masking_schedule(bad)
    with pytest.raises(ValueError):
        StepMaskingRate([0.1], [5])


def test_dataset_follows_schedule(tokenizers, indexed):
    """With samples_per_step=G, sample idx is masked at step idx // G."""
    tok = tokenizers["wordpiece"]
    special = list(set(tok.all_special_ids))
    per_step, steps = 200, 10
    ds = MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 128, split="1,0,0",
                                num_samples=per_step * steps, samples_per_step=per_step,
                                masking_rate="linear:0.05:0.25:9")
    for step in range(steps):
        maskable = predicted = 0
        for i in range(step * per_step, (step + 1) * per_step):
            s = ds[i]
            orig = originals(s)
            maskable += int((~np.isin(orig, special) & (s["attention_mask"].numpy() == 1)).sum())
            predicted += int((s["labels"] != -100).sum())
        expected = 0.05 + 0.20 * min(step / 9, 1.0)
        assert abs(predicted / maskable - expected) < sigma_bound(expected, maskable), step
    # set_step overrides the derived step
    ds.set_step(0)
    low = sum(int((ds[i]["labels"] != -100).sum()) for i in range(1800, 2000))
    ds.set_step(None)
    high = sum(int((ds[i]["labels"] != -100).sum()) for i in range(1800, 2000))
    assert high > 3 * low
