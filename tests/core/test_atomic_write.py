"""alum.atomic_write: a file or directory appears whole or not at all, and a failure
leaves the destination as it was, with no temporary left behind."""
import os

import pytest

from alum.atomic_write import atomic_path, atomic_write_text, temporary_name


def _names(directory):
    return sorted(os.listdir(directory))


def test_text_file_is_written_and_replaced(tmp_path):
    path = str(tmp_path / "latest")
    atomic_write_text(path, "global_step1")
    atomic_write_text(path, "global_step2")
    with open(path) as f:
        assert f.read() == "global_step2"
    assert _names(tmp_path) == ["latest"]


def test_failed_file_write_keeps_the_old_content(tmp_path):
    path = str(tmp_path / "state.json")
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError, match="half-way"):
        with atomic_path(path) as tmp:
            with open(tmp, "w") as f:
                f.write("new, but only a part")
            raise RuntimeError("half-way")
    with open(path) as f:
        assert f.read() == "old"
    assert _names(tmp_path) == ["state.json"]


def test_directory_replaces_a_directory(tmp_path):
    dst = str(tmp_path / "model")
    os.makedirs(dst)
    (tmp_path / "model" / "stale.bin").write_text("stale")
    with atomic_path(dst) as tmp:
        os.makedirs(tmp)
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write("{}")
        assert not os.path.exists(os.path.join(dst, "config.json"))   # not visible yet
    assert _names(dst) == ["config.json"]
    assert _names(tmp_path) == ["model"]            # nothing moved aside is left


def test_failed_directory_keeps_the_old_one_and_removes_the_partial(tmp_path):
    dst = str(tmp_path / "model")
    os.makedirs(dst)
    (tmp_path / "model" / "weights.bin").write_text("complete")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(dst) as tmp:
            os.makedirs(tmp)
            (tmp_path / os.path.basename(tmp) / "weights.bin").write_text("par")
            raise KeyboardInterrupt
    assert _names(dst) == ["weights.bin"]
    assert (tmp_path / "model" / "weights.bin").read_text() == "complete"
    assert _names(tmp_path) == ["model"]


def test_debris_of_an_earlier_process_is_cleared(tmp_path):
    path = str(tmp_path / "out.txt")
    debris = temporary_name(path)
    os.makedirs(debris)                     # left by a crash of a process with our pid
    atomic_write_text(path, "x")
    assert _names(tmp_path) == ["out.txt"]
