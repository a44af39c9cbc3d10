"""Packing: never longer than the model, every token exactly once, layouts as documented."""
import numpy as np
import pytest

from alum.data.packing import SEPARATOR, pack_sequences


def random_layout(rng, num_docs, max_sentences=6, max_len=60):
    counts = rng.integers(0, max_sentences + 1, num_docs)       # empty documents included
    document_indices = np.concatenate([[0], np.cumsum(counts)])
    lengths = rng.integers(0, max_len + 1, int(counts.sum()))   # empty sequences included
    return document_indices, lengths


@pytest.mark.parametrize("mode", ["document", "cross_document"])
@pytest.mark.parametrize("capacity", [1, 7, 30, 126])
def test_pack_covers_every_token_once_within_capacity(mode, capacity):
    rng = np.random.default_rng(capacity)
    for trial in range(5):
        doc_idx, lengths = random_layout(rng, 40)
        docs = np.arange(3, 35)  # a sub-range, as a split would give
        packed = pack_sequences(doc_idx, lengths, docs, capacity, mode)
        assert (packed.sample_lengths() <= capacity).all()
        assert (packed.sample_lengths() >= 1).all()
        seq_doc = np.repeat(np.arange(len(doc_idx) - 1), np.diff(doc_idx))
        seen = []
        for i in range(len(packed)):
            segs = packed.segments(i)
            assert segs[0][0] != SEPARATOR and segs[-1][0] != SEPARATOR
            content_docs = [seq_doc[s] for s, _, _ in segs if s != SEPARATOR]
            if mode == "document":
                assert len(set(content_docs)) == 1
                assert all(s != SEPARATOR for s, _, _ in segs)
            else:
                # a separator exactly where the document changes, nowhere else
                for a, b in zip(segs, segs[1:]):
                    if a[0] == SEPARATOR or b[0] == SEPARATOR:
                        continue
                    assert seq_doc[a[0]] == seq_doc[b[0]]
                for k, (s, _, _) in enumerate(segs):
                    if s == SEPARATOR:
                        assert seq_doc[segs[k - 1][0]] != seq_doc[segs[k + 1][0]]
            for s, o, n in segs:
                if s != SEPARATOR:
                    # a sequence is cut only when it alone exceeds the capacity
                    if n < lengths[s]:
                        assert lengths[s] > capacity
                    seen.extend((s, t) for t in range(o, o + n))
        expected = [(s, t) for d in docs for s in range(doc_idx[d], doc_idx[d + 1])
                    for t in range(lengths[s])]
        assert seen == expected  # in order, no token lost or repeated


def test_cross_document_fills_samples():
    doc_idx = np.arange(0, 101)               # 100 documents of one 10-token sequence
    lengths = np.full(100, 10)
    packed = pack_sequences(doc_idx, lengths, np.arange(100), 32, "cross_document")
    # 10 + 1 + 10 + 1 + 10 = 32 tokens: three documents and two separators per sample
    assert packed.sample_lengths()[:-1].tolist() == [32] * 33
    doc_packed = pack_sequences(doc_idx, lengths, np.arange(100), 32, "document")
    assert len(doc_packed) == 100


def test_bad_arguments():
    with pytest.raises(ValueError):
        pack_sequences(np.array([0, 1]), np.array([3]), [0], 0)
    with pytest.raises(ValueError):
        pack_sequences(np.array([0, 1]), np.array([3]), [0], 8, "sentence")
