"""alum.checkpoint_tags: a tag is complete only while every file it recorded is there
with its recorded size and checksum; ``latest`` follows the marker."""
import json
import logging
import os
import zlib

from alum.checkpoint_tags import (DAMAGED, LATEST, MARKER, all_tags, complete_tags,
                                  file_checksum, incomplete_reason, mark_complete, set_aside,
                                  step_of_tag, tag_for_step)


def _save(save_dir, step, files):
    tag = tag_for_step(step)
    os.makedirs(os.path.join(save_dir, tag, "sub"), exist_ok=True)
    for name, size in files.items():
        with open(os.path.join(save_dir, tag, name), "wb") as f:
            f.write(b"x" * size)
    return tag


def test_marked_tag_is_complete_and_latest_names_it(tmp_path):
    save_dir = str(tmp_path)
    tag = _save(save_dir, 7, {"mp_rank_00_model_states.pt": 13, "sub/rng.pt": 3})
    assert incomplete_reason(save_dir, tag) == f"it has no {MARKER} (the save did not finish)"
    mark_complete(save_dir, tag, 7)
    assert incomplete_reason(save_dir, tag) is None
    with open(os.path.join(save_dir, LATEST)) as f:
        assert f.read() == tag
    with open(os.path.join(save_dir, tag, MARKER)) as f:
        marker = json.load(f)
    rng = os.path.join("sub", "rng.pt")
    assert marker["step"] == 7 and marker["checksum"] == "crc32"
    assert marker["files"] == {"mp_rank_00_model_states.pt": 13, rng: 3}
    # The recorded checksums are the CRC-32 of the bytes that were written.
    assert marker["checksums"] == {"mp_rank_00_model_states.pt": f"{zlib.crc32(b'x' * 13):08x}",
                                   rng: f"{zlib.crc32(b'x' * 3):08x}"}
    assert sorted(os.listdir(save_dir)) == [tag, LATEST]     # no temporary files left


def test_truncated_or_missing_file_makes_a_tag_incomplete(tmp_path):
    save_dir = str(tmp_path)
    tag = _save(save_dir, 2, {"a.pt": 10, "b.pt": 4})
    mark_complete(save_dir, tag, 2)
    with open(os.path.join(save_dir, tag, "a.pt"), "wb") as f:
        f.write(b"x" * 9)
    assert incomplete_reason(save_dir, tag) == "a.pt has 9 bytes, 10 were written"
    os.remove(os.path.join(save_dir, tag, "b.pt"))
    os.remove(os.path.join(save_dir, tag, "a.pt"))
    assert incomplete_reason(save_dir, tag) in ("a.pt is missing", "b.pt is missing")
    assert incomplete_reason(save_dir, "global_step99") == "its directory does not exist"
    with open(os.path.join(save_dir, tag, MARKER), "w") as f:
        f.write("{")
    assert incomplete_reason(save_dir, tag).startswith(f"its {MARKER} is unreadable")


def test_complete_tags_are_sorted_by_step_and_skip_the_rest(tmp_path):
    save_dir = str(tmp_path)
    for step in (10, 2, 30):
        mark_complete(save_dir, _save(save_dir, step, {"m.pt": 1}), step)
    _save(save_dir, 40, {"m.pt": 1})                       # never marked
    os.makedirs(os.path.join(save_dir, "not_a_tag"))
    assert complete_tags(save_dir) == [(2, "global_step2"), (10, "global_step10"),
                                       (30, "global_step30")]
    assert complete_tags(str(tmp_path / "missing")) == []
    assert step_of_tag("global_step12") == 12 and step_of_tag("global_step1x") is None


def test_bytes_changed_in_place_fail_the_checksum(tmp_path):
    # Same size, different content: only the checksum can tell.
    save_dir = str(tmp_path)
    tag = _save(save_dir, 3, {"model.pt": 300_000, "rng.pt": 10})
    mark_complete(save_dir, tag, 3)
    path = os.path.join(save_dir, tag, "model.pt")
    with open(path, "r+b") as f:
        f.seek(100_000)
        f.write(b"\0" * 65536)
    assert os.path.getsize(path) == 300_000
    reason = incomplete_reason(save_dir, tag)
    assert reason.startswith("model.pt does not match its checksum (crc32 ")
    assert file_checksum(path) in reason
    assert incomplete_reason(save_dir, tag, verify=False) is None     # sizes alone pass
    assert complete_tags(save_dir, verify=True) == []
    assert complete_tags(save_dir) == [(3, tag)]


def test_file_checksum_reads_in_chunks_like_one_crc(tmp_path):
    data = os.urandom((8 << 20) + 12345)      # more than one read chunk
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_checksum(str(path)) == f"{zlib.crc32(data):08x}"


def test_a_marker_without_checksums_is_checked_by_size_and_warned_once(tmp_path, caplog):
    save_dir = str(tmp_path)
    tag = _save(save_dir, 5, {"m.pt": 8})
    with open(os.path.join(save_dir, tag, MARKER), "w") as f:    # the older marker format
        json.dump({"step": 5, "files": {"m.pt": 8}}, f)
    with caplog.at_level(logging.WARNING, logger="alum.checkpoint"):
        assert incomplete_reason(save_dir, tag) is None
        assert incomplete_reason(save_dir, tag) is None
    assert caplog.text.count("checked by size only") == 1
    with open(os.path.join(save_dir, tag, "m.pt"), "wb") as f:
        f.write(b"y" * 7)
    assert incomplete_reason(save_dir, tag) == "m.pt has 7 bytes, 8 were written"


def test_set_aside_moves_a_tag_out_of_reach_without_deleting_it(tmp_path):
    save_dir = str(tmp_path)
    for _ in range(2):     # the second one of the same name gets a numbered name
        tag = _save(save_dir, 4, {"m.pt": 2})
        mark_complete(save_dir, tag, 4)
        moved = set_aside(save_dir, tag)
        assert os.path.isfile(os.path.join(moved, "m.pt"))
    assert sorted(os.listdir(os.path.join(save_dir, DAMAGED))) == [tag, tag + ".1"]
    assert all_tags(save_dir) == [] and complete_tags(save_dir) == []
