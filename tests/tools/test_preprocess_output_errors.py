"""alum-preprocess's failures are one line and leave nothing that looks finished: empty
input (unless --allow-empty), a read-only or full output, an unreadable tokenizer,
--strict's stop with no finished piece."""
import errno
import os
import subprocess

import pytest

from alum.data.sample import sample_corpus_path

from .helpers import has_dataset_pair, run_preprocess


def _error(capsys):
    return capsys.readouterr().err.strip().splitlines()


def test_empty_input_is_an_error_unless_allowed(tmp_path, tokenizer_dir, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("\n   \n\n")
    prefix = tmp_path / "out"
    code, _ = run_preprocess("--input", empty, blank, "--tokenizer", tokenizer_dir,
                             "--output-prefix", prefix)
    assert code == 1
    err = _error(capsys)
    assert err[0] == (f"alum-preprocess: error: no documents in {empty} {blank} (every input "
                      f"is empty or was skipped); pass --allow-empty to write an empty dataset")
    assert not has_dataset_pair(prefix) and not os.path.exists(f"{prefix}.summary.json")
    code, summary = run_preprocess("--input", empty, blank, "--tokenizer", tokenizer_dir,
                                   "--output-prefix", prefix, "--allow-empty")
    assert code == 0 and summary["documents"] == 0
    assert has_dataset_pair(prefix) and os.path.getsize(f"{prefix}.bin") == 0
    # megatron-core cannot map an empty .bin: read the index header (its format) instead
    header = open(f"{prefix}.idx", "rb").read(34)
    assert header[:9] == b"MMIDIDX\x00\x00" and int.from_bytes(header[18:26], "little") == 0


def test_strict_stop_without_finished_pieces_leaves_no_work_dir(tmp_path, tokenizer_dir,
                                                                capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": broken\n')
    prefix = tmp_path / "out"
    code, _ = run_preprocess("--input", bad, "--tokenizer", tokenizer_dir,
                             "--output-prefix", prefix, "--strict")
    assert code == 1
    err = _error(capsys)
    assert err[0].startswith(f"alum-preprocess: error: {bad}:1: malformed")
    assert not any("finished pieces" in line for line in err)
    assert not os.path.exists(f"{prefix}.work")


def test_unreadable_tokenizer_is_one_line(tmp_path, capsys):
    tok = tmp_path / "tok"
    tok.mkdir()
    (tok / "tokenizer.json").write_text("{not json")
    code, _ = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer", tok,
                             "--output-prefix", tmp_path / "out")
    assert code == 1
    err = _error(capsys)
    assert len(err) == 1 and err[0].startswith(
        f"alum-preprocess: error: cannot load a tokenizer from {tok}: ")


def _mount(path, options):
    if os.geteuid() != 0:
        return False
    os.makedirs(path, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                          capture_output=True).returncode == 0


def test_read_only_output_is_one_line(tmp_path, tokenizer_dir, capsys):
    mnt = tmp_path / "ro"
    if not _mount(mnt, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    try:
        code, _ = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer",
                                 tokenizer_dir, "--output-prefix", mnt / "out")
        assert code == 1
        assert _error(capsys) == [f"alum-preprocess: error: cannot write output directory "
                                  f"{mnt}: read-only file system"]
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_full_disk_while_merging_is_one_line(tmp_path, tokenizer_dir, capsys, monkeypatch):
    # ENOSPC injected into the merge's writes (in-process, --workers 1); the real
    # condition on a tiny tmpfs is the next test.
    from alum.tools import indexed_output

    def add_part(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(indexed_output.PartMerger, "add_part", add_part)
    prefix = tmp_path / "out"
    code, _ = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer",
                             tokenizer_dir, "--output-prefix", prefix)
    assert code == 1
    err = _error(capsys)
    parts = sum(os.path.getsize(os.path.join(f"{prefix}.work", n))
                for n in os.listdir(f"{prefix}.work") if n.endswith(".bin"))
    assert err[0].startswith(f"alum-preprocess: error: no space left on device: dataset "
                             f"{prefix}.bin needs about {parts / 1e6:,.1f} MB, ")
    assert "finished pieces kept" in err[1]
    assert not has_dataset_pair(prefix)


def test_really_full_disk_is_one_line(tmp_path, tokenizer_dir, capsys):
    mnt = tmp_path / "small"
    if not _mount(mnt, "size=64k"):
        pytest.skip("cannot mount a tmpfs here (needs root and mount rights)")
    try:
        code, _ = run_preprocess("--input", sample_corpus_path("wiki"), "--tokenizer",
                                 tokenizer_dir, "--output-prefix", mnt / "out")
        assert code == 1
        err = _error(capsys)
        assert err[0].startswith("alum-preprocess: error: no space left on device: ")
        assert not has_dataset_pair(mnt / "out")
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
