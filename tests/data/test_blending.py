"""Weighted blends: proportions follow the weights in every prefix, deterministic, epoch-aware."""
import numpy as np
import pytest
import torch

from alum.data import BlendedMLMDataset, MLMDataset, blending_indices, build_mlm_datasets
from alum.data.blending import _blending_indices_numpy


@pytest.mark.parametrize("weights", [[0.3, 0.7], [1, 1, 1], [5, 1, 0.5, 3.5]])
def test_blending_indices_follow_weights(weights):
    size = 2000
    w = np.asarray(weights, dtype=float) / sum(weights)
    index, sample = blending_indices(weights, size)
    counts = np.bincount(index, minlength=len(w))
    assert np.all(np.abs(counts - w * size) <= 1.0)
    # every prefix is close to its share, not only the total
    running = np.zeros(len(w))
    for i, d in enumerate(index):
        running[d] += 1
        assert np.all(np.abs(running - w * (i + 1)) <= 2.0)
    # sample indices count up within each dataset
    for d in range(len(w)):
        assert sample[index == d].tolist() == list(range(counts[d]))
    # the NumPy fallback is the same algorithm as megatron's C++ helper
    ref_index, ref_sample = _blending_indices_numpy(w, size)
    assert np.array_equal(index, ref_index) and np.array_equal(sample, ref_sample)


def test_blended_dataset_draws_member_samples(tokenizers, indexed):
    tok = tokenizers["bpe"]
    members = [MLMDataset.from_prefix(indexed["bpe", layout], tok, 64, num_samples=600)
               for layout in ("doc", "sent")]
    blend = BlendedMLMDataset(members, [0.25, 0.75], size=800)
    ids = torch.stack([blend[i]["dataset_id"] for i in range(len(blend))])
    assert len(blend) == 800
    assert abs(int((ids == 0).sum()) - 200) <= 1
    # blend position -> member sample, masked with the member's stream
    seen = {0: 0, 1: 0}
    for i in range(0, 800, 37):
        s = blend[i]
        d = int(s["dataset_id"])
        j = int(blend.dataset_sample_index[i])
        ref = members[d].get_sample(j, epoch=0, step=0)
        assert torch.equal(s["input_ids"], ref["input_ids"])
        seen[d] += 1
    assert seen[0] and seen[1]
    before = blend[5]["labels"].clone()
    blend.set_epoch(1)
    assert members[0].epoch == members[1].epoch == 1
    assert not torch.equal(before, blend[5]["labels"])


def test_build_blend_from_megatron_list(tokenizers, indexed):
    tok = tokenizers["unigram"]
    spec = ["30", indexed["unigram", "doc"], "70", indexed["unigram", "sent"]]
    sizes = (1000, 40, 10)
    first = build_mlm_datasets(spec, tok, 64, sizes=sizes, split="80,15,5")
    second = build_mlm_datasets(spec, tok, 64, sizes=sizes, split="80,15,5")
    for ds, size in zip(first, sizes):
        assert isinstance(ds, BlendedMLMDataset)
        assert len(ds) >= size   # megatron rounds each member's share up
    train = first[0]
    ids = np.array([int(train.dataset_index[i]) for i in range(len(train))])
    assert abs((ids == 0).sum() - 0.3 * len(train)) <= 1
    for i in (0, 1, 17, 999):   # same seed, same samples
        assert torch.equal(first[0][i]["input_ids"], second[0][i]["input_ids"])
        assert torch.equal(first[0][i]["labels"], second[0][i]["labels"])
    batch = torch.utils.data.default_collate([train[i] for i in range(4)])
    assert batch["input_ids"].shape == (4, 64) and batch["dataset_id"].shape == (4,)


def test_blend_schedule_step_from_blend_position(tokenizers, indexed):
    tok = tokenizers["wordpiece"]
    members = [MLMDataset.from_prefix(indexed["wordpiece", layout], tok, 64, num_samples=700,
                                      samples_per_step=100, masking_rate="step:0.0,0.3@5")
               for layout in ("doc", "sent")]
    blend = BlendedMLMDataset(members, [0.5, 0.5], size=1000)
    early = sum(int((blend[i]["labels"] != -100).sum()) for i in range(0, 500))
    late = sum(int((blend[i]["labels"] != -100).sum()) for i in range(500, 1000))
    assert early == 0 and late > 0


def test_unweighted_blend_and_blend_per_split(tokenizers, indexed):
    tok = tokenizers["wordpiece"]
    a, b = indexed["wordpiece", "sent"], indexed["wordpiece", "doc"]
    train, valid, test = build_mlm_datasets([a, b], tok, 64, split="80,20,0")
    # no weights: one pass over each member, in proportion to their lengths
    assert isinstance(train, BlendedMLMDataset) and test is None
    assert len(train) == sum(len(m) for m in train.datasets)
    ids = np.asarray(train.dataset_index)
    assert [(ids == k).sum() for k in range(2)] == [len(m) for m in train.datasets]
    train, valid, test = build_mlm_datasets(None, tok, 64, sizes=(100, None, None),
                                            blend_per_split=[["1", a, "3", b], [b], None])
    assert isinstance(train, BlendedMLMDataset) and len(train) == 100
    assert abs(int((np.asarray(train.dataset_index) == 1).sum()) - 75) <= 1
    assert isinstance(valid, MLMDataset) and test is None
