"""Helpers for the tools tests: expected ids from the tokenizer itself, and
reading indexed datasets back through megatron-core."""
import json
import os
import warnings


def expected_ids(tokenizer, text):
    """What the tokenizer itself gives, through its public __call__."""
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def read_documents(prefix):
    """[[sequence ids, ...] per document] read with megatron-core's IndexedDataset."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset
    ds = IndexedDataset(str(prefix))
    bounds = ds.document_indices
    return [[ds[i].tolist() for i in range(bounds[d], bounds[d + 1])] for d in range(len(bounds) - 1)]


def run_preprocess(*argv):
    """alum-preprocess in-process; returns (exit code, summary dict or None)."""
    from alum.tools.preprocess import main

    argv = list(map(str, argv))
    code = main(argv + ["--no-progress"])
    prefix = argv[argv.index("--output-prefix") + 1]
    summary = None
    if os.path.exists(prefix + ".summary.json"):
        with open(prefix + ".summary.json") as f:
            summary = json.load(f)
    return code, summary


def has_dataset_pair(prefix):
    return os.path.exists(str(prefix) + ".bin") and os.path.exists(str(prefix) + ".idx")
