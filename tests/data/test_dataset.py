"""MLMDataset: framing, lengths, determinism, dynamic masking, document splits, DP slices."""
import os

import numpy as np
import pytest
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset

from alum.data import (MLMCollator, MLMDataset, build_mlm_datasets, mlm_collate, rank_indices,
                       rank_slice, set_epoch, split_documents)
from alum.data.packing import SEPARATOR


def originals(sample):
    ids = sample["input_ids"].numpy().copy()
    labels = sample["labels"].numpy()
    ids[labels != -100] = labels[labels != -100]
    return ids


@pytest.mark.parametrize("packing", ["document", "cross_document"])
@pytest.mark.parametrize("name,cls_tok,sep_tok", [("wordpiece", "[CLS]", "[SEP]"),
                                                  ("bpe", "<s>", "</s>"),
                                                  ("unigram", "<s>", "</s>")])
def test_framing_and_length(tokenizers, indexed, name, cls_tok, sep_tok, packing):
    tok = tokenizers[name]
    cls_id, sep_id = tok.convert_tokens_to_ids(cls_tok), tok.convert_tokens_to_ids(sep_tok)
    pad_id = tok.pad_token_id
    for length in (16, 64):
        ds = MLMDataset.from_prefix(indexed[name, "sent"], tok, length, split="1,0,0",
                                    packing=packing)
        total_content = 0
        for i in range(len(ds)):
            s = ds[i]
            assert set(s) == {"input_ids", "attention_mask", "token_type_ids", "labels",
                              "loss_mask"}
            assert all(v.shape == (length,) for v in s.values())
            n = int(s["attention_mask"].sum())
            assert s["attention_mask"][:n].all() and not s["attention_mask"][n:].any()
            orig = originals(s)
            assert orig[0] == cls_id and orig[n - 1] == sep_id
            assert (s["input_ids"][n:] == pad_id).all()
            assert (s["labels"][n:] == -100).all()
            assert (s["token_type_ids"] == 0).all()
            assert torch.equal(s["loss_mask"] > 0, s["labels"] != -100)
            # separators between documents only in cross-document packing
            inner_sep = int((orig[1:n - 1] == sep_id).sum())
            if packing == "document":
                assert inner_sep == 0
            total_content += n - 2 - inner_sep
        # every token of the corpus appears once (one pass, shuffled or not)
        low = IndexedDataset(indexed[name, "sent"])
        assert total_content == int(low.sequence_lengths.sum())


def test_same_seed_same_batches_across_workers(tokenizers, indexed):
    tok = tokenizers["bpe"]

    def batches(seed, workers, epoch=0):
        ds = MLMDataset.from_prefix(indexed["bpe", "doc"], tok, 64, random_seed=seed,
                                    whole_word_masking=True)
        ds.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(ds, batch_size=8, collate_fn=mlm_collate,
                                             num_workers=workers)
        return [b for _, b in zip(range(6), loader)]

    a, b = batches(7, 0), batches(7, 2)
    for x, y in zip(a, b):
        for key in x:
            assert torch.equal(x[key], y[key])
    c = batches(8, 0)
    assert not torch.equal(a[0]["input_ids"], c[0]["input_ids"])


def test_new_epoch_new_masks_same_data(tokenizers, indexed):
    tok = tokenizers["wordpiece"]
    ds = MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 64, split="1,0,0",
                                shuffle=False)
    e0 = [ds[i] for i in range(len(ds))]
    again = [ds.get_sample(i, epoch=0) for i in range(len(ds))]
    ds.set_epoch(1)
    e1 = [ds[i] for i in range(len(ds))]
    for x, y in zip(e0, again):
        assert torch.equal(x["labels"], y["labels"]) and torch.equal(x["input_ids"], y["input_ids"])
    same_mask = sum(torch.equal(x["labels"] != -100, y["labels"] != -100) for x, y in zip(e0, e1))
    assert same_mask < 0.1 * len(ds)
    for x, y in zip(e0, e1):      # unshuffled: same text, new mask
        assert np.array_equal(originals(x), originals(y))
    # shuffled: a new order each epoch, over the same samples
    sh = MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 64, split="1,0,0")
    order0 = [sh.packed_position(i, 0) for i in range(len(sh))]
    order1 = [sh.packed_position(i, 1) for i in range(len(sh))]
    assert order0 != order1 and sorted(order0) == sorted(order1) == list(range(len(sh)))


def test_moved_data_same_samples_other_data_other_streams(tokenizers, indexed, tmp_path):
    """The RNG streams are keyed by what the dataset holds, not where it lies: a copy in
    another folder gives the same order and masks (a run resumed from another mount
    continues identically); another split of the same files does not share streams."""
    import shutil

    tok = tokenizers["wordpiece"]
    prefix = indexed["wordpiece", "doc"]
    moved = tmp_path / "elsewhere" / os.path.basename(prefix)
    moved.parent.mkdir()
    for ext in (".bin", ".idx"):
        shutil.copyfile(prefix + ext, str(moved) + ext)
    here = MLMDataset.from_prefix(prefix, tok, 64, split="1,0,0")
    there = MLMDataset.from_prefix(str(moved), tok, 64, split="1,0,0")
    assert len(here) == len(there) > 4
    for i in range(len(here)):
        a, b = here[i], there[i]
        assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    train = MLMDataset.from_prefix(prefix, tok, 64, split="50,50,0", split_name="train")
    valid = MLMDataset.from_prefix(prefix, tok, 64, split="50,50,0", split_name="valid")
    assert train._salt != valid._salt != here._salt


def documents_of(ds, low):
    seq_doc = np.repeat(np.arange(len(low.document_indices) - 1), np.diff(low.document_indices))
    docs = set()
    for i in range(len(ds.packed)):
        docs.update(int(seq_doc[s]) for s, _, _ in ds.packed.segments(i) if s != SEPARATOR)
    return docs


def test_splits_by_document(tokenizers, indexed):
    tok = tokenizers["wordpiece"]
    prefix = indexed["wordpiece", "sent"]
    low = IndexedDataset(prefix)
    n_docs = len(low.document_indices) - 1
    # megatron's arithmetic, written out: book-ends at cumulative fractions
    weights = np.array([80, 15, 5]) / 100
    ends = np.round(np.cumsum(np.concatenate([[0], weights])) * n_docs).astype(int)
    ranges = split_documents(n_docs, "80,15,5")
    for k in range(3):
        assert ranges[k].tolist() == list(range(ends[k], ends[k + 1]))
    train, valid, test = build_mlm_datasets(prefix, tok, 64, split="80,15,5",
                                            packing="cross_document")
    sets = [documents_of(d, low) for d in (train, valid, test)]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    non_empty = {d for d in range(n_docs) if low.sequence_lengths[
        low.document_indices[d]:low.document_indices[d + 1]].sum() > 0}
    assert sets[0] | sets[1] | sets[2] == non_empty
    for k in range(3):
        assert sets[k] <= set(range(ends[k], ends[k + 1]))
    # the same split from from_prefix
    direct = MLMDataset.from_prefix(prefix, tok, 64, split_name="valid", split="80,15,5",
                                    packing="cross_document")
    assert documents_of(direct, low) == sets[1]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("mbs", [1, 3])
def test_rank_slices_disjoint_and_covering(world, mbs):
    for n in (0, 1, 7, 50, 101):
        slices = [rank_indices(n, r, world, mbs) for r in range(world)]
        flat = [i for s in slices for i in s]
        assert sorted(flat) == list(range(n)) and len(flat) == len(set(flat))
        dropped = [rank_indices(n, r, world, mbs, drop_last=True) for r in range(world)]
        g = world * mbs
        assert all(len(s) == (n // g) * mbs for s in dropped)
        assert sorted(i for s in dropped for i in s) == list(range((n // g) * g))
        # step k of rank r reads global batch k: indices in [k*g, (k+1)*g)
        for r in range(world):
            for k in range(n // g):
                assert all(k * g <= i < (k + 1) * g for i in dropped[r][k * mbs:(k + 1) * mbs])
    with pytest.raises(ValueError):
        rank_indices(10, 2, 2)


def test_rank_slice_of_dataset(tokenizers, indexed):
    ds = MLMDataset.from_prefix(indexed["unigram", "doc"], tokenizers["unigram"], 64)
    parts = [rank_slice(ds, r, 2) for r in range(2)]
    assert len(parts[0]) + len(parts[1]) == len(ds)
    assert torch.equal(parts[1][0]["input_ids"], ds[1]["input_ids"])
    set_epoch(parts[0], 3)
    assert ds.epoch == 3


def test_collator_pads_unpadded_samples(tokenizers, indexed):
    tok = tokenizers["bpe"]
    ds = MLMDataset.from_prefix(indexed["bpe", "sent"], tok, 64, pad_to_max_length=False,
                                packing="document", shuffle=False)
    samples = [ds[i] for i in range(6)]
    lengths = [len(s["input_ids"]) for s in samples]
    assert len(set(lengths)) > 1
    batch = MLMCollator(tok.pad_token_id, pad_to_multiple_of=8)(samples)
    width = -(-max(lengths) // 8) * 8
    assert batch["input_ids"].shape == (6, width)
    for i, n in enumerate(lengths):
        assert torch.equal(batch["input_ids"][i, :n], samples[i]["input_ids"])
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (batch["labels"][i, n:] == -100).all()
        assert batch["attention_mask"][i].sum() == n


def test_config_errors(tokenizers, indexed):
    tok = tokenizers["wordpiece"]
    with pytest.raises(ValueError, match="packing"):
        MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 64, packing="sentences")
    with pytest.raises(ValueError, match="sequence_length"):
        MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 2)
    with pytest.raises(ValueError, match="no tokens"):
        MLMDataset.from_prefix(indexed["wordpiece", "doc"], tok, 64, split_name="test",
                               split="1,0,0", num_samples=5)


def test_cache_and_initialized_process_group(tokenizers, indexed, tmp_path):
    """Under torch.distributed (gloo, one rank) megatron's builder runs its rank-0-first
    path; with path_to_cache the packed index is written once and read back."""
    import torch.distributed as dist
    tok = tokenizers["wordpiece"]
    dist.init_process_group("gloo", init_method=f"file://{tmp_path}/store", rank=0,
                            world_size=1)
    try:
        cache = tmp_path / "cache"
        first = build_mlm_datasets(indexed["wordpiece", "sent"], tok, 64, split="90,10,0",
                                   path_to_cache=str(cache))
        files = sorted(p.name for p in cache.iterdir())
        assert sum(name.endswith("-packed.npz") for name in files) == 2   # train, valid
        second = build_mlm_datasets(indexed["wordpiece", "sent"], tok, 64, split="90,10,0",
                                    path_to_cache=str(cache))
        assert sorted(p.name for p in cache.iterdir()) == files
        assert first[2] is None or len(first[2]) == 0
        for a, b in zip(first[:2], second[:2]):
            assert len(a) == len(b)
            assert np.array_equal(a.packed.segment_sequence, b.packed.segment_sequence)
            assert torch.equal(a[3]["labels"], b[3]["labels"])
    finally:
        dist.destroy_process_group()
