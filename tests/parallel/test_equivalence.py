"""TP=2 (with and without sequence parallel) and PP=2 (1F1B and interleaved) equal TP=1/PP=1.

Two gloo processes, one launch (tests/parallel/equivalence_worker.py): logits,
the MLM loss over two micro-batches, and every parameter's gradient (gathered
over the TP shards; the pipeline stages' layers mapped to global indices) must
equal the single-rank reference to 1e-5. With ``use_cpu_initialization`` and the
per-block init seeds, every layout starts from the same full weights.
"""
import json

import pytest
import torch.multiprocessing as mp

from alum.parallel.state import free_port

from . import equivalence_worker

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("equivalence") / "results.json"
    mp.spawn(equivalence_worker.run, args=(2, free_port(), str(out)), nprocs=2, join=True)
    return json.loads(out.read_text())


@pytest.mark.parametrize("check", ["tp2", "tp2_sequence_parallel", "tp2_state_and_rng",
                                   "pp2", "pp2_interleaved"])
def test_layout_equals_single_rank(results, check):
    assert results[check] == "ok", results[check]
