"""Outputs: same bytes for any --workers, nothing valid-looking after a
failure, resume after an interrupted run, clean overwrite, --merge."""
import os

import pytest

from alum.data.sample import sample_corpus_path
from alum.tools import indexed_output

from .helpers import expected_ids, has_dataset_pair, read_documents, run_preprocess


def _bytes(prefix):
    return open(f"{prefix}.bin", "rb").read(), open(f"{prefix}.idx", "rb").read()


def _inputs():
    return [sample_corpus_path("wiki"), sample_corpus_path("openwebtext")]  # 4 shards


def test_one_and_two_workers_write_identical_bytes(tmp_path, tokenizer_dir):
    for workers in (1, 2):
        code, summary = run_preprocess("--input", *_inputs(), "--tokenizer", tokenizer_dir,
                                       "--output-prefix", tmp_path / f"w{workers}",
                                       "--workers", workers, "--split-sentences")
        assert code == 0 and summary["shards"] == 4
    assert _bytes(tmp_path / "w1") == _bytes(tmp_path / "w2")


def test_failed_run_leaves_no_dataset_and_resumes(tmp_path, tokenizer_dir, tokenizer, sample_texts, capsys):
    bad = tmp_path / "zz_bad.jsonl"  # sorts after the good shards of its directory
    bad.write_bytes(b'{"text": "fine"}\n{"text": broken\n')
    prefix = tmp_path / "out"
    code, _ = run_preprocess("--input", sample_corpus_path("wiki"), bad, "--tokenizer", tokenizer_dir,
                             "--output-prefix", prefix, "--strict")
    assert code == 1
    assert f"{bad}:2: malformed" in capsys.readouterr().err
    assert not has_dataset_pair(prefix) and not os.path.exists(f"{prefix}.idx")
    leftovers = os.listdir(tmp_path)
    assert not [n for n in leftovers if n.startswith("out.") and ".tmp" in n]
    # the two finished wiki shards stay for a resume; the failed one left no pair
    work = sorted(os.listdir(f"{prefix}.work"))
    assert work == sorted(f"part-0000{i}{ext}" for i in (0, 1) for ext in (".bin", ".part.npz", ".done.json"))
    # rerun without --strict: finished shards are reused, the result equals a fresh run
    code, summary = run_preprocess("--input", sample_corpus_path("wiki"), bad, "--tokenizer",
                                   tokenizer_dir, "--output-prefix", prefix, "--strict")
    assert code == 1
    bad.write_bytes(b'{"text": "fine"}\n')
    code, summary = run_preprocess("--input", sample_corpus_path("wiki"), bad, "--tokenizer",
                                   tokenizer_dir, "--output-prefix", prefix, "--strict")
    assert code == 0 and summary["resumed_pieces"] == 2
    assert read_documents(prefix) == [[expected_ids(tokenizer, t)] for t in sample_texts + ["fine"]]
    assert not os.path.exists(f"{prefix}.work")
    code, fresh = run_preprocess("--input", sample_corpus_path("wiki"), bad, "--tokenizer",
                                 tokenizer_dir, "--output-prefix", tmp_path / "fresh", "--no-resume")
    assert fresh["resumed_pieces"] == 0 and _bytes(prefix) == _bytes(tmp_path / "fresh")


def test_changed_input_is_not_resumed(tmp_path, tokenizer_dir, tokenizer):
    doc = tmp_path / "a.jsonl"
    doc.write_text('{"text": "first version"}\n')
    prefix = tmp_path / "out"
    run_preprocess("--input", doc, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    os.makedirs(f"{prefix}.work")  # pretend an old run left state behind
    doc.write_text('{"text": "second version, longer"}\n')
    code, summary = run_preprocess("--input", doc, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    assert summary["resumed_pieces"] == 0
    assert read_documents(prefix) == [[expected_ids(tokenizer, "second version, longer")]]


def test_failure_while_merging_leaves_nothing(tmp_path, tokenizer_dir, monkeypatch):
    calls = []
    original = indexed_output.PartMerger.add_part

    def failing(self, prefix):
        calls.append(prefix)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if interrupted halfway through the merge
        original(self, prefix)

    monkeypatch.setattr(indexed_output.PartMerger, "add_part", failing)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir,
                       "--output-prefix", tmp_path / "out")
    names = os.listdir(tmp_path)
    assert not has_dataset_pair(tmp_path / "out")
    assert not [n for n in names if ".tmp" in n], names


def test_death_between_renames_never_pairs_old_index_with_new_data(tmp_path, tokenizer_dir, monkeypatch):
    prefix = tmp_path / "out"
    first = tmp_path / "a.jsonl"
    first.write_text('{"text": "an older dataset"}\n')
    assert run_preprocess("--input", first, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)[0] == 0
    assert has_dataset_pair(prefix)
    real_replace = os.replace

    def dies_before_index(src, dst):
        if str(dst).endswith(".idx") and str(dst) == f"{prefix}.idx":
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(indexed_output.os, "replace", dies_before_index)
    with pytest.raises(KeyboardInterrupt):
        run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir,
                       "--output-prefix", prefix)
    assert not has_dataset_pair(prefix)  # the old .idx went first; no stale pair


def test_rerun_overwrites(tmp_path, tokenizer_dir, tokenizer, sample_texts):
    prefix = tmp_path / "out"
    run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    small = tmp_path / "s.jsonl"
    small.write_text('{"text": "just one"}\n')
    run_preprocess("--input", small, "--tokenizer", tokenizer_dir, "--output-prefix", prefix)
    assert read_documents(prefix) == [[expected_ids(tokenizer, "just one")]]


def test_no_merge_then_merge_equals_direct_output(tmp_path, tokenizer_dir):
    code, summary = run_preprocess("--input", *_inputs(), "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "direct")
    code, summary = run_preprocess("--input", *_inputs(), "--tokenizer", tokenizer_dir,
                                   "--output-prefix", tmp_path / "part", "--no-merge")
    parts = [tmp_path / f"part_{i:05d}" for i in range(4)]
    assert all(has_dataset_pair(p) for p in parts) and not has_dataset_pair(tmp_path / "part")
    from alum.tools.preprocess import main

    assert main(["--merge", "--input", *map(str, parts), "--output-prefix", str(tmp_path / "merged")]) == 0
    assert _bytes(tmp_path / "merged") == _bytes(tmp_path / "direct")
