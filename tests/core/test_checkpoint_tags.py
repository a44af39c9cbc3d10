"""alum.checkpoint_tags: a tag is complete only while every file it recorded is there
with its recorded size; ``latest`` follows the marker."""
import json
import os

from alum.checkpoint_tags import (LATEST, MARKER, complete_tags, incomplete_reason,
                                  mark_complete, step_of_tag, tag_for_step)


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
        assert json.load(f) == {"step": 7, "files": {"mp_rank_00_model_states.pt": 13,
                                                      os.path.join("sub", "rng.pt"): 3}}
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
